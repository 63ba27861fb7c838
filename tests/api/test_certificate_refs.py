"""Listener and pool certificate references: what the caller cannot read, or what could not
serve, is a 400 at the API, and the message never carries the material."""

from __future__ import annotations

from typing import Any

from tests.api.certstore_helpers import (
    store_container,
    store_secret,
    store_server_cert,
    tls_refs,
)
from tests.api.factories import create_lb, create_listener, create_pool
from tests.conftest import Client
from tests.tlscerts import issue, make_ca, make_crl

HTTPS = {"protocol": "TERMINATED_HTTPS", "protocol_port": 443}


def _listener(client: Client, lb_id: str, **fields: Any) -> Any:
    body = {"loadbalancer_id": lb_id, **HTTPS, **fields}
    return client.post("/v2/lbaas/listeners", {"listener": body})


def test_readable_references_are_accepted(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    refs = tls_refs(alice)
    li = create_listener(alice, lb["id"], **HTTPS, default_tls_container_ref=refs["default"])
    assert li["default_tls_container_ref"] == refs["default"]
    # A bare UUID names the same container (Octavia reads only the last component).
    bare = refs["sni1"].rsplit("/", 1)[-1]
    resp = alice.put(
        f"/v2/lbaas/listeners/{li['id']}", {"listener": {"sni_container_refs": [bare]}}
    )
    assert resp.status_code == 200, resp.text


def test_unreadable_references_are_refused(alice: Client, bob: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    bobs = tls_refs(bob)
    for ref in (
        bobs["default"],  # another project's
        "https://kms.example/v1/containers/00000000-0000-0000-0000-000000000000",
        "not-a-reference",
        bobs["default"].replace("/containers/", "/orders/"),
    ):
        resp = _listener(alice, lb["id"], default_tls_container_ref=ref)
        assert resp.status_code == 400, resp.text
        assert "Could not retrieve certificate" in resp.json()["faultstring"]
    mine = tls_refs(alice)
    resp = _listener(
        alice,
        lb["id"],
        default_tls_container_ref=mine["default"],
        client_ca_tls_container_ref=bobs["ca"],
        client_authentication="MANDATORY",
    )
    assert resp.status_code == 400
    assert alice.get("/v2/lbaas/listeners").json()["listeners"] == []


def test_material_that_cannot_serve_is_refused(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    ca = make_ca()
    leaf = issue(ca, "a.example", ("a.example",))
    other = issue(ca, "b.example", ("b.example",))
    mismatched = store_container(
        alice,
        {
            "certificate": store_secret(alice, leaf.cert_pem),
            "private_key": store_secret(alice, other.key_pem()),
        },
    )
    ca_as_server = store_server_cert(alice, ca)
    garbage = store_container(
        alice,
        {
            "certificate": store_secret(alice, "-----BEGIN CERTIFICATE-----\nnope\n"),
            "private_key": store_secret(alice, leaf.key_pem()),
        },
    )
    wrong_pass = store_container(
        alice,
        {
            "certificate": store_secret(alice, leaf.cert_pem),
            "private_key": store_secret(alice, leaf.key_pem(b"right")),
            "private_key_passphrase": store_secret(alice, "wrong"),
        },
    )
    for ref, why in (
        (mismatched, "does not match"),
        (ca_as_server, "CA certificate"),
        (garbage, "not a PEM or DER"),
        (wrong_pass, "cannot be read"),
    ):
        resp = _listener(alice, lb["id"], default_tls_container_ref=ref)
        assert resp.status_code == 400, resp.text
        text = resp.json()["faultstring"]
        assert why in text, text
        assert "PRIVATE KEY" not in text and "BEGIN" not in text


def test_encrypted_keys_and_pkcs12(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    ca = make_ca()
    leaf = issue(ca, "a.example", ("a.example",), kind="rsa")
    with_pass = store_server_cert(alice, leaf, chain=[ca], passphrase=b"s3cret'\n")
    assert _listener(alice, lb["id"], default_tls_container_ref=with_pass).status_code == 201
    p12 = store_secret(alice, leaf.pkcs12(), "p12")
    resp = _listener(alice, lb["id"], default_tls_container_ref=p12, protocol_port=8443)
    assert resp.status_code == 201, resp.text


def test_pool_references(alice: Client, bob: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    refs = tls_refs(alice)
    pool = create_pool(
        alice,
        lb["id"],
        tls_enabled=True,
        tls_container_ref=refs["sni1"],
        ca_tls_container_ref=refs["ca"],
        crl_container_ref=refs["crl"],
    )
    assert pool["ca_tls_container_ref"] == refs["ca"]
    url = f"/v2/lbaas/pools/{pool['id']}"
    for field in ("tls_container_ref", "ca_tls_container_ref", "crl_container_ref"):
        resp = alice.put(url, {"pool": {field: tls_refs(bob)["ca"]}})
        assert resp.status_code == 400, (field, resp.text)
    # A CRL reference that holds a certificate is no CRL.
    resp = alice.put(url, {"pool": {"crl_container_ref": refs["ca"]}})
    assert resp.status_code == 400
    assert "not a PEM or DER X.509 CRL" in resp.json()["faultstring"]


def test_a_crl_must_come_from_the_client_ca(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    refs = tls_refs(alice)
    other_crl = store_secret(alice, make_crl(make_ca("someone else")), "crl")
    resp = _listener(
        alice,
        lb["id"],
        default_tls_container_ref=refs["default"],
        client_authentication="MANDATORY",
        client_ca_tls_container_ref=refs["ca"],
        client_crl_container_ref=other_crl,
    )
    assert resp.status_code == 400
    assert "CRL specified is not valid" in resp.json()["faultstring"]


def test_hostile_tls_options_are_refused(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    refs = tls_refs(alice)
    for fields in (
        {"tls_ciphers": "AES128-SHA crt /etc/shadow"},
        {"tls_ciphers": "AES'\nbind :1"},
        {"tls_versions": ["TLSv1.2\n"]},
        {"alpn_protocols": ["h2 crt /x"]},
        {"client_authentication": "REQUIRED"},
    ):
        resp = _listener(alice, lb["id"], default_tls_container_ref=refs["default"], **fields)
        assert resp.status_code == 400, (fields, resp.text)
