"""Filling the embedded certificate store through its Barbican API, for the tests."""

from __future__ import annotations

import base64
from typing import Any

from tests.conftest import Client
from tests.tlscerts import Issued, issue, make_ca, make_crl

V1 = "/key-manager/v1"


def store_secret(client: Client, payload: str | bytes, name: str = "s", **extra: Any) -> str:
    body: dict[str, Any] = {"name": name, **extra}
    if isinstance(payload, bytes):
        body |= {
            "payload": base64.b64encode(payload).decode(),
            "payload_content_type": "application/octet-stream",
            "payload_content_encoding": "base64",
        }
    else:
        body |= {"payload": payload, "payload_content_type": "text/plain"}
    resp = client.post(f"{V1}/secrets/", body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["secret_ref"])


def store_container(client: Client, parts: dict[str, str], name: str = "c") -> str:
    body = {
        "name": name,
        "type": "certificate",
        "secret_refs": [{"name": k, "secret_ref": v} for k, v in parts.items()],
    }
    resp = client.post(f"{V1}/containers/", body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["container_ref"])


def store_server_cert(
    client: Client,
    issued: Issued,
    chain: list[Issued] = (),
    passphrase: bytes | None = None,  # type: ignore[assignment]
) -> str:
    """A certificate container holding `issued` (its key, its chain), as the CLI makes one."""
    parts = {
        "certificate": store_secret(client, issued.cert_pem, "cert"),
        "private_key": store_secret(client, issued.key_pem(passphrase), "key"),
    }
    if chain:
        parts["intermediates"] = store_secret(client, "".join(c.cert_pem for c in chain), "chain")
    if passphrase:
        parts["private_key_passphrase"] = store_secret(client, passphrase.decode(), "pass")
    return store_container(client, parts)


def tls_refs(client: Client) -> dict[str, str]:
    """A default and two SNI certificate containers, a client CA and its CRL, stored."""
    ca = make_ca()
    return {
        "default": store_server_cert(client, issue(ca, "default.example", ("default.example",))),
        "sni1": store_server_cert(client, issue(ca, "one.example", ("one.example",))),
        "sni2": store_server_cert(client, issue(ca, "two.example", ("two.example",))),
        "ca": store_secret(client, ca.cert_pem, "ca"),
        "crl": store_secret(client, make_crl(ca), "crl"),
    }
