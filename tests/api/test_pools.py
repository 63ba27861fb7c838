"""Pool resource: fields and defaults, parents, protocol rules, session persistence, TLS,
status machine, cascade on delete and the L7 redirect guard."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from openha.db import transaction
from openha.models import HealthMonitor, L7Policy, L7Rule, Member, Quota
from tests.api.certstore_helpers import tls_refs
from tests.api.factories import (
    POLICY_REFUSED,
    create_hm,
    create_lb,
    create_listener,
    create_member,
    create_pool,
    wait_lb_active,
)
from tests.conftest import PROJECT_A, Client, wait_for

POOL_FIELDS = {
    "id",
    "name",
    "description",
    "provisioning_status",
    "operating_status",
    "admin_state_up",
    "protocol",
    "lb_algorithm",
    "session_persistence",
    "project_id",
    "tenant_id",
    "loadbalancers",
    "listeners",
    "created_at",
    "updated_at",
    "members",
    "tags",
    "tls_container_ref",
    "ca_tls_container_ref",
    "crl_container_ref",
    "tls_enabled",
    "tls_ciphers",
    "tls_versions",
    "alpn_protocols",
}


def _post(client: Client, body: dict[str, Any]) -> Any:
    return client.post("/v2/lbaas/pools", {"pool": body})


def _get(client: Client, pool_id: str) -> dict[str, Any]:
    resp = client.get(f"/v2/lbaas/pools/{pool_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()["pool"]


def _add_l7(
    session_factory: sessionmaker[Session],
    lb_id: str,
    listener_id: str,
    pool_id: str,
    with_rule: bool = True,
) -> str:
    """An L7 policy redirecting to a pool (written directly: the L7 API is another module)."""
    with transaction(session_factory) as s:
        policy = L7Policy(
            listener_id=listener_id,
            load_balancer_id=lb_id,
            project_id=PROJECT_A,
            action="REDIRECT_TO_POOL",
            position=1,
            redirect_pool_id=pool_id,
        )
        s.add(policy)
        s.flush()
        if with_rule:
            s.add(
                L7Rule(
                    l7policy_id=policy.id,
                    load_balancer_id=lb_id,
                    project_id=PROJECT_A,
                    type="PATH",
                    compare_type="STARTS_WITH",
                    value="/api",
                )
            )
        return policy.id


def test_create_on_lb_fields_and_defaults(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    pool = create_pool(alice, lb["id"], name="p", description="d", tags=["x"])
    assert set(pool) == POOL_FIELDS
    assert pool["provisioning_status"] == "PENDING_CREATE"
    assert pool["operating_status"] == "OFFLINE"
    assert pool["project_id"] == PROJECT_A
    assert pool["loadbalancers"] == [{"id": lb["id"]}]
    assert pool["listeners"] == [] and pool["members"] == []
    assert "healthmonitor_id" not in pool  # Octavia leaves the key out without a monitor
    assert pool["session_persistence"] is None
    assert pool["tls_enabled"] is False and pool["tls_versions"] is None
    assert (pool["name"], pool["description"], pool["tags"]) == ("p", "d", ["x"])
    lb_now = alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}").json()["loadbalancer"]
    assert lb_now["pools"] == [{"id": pool["id"]}]


def test_create_with_listener_sets_default_pool(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    li = create_listener(alice, lb["id"])
    pool = create_pool(alice, listener_id=li["id"])
    assert pool["listeners"] == [{"id": li["id"]}]
    assert pool["loadbalancers"] == [{"id": lb["id"]}]
    assert (
        alice.get(f"/v2/lbaas/listeners/{li['id']}").json()["listener"]["default_pool_id"]
        == (pool["id"])
    )
    resp = _post(
        alice, {"listener_id": li["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    )
    assert resp.status_code == 409
    assert resp.json()["faultstring"] == "This listener already has a default pool"
    # Both parents given and consistent is fine.
    li2 = create_listener(alice, lb["id"], protocol_port=81)
    both = create_pool(alice, lb["id"], listener_id=li2["id"])
    assert both["listeners"] == [{"id": li2["id"]}]


PROTOCOL_CASES: list[tuple[str, str, bool]] = [
    ("HTTP", "HTTP", True),
    ("HTTP", "PROXY", True),
    ("HTTP", "TCP", False),
    ("TCP", "HTTP", True),
    ("TCP", "PROXYV2", True),
    ("HTTPS", "TCP", True),
    ("HTTPS", "HTTP", False),
    ("UDP", "UDP", True),
    ("UDP", "TCP", False),
    ("SCTP", "SCTP", True),
    ("SCTP", "UDP", False),
    ("PROMETHEUS", "HTTP", False),
]


def test_listener_pool_protocol_map(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    for port, (listener_protocol, pool_protocol, ok) in enumerate(PROTOCOL_CASES, start=8000):
        li = create_listener(alice, lb["id"], protocol=listener_protocol, protocol_port=port)
        resp = _post(
            alice,
            {"listener_id": li["id"], "protocol": pool_protocol, "lb_algorithm": "ROUND_ROBIN"},
        )
        case = (listener_protocol, pool_protocol, resp.text)
        assert resp.status_code == (201 if ok else 400), case
        if not ok:
            expected = (  # Octavia's ListenerNoChildren
                "cannot have child objects"
                if listener_protocol == "PROMETHEUS"
                else "is invalid while the listener protocol is"
            )
            assert expected in resp.json()["faultstring"], case


def test_parent_rules(alice: Client, bob: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    other = create_lb(alice, subnet_id)
    li = create_listener(alice, lb["id"])
    resp = _post(alice, {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"})
    assert resp.status_code == 400
    assert (
        "Must provide at least one of: loadbalancer_id, listener_id" in (resp.json()["faultstring"])
    )
    resp = _post(
        alice,
        {
            "loadbalancer_id": other["id"],
            "listener_id": li["id"],
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
        },
    )
    assert resp.status_code == 400
    assert "is not on Load Balancer" in resp.json()["faultstring"]
    resp = _post(alice, {"listener_id": "nope", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"})
    assert resp.status_code == 404
    # Bob cannot hang pools on Alice's objects.
    resp = _post(bob, {"listener_id": li["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"})
    assert resp.status_code == 403
    resp = _post(
        bob, {"loadbalancer_id": lb["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    )
    assert resp.status_code == 403


CREATE_CASES: list[tuple[dict[str, Any], str]] = [
    ({"protocol": "FTP"}, "protocol"),
    ({"lb_algorithm": "RANDOM"}, "lb_algorithm"),
    ({"session_persistence": {"type": "STICKY"}}, "session_persistence"),
    ({"session_persistence": {"cookie_name": "x"}}, "session_persistence.type"),
    ({"session_persistence": {"type": "APP_COOKIE"}}, '"cookie_name" must be specified'),
    (
        {"session_persistence": {"type": "HTTP_COOKIE", "cookie_name": "c"}},
        "can only be specified",
    ),
    (
        {"session_persistence": {"type": "APP_COOKIE", "cookie_name": "a b"}},
        "cookie_name",
    ),
    (
        {"session_persistence": {"type": "APP_COOKIE", "cookie_name": "a;b\nc"}},
        "cookie_name",
    ),
    (
        {"session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 10}},
        "only for UDP and SCTP",
    ),
    (
        {
            "protocol": "UDP",
            "session_persistence": {"type": "HTTP_COOKIE"},
        },
        "not supported for UDP",
    ),
    (
        {
            "protocol": "UDP",
            "session_persistence": {"type": "SOURCE_IP", "persistence_granularity": "x"},
        },
        "persistence_granularity",
    ),
    ({"crl_container_ref": "crl"}, "CA certificate reference"),
    ({"tls_enabled": True, "tls_versions": []}, "Empty TLS version list"),
    ({"tls_enabled": True, "alpn_protocols": []}, "Empty ALPN"),
    ({"tls_versions": ["SSLv1"]}, "tls_versions"),
    ({"protocol": "UDP", "tls_enabled": True}, "TLS is not supported"),
    ({"name": "x" * 256}, "name"),
    ({"healthmonitor": {}}, "healthmonitor"),
]


def test_create_validation(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    base = {"loadbalancer_id": lb["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    for extra, needle in CREATE_CASES:
        resp = _post(alice, {**base, **extra})
        assert resp.status_code == 400, (extra, resp.text)
        assert needle in resp.json()["faultstring"], (extra, resp.text)
    assert alice.get("/v2/lbaas/pools").json()["pools"] == []


def test_session_persistence_and_tls(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    refs = tls_refs(alice)
    pool = create_pool(
        alice,
        lb["id"],
        session_persistence={"type": "APP_COOKIE", "cookie_name": "JSESSIONID"},
        tls_enabled=True,
        ca_tls_container_ref=refs["ca"],
        crl_container_ref=refs["crl"],
    )
    assert pool["session_persistence"] == {
        "type": "APP_COOKIE",
        "cookie_name": "JSESSIONID",
        "persistence_timeout": None,
        "persistence_granularity": None,
    }
    assert pool["tls_versions"] == ["TLSv1.2", "TLSv1.3"]
    assert pool["alpn_protocols"] == ["http/1.1", "http/1.0"]
    assert pool["tls_ciphers"]
    udp = create_pool(
        alice,
        lb["id"],
        protocol="UDP",
        lb_algorithm="SOURCE_IP",
        session_persistence={
            "type": "SOURCE_IP",
            "persistence_timeout": 60,
            "persistence_granularity": "255.255.255.0",
        },
    )
    assert udp["session_persistence"]["persistence_timeout"] == 60
    url = f"/v2/lbaas/pools/{pool['id']}"
    # A PUT without type keeps the current type; the object replaces the old one.
    resp = alice.put(url, {"pool": {"session_persistence": {"cookie_name": "other"}}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["pool"]["session_persistence"]["type"] == "APP_COOKIE"
    assert resp.json()["pool"]["session_persistence"]["cookie_name"] == "other"
    resp = alice.put(url, {"pool": {"session_persistence": {"type": "HTTP_COOKIE"}}})
    assert resp.json()["pool"]["session_persistence"]["cookie_name"] is None
    resp = alice.put(url, {"pool": {"session_persistence": {"type": "APP_COOKIE"}}})
    assert resp.status_code == 400
    resp = alice.put(url, {"pool": {"session_persistence": None}})
    assert resp.json()["pool"]["session_persistence"] is None
    resp = alice.put(url, {"pool": {"ca_tls_container_ref": None}})
    assert resp.status_code == 400  # the CRL needs it


def test_haproxy_provider_refusals(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id, provider="haproxy")
    base = {"loadbalancer_id": lb["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    resp = _post(alice, {**base, "protocol": "UDP"})
    assert resp.status_code == 400 and "pool protocol UDP" in resp.json()["faultstring"]
    resp = _post(alice, {**base, "lb_algorithm": "SOURCE_IP_PORT"})
    assert resp.status_code == 400 and "SOURCE_IP_PORT" in resp.json()["faultstring"]
    pool = create_pool(alice, lb["id"])
    resp = alice.put(f"/v2/lbaas/pools/{pool['id']}", {"pool": {"lb_algorithm": "SOURCE_IP_PORT"}})
    assert resp.status_code == 400


def test_update(alice: Client, subnet_id: str, controller: Any) -> None:
    lb = create_lb(alice, subnet_id)
    li = create_listener(alice, lb["id"])
    pool = create_pool(alice, listener_id=li["id"])
    wait_lb_active(alice, lb["id"])
    url = f"/v2/lbaas/pools/{pool['id']}"
    resp = alice.put(
        url,
        {"pool": {"name": "n", "lb_algorithm": "LEAST_CONNECTIONS", "admin_state_up": False}},
    )
    body = resp.json()["pool"]
    assert body["provisioning_status"] == "PENDING_UPDATE"
    assert (body["name"], body["lb_algorithm"], body["admin_state_up"]) == (
        "n",
        "LEAST_CONNECTIONS",
        False,
    )
    listener = alice.get(f"/v2/lbaas/listeners/{li['id']}").json()["listener"]
    assert listener["provisioning_status"] in ("PENDING_UPDATE", "ACTIVE")
    wait_for(lambda: _get(alice, pool["id"])["provisioning_status"] == "ACTIVE")
    assert _get(alice, pool["id"])["operating_status"] in ("OFFLINE", "ONLINE")
    assert alice.put(url, {"pool": {"lb_algorithm": None}}).status_code == 400
    assert alice.put(url, {"pool": {"protocol": "TCP"}}).status_code == 400
    assert alice.put(url, {"pool": {"name": None}}).json()["pool"]["name"] == ""


def test_delete_cascades(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session], controller: Any
) -> None:
    lb = create_lb(alice, subnet_id)
    li = create_listener(alice, lb["id"])
    pool = create_pool(alice, listener_id=li["id"])
    member = create_member(alice, pool["id"])
    hm = create_hm(alice, pool["id"])
    wait_lb_active(alice, lb["id"])
    assert alice.delete(f"/v2/lbaas/pools/{pool['id']}").status_code == 204
    wait_for(lambda: alice.get(f"/v2/lbaas/pools/{pool['id']}").status_code == 404)
    assert alice.get(f"/v2/lbaas/healthmonitors/{hm['id']}").status_code == 404
    with session_factory() as s:
        assert s.get(Member, member["id"]) is None
    listener = alice.get(f"/v2/lbaas/listeners/{li['id']}").json()["listener"]
    assert listener["default_pool_id"] is None
    wait_for(
        lambda: (
            alice.get(f"/v2/lbaas/listeners/{li['id']}").json()["listener"]["provisioning_status"]
            == "ACTIVE"
        )
    )


def test_delete_marks_tree(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    lb = create_lb(alice, subnet_id)
    li = create_listener(alice, lb["id"])
    pool = create_pool(alice, listener_id=li["id"])
    member = create_member(alice, pool["id"])
    hm = create_hm(alice, pool["id"])
    assert alice.delete(f"/v2/lbaas/pools/{pool['id']}").status_code == 204
    assert _get(alice, pool["id"])["provisioning_status"] == "PENDING_DELETE"
    with session_factory() as s:
        assert s.get(Member, member["id"]).provisioning_status == "PENDING_DELETE"  # type: ignore[union-attr]
        assert s.get(HealthMonitor, hm["id"]).provisioning_status == "PENDING_DELETE"  # type: ignore[union-attr]
    # The listener lost its default pool at once and can take a new one.
    assert alice.get(f"/v2/lbaas/listeners/{li['id']}").json()["listener"]["default_pool_id"] is (
        None
    )
    create_pool(alice, listener_id=li["id"])
    assert alice.delete(f"/v2/lbaas/pools/{pool['id']}").status_code == 204
    assert alice.put(f"/v2/lbaas/pools/{pool['id']}", {"pool": {"name": "x"}}).status_code == 409
    resp = alice.post(
        f"/v2/lbaas/pools/{pool['id']}/members",
        {"member": {"address": "192.0.2.99", "protocol_port": 80}},
    )
    assert resp.status_code == 409


def test_delete_refused_while_l7_policy_redirects(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    lb = create_lb(alice, subnet_id)
    li = create_listener(alice, lb["id"])
    pool = create_pool(alice, lb["id"])
    policy_id = _add_l7(session_factory, lb["id"], li["id"], pool["id"])
    # Octavia counts a listener reaching the pool through an enabled L7 policy with rules.
    assert _get(alice, pool["id"])["listeners"] == [{"id": li["id"]}]
    resp = alice.delete(f"/v2/lbaas/pools/{pool['id']}")
    assert resp.status_code == 409
    assert resp.json()["faultstring"] == f"Pool {pool['id']} is in use by L7 policy {policy_id}"
    with transaction(session_factory) as s:
        s.get(L7Policy, policy_id).provisioning_status = "PENDING_DELETE"  # type: ignore[union-attr]
    assert alice.delete(f"/v2/lbaas/pools/{pool['id']}").status_code == 204


def test_isolation(alice: Client, bob: Client, admin: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    pool = create_pool(alice, lb["id"])
    url = f"/v2/lbaas/pools/{pool['id']}"
    assert bob.get(url).status_code == 403
    assert bob.get(url).json()["faultstring"] == POLICY_REFUSED
    assert bob.put(url, {"pool": {"name": "x"}}).status_code == 403
    assert bob.delete(url).status_code == 403
    assert bob.get("/v2/lbaas/pools").json()["pools"] == []
    assert len(admin.get(f"/v2/lbaas/pools?project_id={PROJECT_A}").json()["pools"]) == 1


def test_quota(alice: Client, subnet_id: str, session_factory: sessionmaker[Session]) -> None:
    with transaction(session_factory) as s:
        s.add(Quota(project_id=PROJECT_A, pool=1))
    lb = create_lb(alice, subnet_id)
    create_pool(alice, lb["id"])
    resp = _post(
        alice, {"loadbalancer_id": lb["id"], "protocol": "TCP", "lb_algorithm": "SOURCE_IP"}
    )
    assert resp.status_code == 403
    assert resp.json()["faultstring"] == "Quota has been met for resources: Pool"


def test_filters(alice: Client, subnet_id: str) -> None:
    lb1 = create_lb(alice, subnet_id)
    lb2 = create_lb(alice, subnet_id)
    create_pool(alice, lb1["id"], protocol="HTTP")
    create_pool(alice, lb1["id"], protocol="TCP")
    create_pool(alice, lb2["id"], protocol="TCP", lb_algorithm="SOURCE_IP")
    assert len(alice.get(f"/v2/lbaas/pools?loadbalancer_id={lb1['id']}").json()["pools"]) == 2
    assert len(alice.get("/v2/lbaas/pools?protocol=TCP").json()["pools"]) == 2
    only = alice.get("/v2/lbaas/pools?lb_algorithm=SOURCE_IP&fields=id,lb_algorithm").json()
    assert [set(p) for p in only["pools"]] == [{"id", "lb_algorithm"}]


def test_listener_id_filter(alice: Client, bob: Client, subnet_id: str) -> None:
    """`?listener_id=` lists the pools a listener uses, as a pool's `listeners` counts
    them: its default pool, and pools an enabled L7 policy with rules redirects to."""
    lb = create_lb(alice, subnet_id)
    web = create_listener(alice, lb["id"], protocol_port=80)
    other = create_listener(alice, lb["id"], protocol_port=81)
    default = create_pool(alice, listener_id=web["id"])
    redirected = create_pool(alice, lb["id"])
    unused = create_pool(alice, lb["id"])
    create_pool(alice, listener_id=other["id"])

    def listed(listener_id: str, client: Client = alice) -> set[str]:
        resp = client.get(f"/v2/lbaas/pools?listener_id={listener_id}")
        assert resp.status_code == 200, resp.text
        return {p["id"] for p in resp.json()["pools"]}

    assert listed(web["id"]) == {default["id"]}
    policy = alice.post(
        "/v2/lbaas/l7policies",
        {
            "l7policy": {
                "listener_id": web["id"],
                "action": "REDIRECT_TO_POOL",
                "redirect_pool_id": redirected["id"],
            }
        },
    ).json()["l7policy"]
    assert listed(web["id"]) == {default["id"]}  # a policy without rules redirects nothing
    rule = alice.post(
        f"/v2/lbaas/l7policies/{policy['id']}/rules",
        {"rule": {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"}},
    )
    assert rule.status_code == 201, rule.text
    assert listed(web["id"]) == {default["id"], redirected["id"]}
    for pool_id in listed(web["id"]):
        pool = alice.get(f"/v2/lbaas/pools/{pool_id}").json()["pool"]
        assert web["id"] in [ref["id"] for ref in pool["listeners"]]
    assert unused["id"] not in listed(web["id"]) | listed(other["id"])
    assert listed(web["id"], bob) == set()
    assert listed("nope") == set()
    both = alice.get(f"/v2/lbaas/pools?listener_id={web['id']}&protocol=HTTP").json()["pools"]
    assert len(both) == 2
    assert alice.get(f"/v2/lbaas/pools?listener_id={web['id']}&bogus=1").status_code == 400
