"""Keystone mode with Keystone out of reach: keystonemiddleware's own answers, as
Octavia's API gives them (503 "The Keystone service is temporarily unavailable."
for a token it cannot check, 401 for no token at all), and nothing changes.

Real keystonemiddleware against a loopback port where nothing listens (connection
refused); `tests/e2e/test_keystone.py` stops a real Keystone."""

from __future__ import annotations

import socket
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from openha.api.app import bind
from openha.models import LoadBalancer
from openha.settings import Settings

LBS = "/v2/lbaas/loadbalancers"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_keystone_is_503_and_no_token_401(
    app: Any, settings: Settings, session_factory: sessionmaker[Session], http: TestClient
) -> None:
    auth_url = f"http://127.0.0.1:{_closed_port()}/v3"
    keystone = settings.model_copy(
        update={
            "auth": "keystone",
            "keystone_auth_url": auth_url,
            "keystone_password": "service-secret",
        }
    )
    bind(app, keystone, session_factory)
    token = {"X-Auth-Token": "gAAAAABsome-fernet-token", "Accept": "application/json"}
    for method, body in (("GET", None), ("POST", {"loadbalancer": {"vip_subnet_id": "x"}})):
        resp = http.request(method, LBS, json=body, headers=token)
        assert resp.status_code == 503, resp.text
        assert "The Keystone service is temporarily unavailable." in resp.text
        assert resp.headers["content-type"].startswith("application/json")
    missing = http.get(LBS, headers={"Accept": "application/json"})
    assert missing.status_code == 401, missing.text
    assert missing.json()["error"]["code"] == 401
    assert missing.headers["WWW-Authenticate"] == f'Keystone uri="{auth_url}"'
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(LoadBalancer)) == 0
