"""Health monitor resource: fields and per-type defaults, ranges and grammars, type rules per
pool protocol, one per pool, updates, status machine and delete."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from openha.controller import snapshot
from openha.controller.reconciler import Reconciler
from openha.db import transaction
from openha.models import Quota
from openha.settings import Settings
from tests.api.factories import POLICY_REFUSED, create_hm, create_lb, create_pool, wait_lb_active
from tests.conftest import PROJECT_A, Client, wait_for

HM_FIELDS = {
    "id",
    "name",
    "type",
    "delay",
    "timeout",
    "max_retries",
    "max_retries_down",
    "http_method",
    "url_path",
    "expected_codes",
    "admin_state_up",
    "project_id",
    "tenant_id",
    "pools",
    "provisioning_status",
    "operating_status",
    "created_at",
    "updated_at",
    "tags",
    "http_version",
    "domain_name",
}


def _post(client: Client, body: dict[str, Any]) -> Any:
    return client.post("/v2/lbaas/healthmonitors", {"healthmonitor": body})


def _pool(client: Client, subnet_id: str, **extra: Any) -> dict[str, Any]:
    lb = create_lb(client, subnet_id)
    return create_pool(client, lb["id"], **extra)


def test_http_defaults(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    hm = create_hm(alice, pool["id"], name="check", tags=["t"])
    assert set(hm) == HM_FIELDS
    assert hm["provisioning_status"] == "PENDING_CREATE"
    assert hm["project_id"] == PROJECT_A
    assert hm["pools"] == [{"id": pool["id"]}]
    assert (hm["http_method"], hm["url_path"], hm["expected_codes"]) == ("GET", "/", "200")
    assert (hm["delay"], hm["timeout"], hm["max_retries"], hm["max_retries_down"]) == (5, 3, 3, 3)
    assert hm["http_version"] is None and hm["domain_name"] is None
    assert (hm["name"], hm["tags"]) == ("check", ["t"])
    assert (
        alice.get(f"/v2/lbaas/pools/{pool['id']}").json()["pool"]["healthmonitor_id"] == (hm["id"])
    )


def test_full_http_monitor(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    hm = create_hm(
        alice,
        pool["id"],
        type="HTTPS",
        http_method="HEAD",
        url_path="/healthz?full=1",
        expected_codes="200-204",
        http_version=1.1,
        domain_name="app.example.com",
        max_retries_down=10,
    )
    assert (hm["type"], hm["http_method"], hm["url_path"]) == ("HTTPS", "HEAD", "/healthz?full=1")
    assert (hm["expected_codes"], hm["http_version"], hm["domain_name"]) == (
        "200-204",
        1.1,
        "app.example.com",
    )
    assert hm["max_retries_down"] == 10


@pytest.mark.parametrize("hm_type", ["TCP", "PING", "TLS-HELLO"])
def test_non_http_types_have_no_http_options(alice: Client, subnet_id: str, hm_type: str) -> None:
    pool = _pool(alice, subnet_id, protocol="TCP")
    hm = create_hm(alice, pool["id"], type=hm_type)
    assert (hm["http_method"], hm["url_path"], hm["expected_codes"]) == (None, None, None)
    for field, value in (
        ("http_method", "GET"),
        ("url_path", "/"),
        ("expected_codes", "200"),
        ("http_version", 1.1),
        ("domain_name", "a.example"),
    ):
        resp = alice.put(f"/v2/lbaas/healthmonitors/{hm['id']}", {"healthmonitor": {field: value}})
        assert resp.status_code == 400, field
        assert resp.json()["faultstring"] == (
            f"{field} is not a valid option for health monitors of type {hm_type}"
        )


CREATE_CASES: list[tuple[dict[str, Any], str]] = [
    ({"type": "DNS"}, "type"),
    ({"delay": -1}, "delay"),
    ({"delay": 86401}, "delay"),
    ({"timeout": -1}, "timeout"),
    ({"max_retries": 0}, "max_retries"),
    ({"max_retries": 11}, "max_retries"),
    ({"max_retries_down": 0}, "max_retries_down"),
    ({"max_retries_down": 11}, "max_retries_down"),
    ({"http_method": "FETCH"}, "http_method"),
    ({"url_path": "health"}, "url_path"),
    ({"url_path": "/a b"}, "url_path"),
    ({"url_path": "/a\r\nHost: evil"}, "url_path"),
    ({"expected_codes": "2xx"}, "expected_codes"),
    ({"expected_codes": "200;201"}, "expected_codes"),
    ({"http_version": 2.0}, "http_version"),
    ({"domain_name": "bad domain"}, "domain_name"),
    ({"domain_name": "a.example"}, "'http_version' must be specified"),
    ({"domain_name": "a.example", "http_version": 1.0}, "HTTP 1.1 domain name"),
    ({"type": "TCP", "url_path": "/"}, "url_path is not a valid option"),
    ({"type": "PING", "expected_codes": "200"}, "expected_codes is not a valid option"),
    ({"type": "TCP", "domain_name": "a.example"}, "domain_name is not a valid option"),
    ({"type": "UDP-CONNECT"}, "only supported for pools of type UDP/SCTP"),
    ({"type": "SCTP"}, "only supported for pools of type UDP/SCTP"),
    ({"unknown": 1}, "unknown"),
]


def test_create_validation(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    base = {"pool_id": pool["id"], "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3}
    for extra, needle in CREATE_CASES:
        resp = _post(alice, {**base, **extra})
        assert resp.status_code == 400, (extra, resp.text)
        assert needle in resp.json()["faultstring"], (extra, resp.text)
    assert alice.get("/v2/lbaas/healthmonitors").json()["healthmonitors"] == []


def test_mandatory_fields(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    for missing in ("type", "delay", "timeout", "max_retries"):
        body = {"pool_id": pool["id"], "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}
        del body[missing]
        resp = _post(alice, body)
        assert resp.status_code == 400
        assert f"Mandatory field missing: {missing}." in resp.json()["faultstring"]
    resp = _post(alice, {"type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3})
    assert resp.status_code == 400
    assert "pool_id" in resp.json()["faultstring"]
    resp = _post(
        alice, {"pool_id": "nope", "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}
    )
    assert resp.status_code == 404
    assert resp.json()["faultstring"] == "Pool nope not found."


def test_udp_pool_rules(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id, protocol="UDP")
    base = {"pool_id": pool["id"], "delay": 5, "timeout": 3, "max_retries": 3}
    resp = _post(alice, {**base, "type": "HTTPS"})
    assert resp.status_code == 400
    assert (
        "only a UDP-CONNECT/SCTP/TCP/HTTP health monitor is supported"
        in (resp.json()["faultstring"])
    )
    resp = _post(alice, {**base, "type": "UDP-CONNECT", "delay": 2})
    assert resp.status_code == 400
    assert "should be larger than 3" in resp.json()["faultstring"]
    hm = create_hm(alice, pool["id"], type="UDP-CONNECT")
    resp = alice.put(f"/v2/lbaas/healthmonitors/{hm['id']}", {"healthmonitor": {"delay": 1}})
    assert resp.status_code == 400


def test_haproxy_provider_refuses_udp_connect(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id, provider="haproxy")
    pool = create_pool(alice, lb["id"], protocol="TCP")
    resp = _post(
        alice,
        {"pool_id": pool["id"], "type": "SCTP", "delay": 5, "timeout": 3, "max_retries": 3},
    )
    assert resp.status_code == 400
    assert "does not support" in resp.json()["faultstring"]


def test_one_per_pool(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    create_hm(alice, pool["id"])
    resp = _post(
        alice, {"pool_id": pool["id"], "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}
    )
    assert resp.status_code == 409
    assert resp.json()["faultstring"] == "This pool already has a health monitor"


def test_update_and_null_resets(alice: Client, subnet_id: str, controller: Any) -> None:
    pool = _pool(alice, subnet_id)
    lb_id = pool["loadbalancers"][0]["id"]
    hm = create_hm(alice, pool["id"])
    wait_lb_active(alice, lb_id)
    url = f"/v2/lbaas/healthmonitors/{hm['id']}"
    changes = {
        "name": "n",
        "delay": 10,
        "timeout": 9,
        "max_retries": 5,
        "max_retries_down": 7,
        "http_method": "POST",
        "url_path": "/status",
        "expected_codes": "200,202",
        "admin_state_up": False,
        "tags": ["x"],
        "http_version": 1.1,
        "domain_name": "h.example",
    }
    body = alice.put(url, {"healthmonitor": changes}).json()["healthmonitor"]
    for key, value in changes.items():
        assert body[key] == value, key
    assert body["provisioning_status"] == "PENDING_UPDATE"
    wait_for(lambda: alice.get(url).json()["healthmonitor"]["provisioning_status"] == "ACTIVE")
    resets = {
        "name": None,
        "max_retries_down": None,
        "http_method": None,
        "url_path": None,
        "expected_codes": None,
        "domain_name": None,
    }
    body = alice.put(url, {"healthmonitor": resets}).json()["healthmonitor"]
    assert (body["name"], body["max_retries_down"]) == ("", 3)
    assert (body["http_method"], body["url_path"], body["expected_codes"]) == ("GET", "/", "200")
    assert body["domain_name"] is None
    for field in ("delay", "timeout", "max_retries"):
        resp = alice.put(url, {"healthmonitor": {field: None}})
        assert resp.status_code == 400
        assert resp.json()["faultstring"] == f"None is not a valid option for {field}"
    assert alice.put(url, {"healthmonitor": {"type": "TCP"}}).status_code == 400
    assert alice.put(url, {"healthmonitor": {"pool_id": pool["id"]}}).status_code == 400
    resp = alice.put(url, {"healthmonitor": {"http_version": 1.0, "domain_name": "h.example"}})
    assert resp.status_code == 400


def test_goes_active_and_delete(alice: Client, subnet_id: str, controller: Any) -> None:
    pool = _pool(alice, subnet_id)
    hm = create_hm(alice, pool["id"])
    url = f"/v2/lbaas/healthmonitors/{hm['id']}"
    wait_for(lambda: alice.get(url).json()["healthmonitor"]["provisioning_status"] == "ACTIVE")
    wait_for(lambda: alice.get(url).json()["healthmonitor"]["operating_status"] == "ONLINE")
    assert alice.delete(url).status_code == 204
    wait_for(lambda: alice.get(url).status_code == 404)
    assert "healthmonitor_id" not in alice.get(f"/v2/lbaas/pools/{pool['id']}").json()["pool"]
    # The pool can take a new one.
    create_hm(alice, pool["id"], type="TCP")


def test_delete_marks_pending_delete(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    hm = create_hm(alice, pool["id"])
    url = f"/v2/lbaas/healthmonitors/{hm['id']}"
    assert alice.delete(url).status_code == 204
    assert alice.get(url).json()["healthmonitor"]["provisioning_status"] == "PENDING_DELETE"
    assert alice.put(url, {"healthmonitor": {"delay": 9}}).status_code == 409
    assert alice.delete(url).status_code == 204


def test_a_new_monitor_while_the_old_one_is_deleted(
    alice: Client, subnet_id: str, settings: Settings, session_factory: sessionmaker[Session],
    app: Any,
) -> None:  # fmt: skip
    """The pool takes a new monitor while its old one is still being deleted: the old one
    gives way (a merge, as for a re-added member, not a 409; issue 13), and the
    controller's pass settles the pool with the new one only."""
    pool = _pool(alice, subnet_id)
    lb_id = pool["loadbalancers"][0]["id"]
    old = create_hm(alice, pool["id"])
    assert alice.delete(f"/v2/lbaas/healthmonitors/{old['id']}").status_code == 204
    shown = alice.get(f"/v2/lbaas/healthmonitors/{old['id']}").json()["healthmonitor"]
    assert shown["provisioning_status"] == "PENDING_DELETE"
    new = create_hm(alice, pool["id"], type="TCP")
    assert alice.get(f"/v2/lbaas/healthmonitors/{old['id']}").status_code == 404
    assert (
        alice.get(f"/v2/lbaas/pools/{pool['id']}").json()["pool"]["healthmonitor_id"] == new["id"]
    )
    again = {"pool_id": pool["id"], "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}
    assert _post(alice, again).status_code == 409  # a live monitor is still one
    with session_factory() as s:
        (built,) = snapshot.build(s, lb_id, None).pools
    assert built.health_monitor is not None and built.health_monitor.id == new["id"]
    reconciler = Reconciler(settings, session_factory, app.state.providers)
    reconciler.liveness.beat()
    reconciler.tick()
    shown = alice.get(f"/v2/lbaas/healthmonitors/{new['id']}").json()["healthmonitor"]
    assert shown["provisioning_status"] == "ACTIVE"


def test_isolation(alice: Client, bob: Client, alice_reader: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    hm = create_hm(alice, pool["id"])
    url = f"/v2/lbaas/healthmonitors/{hm['id']}"
    assert bob.get(url).status_code == 403
    assert bob.get(url).json()["faultstring"] == POLICY_REFUSED
    assert bob.put(url, {"healthmonitor": {"delay": 9}}).status_code == 403
    assert bob.delete(url).status_code == 403
    assert bob.get("/v2/lbaas/healthmonitors").json()["healthmonitors"] == []
    resp = _post(
        bob, {"pool_id": pool["id"], "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}
    )
    assert resp.status_code == 403
    assert alice_reader.get(url).status_code == 200
    assert alice_reader.delete(url).status_code == 403


def test_quota(alice: Client, subnet_id: str, session_factory: sessionmaker[Session]) -> None:
    with transaction(session_factory) as s:
        s.add(Quota(project_id=PROJECT_A, health_monitor=1))
    lb = create_lb(alice, subnet_id)
    p1 = create_pool(alice, lb["id"])
    p2 = create_pool(alice, lb["id"])
    create_hm(alice, p1["id"])
    resp = _post(
        alice, {"pool_id": p2["id"], "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}
    )
    assert resp.status_code == 403
    assert resp.json()["faultstring"] == "Quota has been met for resources: Health Monitor"


def test_filters(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    p1 = create_pool(alice, lb["id"])
    p2 = create_pool(alice, lb["id"], protocol="TCP")
    create_hm(alice, p1["id"])
    tcp = create_hm(alice, p2["id"], type="TCP")
    found = alice.get(f"/v2/lbaas/healthmonitors?pool_id={p2['id']}").json()["healthmonitors"]
    assert [h["id"] for h in found] == [tcp["id"]]
    assert len(alice.get("/v2/lbaas/healthmonitors?type=HTTP").json()["healthmonitors"]) == 1
    by_lb = alice.get(f"/v2/lbaas/healthmonitors?loadbalancer_id={lb['id']}").json()
    assert len(by_lb["healthmonitors"]) == 2
