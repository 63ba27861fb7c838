"""Listener resource: fields and defaults, validation, conflicts, status machine, cascade, stats."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from openha.controller import snapshot
from openha.db import transaction
from openha.models import L7Policy, L7Rule, ListenerStats, Quota
from tests.api.certstore_helpers import tls_refs
from tests.api.factories import (
    POLICY_REFUSED,
    create_lb,
    create_listener,
    create_pool,
    wait_lb_active,
)
from tests.conftest import PROJECT_A, Client, wait_for

LISTENER_FIELDS = {
    "id",
    "name",
    "description",
    "provisioning_status",
    "operating_status",
    "admin_state_up",
    "protocol",
    "protocol_port",
    "connection_limit",
    "default_tls_container_ref",
    "sni_container_refs",
    "project_id",
    "tenant_id",
    "default_pool_id",
    "l7policies",
    "insert_headers",
    "created_at",
    "updated_at",
    "loadbalancers",
    "timeout_client_data",
    "timeout_member_connect",
    "timeout_member_data",
    "timeout_tcp_inspect",
    "tags",
    "client_ca_tls_container_ref",
    "client_authentication",
    "client_crl_container_ref",
    "allowed_cidrs",
    "tls_ciphers",
    "tls_versions",
    "alpn_protocols",
    "hsts_max_age",
    "hsts_include_subdomains",
    "hsts_preload",
}


def _post(client: Client, body: dict[str, Any]) -> Any:
    return client.post("/v2/lbaas/listeners", {"listener": body})


def _get(client: Client, listener_id: str) -> dict[str, Any]:
    resp = client.get(f"/v2/lbaas/listeners/{listener_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()["listener"]


def test_create_returns_octavia_fields_and_defaults(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    li = create_listener(alice, lb["id"], name="web", tags=["a", "b"])
    assert set(li) == LISTENER_FIELDS
    assert li["provisioning_status"] == "PENDING_CREATE"
    assert li["operating_status"] == "OFFLINE"
    assert li["project_id"] == PROJECT_A
    assert li["loadbalancers"] == [{"id": lb["id"]}]
    assert li["l7policies"] == []
    assert li["connection_limit"] == -1
    assert (li["timeout_client_data"], li["timeout_member_connect"]) == (50000, 5000)
    assert (li["timeout_member_data"], li["timeout_tcp_inspect"]) == (50000, 0)
    assert li["insert_headers"] == {}
    assert li["sni_container_refs"] == []
    assert li["allowed_cidrs"] is None
    assert li["client_authentication"] == "NONE"
    assert li["tls_versions"] is None and li["tls_ciphers"] is None
    assert li["hsts_max_age"] is None and li["hsts_preload"] is False
    assert li["tags"] == ["a", "b"]
    assert li["default_pool_id"] is None
    body = alice.get(f"/v2.0/lbaas/listeners/{li['id']}?fields=id&fields=protocol_port").json()
    assert body == {"listener": {"id": li["id"], "protocol_port": 80}}
    # The LB lists it and went to PENDING_* with the change.
    lb_now = alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}").json()["loadbalancer"]
    assert lb_now["listeners"] == [{"id": li["id"]}]


def test_create_goes_active(alice: Client, subnet_id: str, controller: Any) -> None:
    lb = create_lb(alice, subnet_id)
    wait_lb_active(alice, lb["id"])
    li = create_listener(alice, lb["id"])
    assert li["provisioning_status"] == "PENDING_CREATE"
    lb_now = alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}").json()["loadbalancer"]
    assert lb_now["provisioning_status"] in ("PENDING_UPDATE", "ACTIVE")
    wait_lb_active(alice, lb["id"])
    wait_for(lambda: _get(alice, li["id"])["provisioning_status"] == "ACTIVE")
    wait_for(lambda: _get(alice, li["id"])["operating_status"] == "ONLINE")


def test_changes_while_pending_are_merged(alice: Client, subnet_id: str, controller: Any) -> None:
    lb = create_lb(alice, subnet_id)
    li = create_listener(alice, lb["id"])
    for limit in (10, 20, 30):
        resp = alice.put(
            f"/v2/lbaas/listeners/{li['id']}", {"listener": {"connection_limit": limit}}
        )
        assert resp.status_code == 200, resp.text
    body = resp.json()["listener"]
    assert body["connection_limit"] == 30
    # Still creating, or created and now updating: either way accepted, no 409.
    assert body["provisioning_status"] in ("PENDING_CREATE", "PENDING_UPDATE")
    wait_lb_active(alice, lb["id"])
    done = wait_for(lambda: (b := _get(alice, li["id"]))["provisioning_status"] == "ACTIVE" and b)
    assert done["connection_limit"] == 30
    resp = alice.put(f"/v2/lbaas/listeners/{li['id']}", {"listener": {"name": "x"}})
    assert resp.json()["listener"]["provisioning_status"] == "PENDING_UPDATE"
    wait_for(lambda: _get(alice, li["id"])["provisioning_status"] == "ACTIVE")


CREATE_CASES: list[tuple[dict[str, Any], str]] = [
    ({"protocol": "FTP"}, "protocol"),
    ({"protocol_port": 0}, "protocol_port"),
    ({"protocol_port": 65536}, "protocol_port"),
    ({"connection_limit": -2}, "connection_limit"),
    ({"timeout_client_data": -1}, "timeout_client_data"),
    ({"timeout_member_data": 86400001}, "timeout_member_data"),
    ({"insert_headers": {"X-Evil": "true"}}, "insert_headers"),
    ({"insert_headers": {"X-Forwarded-For": "yes\nhttp-request"}}, "insert_headers"),
    ({"insert_headers": {"X-SSL-Client-DN": "true"}}, "X-SSL-Client-DN"),
    ({"protocol": "TCP", "insert_headers": {"X-Forwarded-For": "true"}}, "insert-headers"),
    ({"allowed_cidrs": ["10.0.0.0/33"]}, "allowed_cidrs"),
    ({"allowed_cidrs": ["2001:db8::/32"]}, "IP version incompatible"),
    ({"default_tls_container_ref": "ref1"}, "only allowed on TERMINATED_HTTPS"),
    ({"protocol": "TERMINATED_HTTPS", "protocol_port": 443}, "certificate container"),
    (
        {
            "protocol": "TERMINATED_HTTPS",
            "default_tls_container_ref": "cert",
            "client_authentication": "MANDATORY",
        },
        "requires a client CA",
    ),
    (
        {
            "protocol": "TERMINATED_HTTPS",
            "default_tls_container_ref": "cert",
            "client_crl_container_ref": "crl",
        },
        "revocation list",
    ),
    (
        {
            "protocol": "TERMINATED_HTTPS",
            "default_tls_container_ref": "cert",
            "tls_versions": [],
        },
        "Empty TLS version list",
    ),
    ({"tls_versions": ["TLSv9"]}, "tls_versions"),
    ({"alpn_protocols": ["spdy/1"]}, "alpn_protocols"),
    ({"tls_ciphers": "AES128'; bad"}, "tls_ciphers"),
    ({"hsts_max_age": 100}, "HSTS feature"),
    (
        {
            "protocol": "TERMINATED_HTTPS",
            "default_tls_container_ref": "c",
            "hsts_preload": True,
        },
        "hsts_max_age",
    ),
    ({"protocol": "UDP", "insert_headers": {"X-Forwarded-For": "true"}}, "insert-headers"),
    ({"client_authentication": "SOMETIMES"}, "client_authentication"),
    ({"name": "bad\x00name"}, "name"),
    ({"tags": ["x" * 256]}, "tags"),
    ({"bogus": 1}, "bogus"),
]


def test_create_validation(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    for extra, needle in CREATE_CASES:
        body = {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80, **extra}
        resp = _post(alice, body)
        assert resp.status_code == 400, (extra, resp.text)
        assert needle in resp.json()["faultstring"], (extra, resp.text)
    assert alice.get(f"/v2/lbaas/listeners?loadbalancer_id={lb['id']}").json()["listeners"] == []


def test_mandatory_fields(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    resp = _post(alice, {"protocol": "HTTP", "protocol_port": 80})
    assert resp.status_code == 400
    assert "loadbalancer_id" in resp.json()["faultstring"]
    resp = _post(alice, {"loadbalancer_id": lb["id"], "protocol_port": 80})
    assert resp.status_code == 400
    assert "protocol" in resp.json()["faultstring"]
    resp = _post(alice, {"loadbalancer_id": "nope", "protocol": "HTTP", "protocol_port": 80})
    assert resp.status_code == 404


def test_full_tls_listener_on_noop(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    refs = tls_refs(alice)
    li = create_listener(
        alice,
        lb["id"],
        protocol="TERMINATED_HTTPS",
        protocol_port=443,
        default_tls_container_ref=refs["default"],
        sni_container_refs=[refs["sni1"], refs["sni2"], refs["sni1"]],
        client_ca_tls_container_ref=refs["ca"],
        client_authentication="OPTIONAL",
        client_crl_container_ref=refs["crl"],
        insert_headers={"X-SSL-Client-DN": "true", "X-Forwarded-Proto": "True"},
        hsts_max_age=31536000,
        hsts_include_subdomains=True,
        allowed_cidrs=["192.0.2.7/24", "192.0.2.0/24", "203.0.113.0/24"],
    )
    assert li["sni_container_refs"] == [refs["sni1"], refs["sni2"]]
    assert li["tls_versions"] == ["TLSv1.2", "TLSv1.3"]
    assert li["alpn_protocols"] == ["h2", "http/1.1", "http/1.0"]
    assert li["tls_ciphers"]
    assert li["hsts_max_age"] == 31536000 and li["hsts_include_subdomains"] is True
    assert li["allowed_cidrs"] == ["192.0.2.0/24", "203.0.113.0/24"]
    assert li["insert_headers"]["X-SSL-Client-DN"] == "true"
    # null resets the TLS options to the defaults again
    resp = alice.put(
        f"/v2/lbaas/listeners/{li['id']}",
        {"listener": {"tls_versions": ["TLSv1.3"], "alpn_protocols": ["h2"]}},
    )
    assert resp.json()["listener"]["tls_versions"] == ["TLSv1.3"]
    resp = alice.put(f"/v2/lbaas/listeners/{li['id']}", {"listener": {"tls_versions": None}})
    assert resp.json()["listener"]["tls_versions"] == ["TLSv1.2", "TLSv1.3"]
    # removing the CA while client auth needs it is refused
    resp = alice.put(
        f"/v2/lbaas/listeners/{li['id']}", {"listener": {"client_ca_tls_container_ref": None}}
    )
    assert resp.status_code == 400


def test_haproxy_provider_serves_tls_termination(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id, provider="haproxy")
    refs = tls_refs(alice)
    resp = _post(
        alice,
        {
            "loadbalancer_id": lb["id"],
            "protocol": "TERMINATED_HTTPS",
            "protocol_port": 443,
            "default_tls_container_ref": refs["default"],
        },
    )
    assert resp.status_code == 201, resp.text
    resp = _post(alice, {"loadbalancer_id": lb["id"], "protocol": "UDP", "protocol_port": 53})
    assert resp.status_code == 400
    assert "listener protocol UDP" in resp.json()["faultstring"]
    create_listener(alice, lb["id"], protocol="HTTP", protocol_port=80)


def test_protocol_port_conflicts(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    create_listener(alice, lb["id"], protocol="HTTP", protocol_port=80)
    for protocol in ("HTTP", "TCP", "HTTPS"):
        resp = _post(
            alice, {"loadbalancer_id": lb["id"], "protocol": protocol, "protocol_port": 80}
        )
        assert resp.status_code == 409, resp.text
        assert (
            "Another Listener on this Load Balancer is already using protocol_port 80"
            in resp.json()["faultstring"]
        )
    # UDP and SCTP are other L4 protocols: the same port is free for them.
    create_listener(alice, lb["id"], protocol="UDP", protocol_port=80)
    create_listener(alice, lb["id"], protocol="SCTP", protocol_port=80)
    resp = _post(alice, {"loadbalancer_id": lb["id"], "protocol": "UDP", "protocol_port": 80})
    assert resp.status_code == 409
    # Another LB is another address: no conflict.
    other = create_lb(alice, subnet_id)
    create_listener(alice, other["id"], protocol="TCP", protocol_port=80)


def test_default_pool(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    other_lb = create_lb(alice, subnet_id)
    http_pool = create_pool(alice, lb["id"], protocol="HTTP")
    udp_pool = create_pool(alice, lb["id"], protocol="UDP")
    foreign = create_pool(alice, other_lb["id"])
    base = {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}
    resp = _post(alice, {**base, "default_pool_id": foreign["id"]})
    assert resp.status_code == 404
    assert resp.json()["faultstring"] == f"Pool {foreign['id']} not found."
    resp = _post(alice, {**base, "default_pool_id": udp_pool["id"]})
    assert resp.status_code == 400
    assert "The pool protocol 'UDP' is invalid" in resp.json()["faultstring"]
    li = create_listener(alice, lb["id"], default_pool_id=http_pool["id"])
    assert li["default_pool_id"] == http_pool["id"]
    pool_now = alice.get(f"/v2/lbaas/pools/{http_pool['id']}").json()["pool"]
    assert pool_now["listeners"] == [{"id": li["id"]}]
    # A TCP listener may use an HTTP pool; an HTTP listener no TCP pool.
    tcp_li = create_listener(alice, lb["id"], protocol="TCP", protocol_port=81)
    resp = alice.put(
        f"/v2/lbaas/listeners/{tcp_li['id']}", {"listener": {"default_pool_id": http_pool["id"]}}
    )
    assert resp.status_code == 200
    tcp_pool = create_pool(alice, lb["id"], protocol="TCP")
    resp = alice.put(
        f"/v2/lbaas/listeners/{li['id']}", {"listener": {"default_pool_id": tcp_pool["id"]}}
    )
    assert resp.status_code == 400
    resp = alice.put(f"/v2/lbaas/listeners/{li['id']}", {"listener": {"default_pool_id": None}})
    assert resp.json()["listener"]["default_pool_id"] is None


def test_update_fields_and_null_resets(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    li = create_listener(alice, lb["id"])
    url = f"/v2/lbaas/listeners/{li['id']}"
    changes = {
        "name": "n",
        "description": "d",
        "admin_state_up": False,
        "connection_limit": 100,
        "timeout_client_data": 1000,
        "timeout_member_connect": 2000,
        "timeout_member_data": 3000,
        "timeout_tcp_inspect": 4000,
        "insert_headers": {"X-Forwarded-For": "true"},
        "allowed_cidrs": ["10.0.0.0/8"],
        "tags": ["t"],
    }
    body = alice.put(url, {"listener": changes}).json()["listener"]
    for key, value in changes.items():
        assert body[key] == value, key
    resets = {k: None for k in changes if k not in ("admin_state_up", "tags")}
    body = alice.put(url, {"listener": resets}).json()["listener"]
    assert (body["name"], body["description"], body["connection_limit"]) == ("", "", -1)
    assert body["timeout_client_data"] == 50000 and body["timeout_tcp_inspect"] == 0
    assert body["insert_headers"] == {} and body["allowed_cidrs"] is None
    resp = alice.put(url, {"listener": {"admin_state_up": None}})
    assert resp.status_code == 400
    resp = alice.put(url, {"listener": {"protocol_port": 81}})
    assert resp.status_code == 400  # immutable in Octavia: not an attribute of PUT


def test_isolation_and_roles(
    alice: Client, bob: Client, alice_reader: Client, admin: Client, subnet_id: str
) -> None:
    lb = create_lb(alice, subnet_id)
    li = create_listener(alice, lb["id"])
    url = f"/v2/lbaas/listeners/{li['id']}"
    assert bob.get(url).status_code == 403
    assert bob.get(url).json()["faultstring"] == POLICY_REFUSED
    assert bob.put(url, {"listener": {"name": "x"}}).status_code == 403
    assert bob.delete(url).status_code == 403
    assert bob.get(f"{url}/stats").status_code == 403
    assert bob.get("/v2/lbaas/listeners").json()["listeners"] == []
    resp = bob.post(
        "/v2/lbaas/listeners",
        {"listener": {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 22}},
    )
    assert resp.status_code == 403
    assert alice_reader.get(url).status_code == 200
    assert alice_reader.put(url, {"listener": {"name": "x"}}).status_code == 403
    assert admin.get(url).status_code == 200
    # An admin's listener on alice's LB belongs to alice's project.
    made = create_listener(admin, lb["id"], protocol="TCP", protocol_port=22)
    assert made["project_id"] == PROJECT_A


def test_delete_cascades_to_l7(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session], controller: Any
) -> None:
    lb = create_lb(alice, subnet_id)
    pool = create_pool(alice, lb["id"])
    li = create_listener(alice, lb["id"], default_pool_id=pool["id"])
    with transaction(session_factory) as s:
        policy = L7Policy(
            listener_id=li["id"],
            load_balancer_id=lb["id"],
            project_id=PROJECT_A,
            action="REDIRECT_TO_POOL",
            position=1,
            redirect_pool_id=pool["id"],
        )
        s.add(policy)
        s.flush()
        s.add(
            L7Rule(
                l7policy_id=policy.id,
                load_balancer_id=lb["id"],
                project_id=PROJECT_A,
                type="PATH",
                compare_type="STARTS_WITH",
                value="/api",
            )
        )
        policy_id = policy.id
    wait_lb_active(alice, lb["id"])
    assert _get(alice, li["id"])["l7policies"] == [{"id": policy_id}]
    assert alice.delete(f"/v2/lbaas/listeners/{li['id']}").status_code == 204
    wait_for(lambda: alice.get(f"/v2/lbaas/listeners/{li['id']}").status_code == 404)
    with session_factory() as s:
        assert s.get(L7Policy, policy_id) is None
        assert s.query(L7Rule).count() == 0
    # The pool stays with the LB.
    assert alice.get(f"/v2/lbaas/pools/{pool['id']}").status_code == 200
    # Deleting again is a 404 once gone.
    assert alice.delete(f"/v2/lbaas/listeners/{li['id']}").status_code == 404


def test_delete_marks_pending_delete(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    lb = create_lb(alice, subnet_id)
    li = create_listener(alice, lb["id"])
    with transaction(session_factory) as s:
        policy = L7Policy(
            listener_id=li["id"],
            load_balancer_id=lb["id"],
            project_id=PROJECT_A,
            action="REJECT",
            position=1,
        )
        s.add(policy)
        s.flush()
        rule = L7Rule(
            l7policy_id=policy.id,
            load_balancer_id=lb["id"],
            project_id=PROJECT_A,
            type="PATH",
            compare_type="STARTS_WITH",
            value="/x",
        )
        s.add(rule)
        s.flush()
        ids = (policy.id, rule.id)
    assert alice.delete(f"/v2/lbaas/listeners/{li['id']}").status_code == 204
    assert _get(alice, li["id"])["provisioning_status"] == "PENDING_DELETE"
    with session_factory() as s:
        assert s.get(L7Policy, ids[0]).provisioning_status == "PENDING_DELETE"  # type: ignore[union-attr]
        assert s.get(L7Rule, ids[1]).provisioning_status == "PENDING_DELETE"  # type: ignore[union-attr]
    # A second delete is accepted; an update is refused while it goes.
    assert alice.delete(f"/v2/lbaas/listeners/{li['id']}").status_code == 204
    resp = alice.put(f"/v2/lbaas/listeners/{li['id']}", {"listener": {"name": "x"}})
    assert resp.status_code == 409
    # A new listener on its port while it goes: the old one gives way, with its policies
    # (a merge as for a re-added member, not Octavia's 409 "immutable"; issue 13).
    resp = _post(alice, {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80})
    assert resp.status_code == 201, resp.text
    new = resp.json()["listener"]
    assert alice.get(f"/v2/lbaas/listeners/{li['id']}").status_code == 404
    with session_factory() as s:
        assert s.get(L7Policy, ids[0]) is None and s.get(L7Rule, ids[1]) is None
        spec = snapshot.build(s, lb["id"], None)
    assert [listener.id for listener in spec.listeners] == [new["id"]]
    # A live listener on the port still refuses another one.
    resp = _post(alice, {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 80})
    assert resp.status_code == 409


def test_stats(alice: Client, subnet_id: str, session_factory: sessionmaker[Session]) -> None:
    lb = create_lb(alice, subnet_id)
    li = create_listener(alice, lb["id"])
    zeros = alice.get(f"/v2/lbaas/listeners/{li['id']}/stats").json()
    assert zeros == {
        "stats": {
            "bytes_in": 0,
            "bytes_out": 0,
            "active_connections": 0,
            "total_connections": 0,
            "request_errors": 0,
        }
    }
    with transaction(session_factory) as s:
        s.add(
            ListenerStats(
                listener_id=li["id"],
                load_balancer_id=lb["id"],
                bytes_in=10,
                bytes_out=20,
                active_connections=3,
                total_connections=40,
                request_errors=5,
            )
        )
    stats = alice.get(f"/v2/lbaas/listeners/{li['id']}/stats").json()["stats"]
    assert stats == {
        "bytes_in": 10,
        "bytes_out": 20,
        "active_connections": 3,
        "total_connections": 40,
        "request_errors": 5,
    }


def test_quota(alice: Client, subnet_id: str, session_factory: sessionmaker[Session]) -> None:
    with transaction(session_factory) as s:
        s.add(Quota(project_id=PROJECT_A, listener=1))
    lb = create_lb(alice, subnet_id)
    create_listener(alice, lb["id"])
    resp = _post(alice, {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 22})
    assert resp.status_code == 403
    assert resp.json()["faultstring"] == "Quota has been met for resources: Listener"


def test_filters_sorting_pagination(alice: Client, subnet_id: str) -> None:
    lb1 = create_lb(alice, subnet_id)
    lb2 = create_lb(alice, subnet_id)
    for port in (80, 81, 82):
        create_listener(alice, lb1["id"], protocol_port=port, tags=["one"])
    create_listener(alice, lb2["id"], protocol="TCP", protocol_port=22, tags=["two"])
    listeners = alice.get(f"/v2/lbaas/listeners?loadbalancer_id={lb1['id']}").json()["listeners"]
    assert sorted(li["protocol_port"] for li in listeners) == [80, 81, 82]
    tcp = alice.get("/v2/lbaas/listeners?protocol=TCP").json()["listeners"]
    assert [li["protocol_port"] for li in tcp] == [22]
    assert len(alice.get("/v2/lbaas/listeners?tags=two").json()["listeners"]) == 1
    assert len(alice.get("/v2/lbaas/listeners?not-tags=two").json()["listeners"]) == 3
    page = alice.get("/v2/lbaas/listeners?limit=2&sort=protocol_port:desc").json()
    assert [li["protocol_port"] for li in page["listeners"]] == [82, 81]
    nxt = next(link for link in page["listeners_links"] if link["rel"] == "next")["href"]
    page2 = alice.get(nxt[nxt.index("/v2") :]).json()
    assert [li["protocol_port"] for li in page2["listeners"]] == [80, 22]
