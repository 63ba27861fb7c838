"""/metrics names every project's load balancers: only an admin or the scrape credential."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from openha.api.app import create_app
from openha.settings import Settings
from tests.api.factories import create_lb
from tests.conftest import Client

SCRAPE = "scrape-credential-for-tests"


@pytest.fixture
def scraped(settings: Settings, session_factory: sessionmaker[Session]) -> Any:
    """An API whose /metrics also accepts the scrape credential."""
    app = create_app(settings.model_copy(update={"metrics_token": SCRAPE}), session_factory)
    with TestClient(app) as client:
        yield client


def test_metrics_need_an_admin(
    http: TestClient,
    admin: Client,
    alice: Client,
    alice_reader: Client,
    subnet_id: str,
) -> None:
    create_lb(alice, subnet_id)
    assert http.get("/metrics").status_code == 401
    assert http.get("/metrics", headers={"X-Auth-Token": "nope"}).status_code == 401
    assert alice.get("/metrics").status_code == 403
    assert alice_reader.get("/metrics").status_code == 403
    resp = admin.get("/metrics")
    assert resp.status_code == 200
    assert "openha_load_balancers" in resp.text
    # Without a scrape credential configured, no bearer is one.
    assert http.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    assert http.get("/metrics", headers={"Authorization": "Bearer x"}).status_code == 401


def test_metrics_accept_the_scrape_credential(scraped: TestClient, tokens: dict[str, str]) -> None:
    ok = scraped.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE}"})
    assert ok.status_code == 200
    assert "openha_hosts" in ok.text
    for header in (f"Bearer {SCRAPE}x", f"Basic {SCRAPE}", f"Bearer {tokens['a']}"):
        assert scraped.get("/metrics", headers={"Authorization": header}).status_code == 401
    assert scraped.get("/metrics").status_code == 401
    # The scrape credential opens /metrics only.
    other = scraped.get("/v2/lbaas/loadbalancers", headers={"Authorization": f"Bearer {SCRAPE}"})
    assert other.status_code == 401
    # An admin token still works where the credential is set.
    assert scraped.get("/metrics", headers={"X-Auth-Token": tokens["admin"]}).status_code == 200
