"""python-barbicanclient, unchanged, against the embedded certificate store over real HTTP.

The client is pointed at `<api>/key-manager` (as `key_manager_endpoint_override`
would), with a token sent as X-Auth-Token by keystoneauth's token_endpoint plugin.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from barbicanclient import client as barbican
from barbicanclient import exceptions as barbican_errors
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from sqlalchemy.orm import Session, sessionmaker

from openha.api.app import create_app
from openha.settings import Settings
from tests.conftest import wait_for
from tests.tlscerts import issue, make_ca


@pytest.fixture
def api_url(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, session_factory), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 15)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _client(api_url: str, token: str) -> Any:
    auth = token_endpoint.Token(api_url, token)
    return barbican.Client(session=ks_session.Session(auth=auth), endpoint=f"{api_url}/key-manager")


def test_secret_and_container_lifecycle(api_url: str, tokens: dict[str, str]) -> None:
    kms = _client(api_url, tokens["a"])
    ca = make_ca()
    leaf = issue(ca, "www.example.com", ("www.example.com",))
    cert = kms.secrets.create(name="cert", payload=leaf.cert_pem)
    cert_ref = cert.store()
    key_ref = kms.secrets.create(name="key", payload=leaf.key_pem()).store()
    p12 = leaf.pkcs12()
    binary_ref = kms.secrets.create(name="p12", payload=p12).store()
    assert cert_ref.startswith(f"{api_url}/key-manager/v1/secrets/")

    fetched = kms.secrets.get(cert_ref)
    assert fetched.name == "cert"
    assert fetched.payload == leaf.cert_pem
    assert kms.secrets.get(binary_ref).payload == p12
    assert {s.name for s in kms.secrets.list()} == {"cert", "key", "p12"}

    container = kms.containers.create_certificate(
        name="web",
        certificate=kms.secrets.get(cert_ref),
        private_key=kms.secrets.get(key_ref),
    )
    container_ref = container.store()
    got = kms.containers.get(container_ref)
    assert got.name == "web"
    assert got.certificate.payload == leaf.cert_pem
    assert [c.name for c in kms.containers.list()] == ["web"]

    # Another project sees none of it.
    other = _client(api_url, tokens["b"])
    assert other.secrets.list() == []
    with pytest.raises(barbican_errors.HTTPClientError):
        _ = other.secrets.get(cert_ref).payload

    kms.containers.delete(container_ref)
    kms.secrets.delete(cert_ref)
    assert {s.name for s in kms.secrets.list()} == {"key", "p12"}
