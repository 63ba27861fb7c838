"""PROMETHEUS listeners through the API: Octavia's rules (no children, no TLS, HTTP headers)."""

from __future__ import annotations

from tests.api.factories import create_lb, create_listener, create_pool
from tests.conftest import Client

NO_CHILDREN = "Protocol PROMETHEUS listeners cannot have child objects."


def test_prometheus_listener_takes_no_pool_or_policy(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    prom = create_listener(alice, lb["id"], protocol="PROMETHEUS", protocol_port=9100)
    assert prom["protocol"] == "PROMETHEUS"
    pool = create_pool(alice, lb_id=lb["id"])

    refused = [
        alice.post(
            "/v2/lbaas/pools",
            {
                "pool": {
                    "listener_id": prom["id"],
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                }
            },
        ),
        alice.put(
            f"/v2/lbaas/listeners/{prom['id']}", {"listener": {"default_pool_id": pool["id"]}}
        ),
        alice.post(
            "/v2/lbaas/listeners",
            {
                "listener": {
                    "loadbalancer_id": lb["id"],
                    "protocol": "PROMETHEUS",
                    "protocol_port": 9101,
                    "default_pool_id": pool["id"],
                }
            },
        ),
        alice.post(
            "/v2/lbaas/l7policies",
            {"l7policy": {"listener_id": prom["id"], "action": "REJECT"}},
        ),
    ]
    for resp in refused:
        assert resp.status_code == 400, resp.text
        assert resp.json()["faultstring"] == NO_CHILDREN
    listener = alice.get(f"/v2/lbaas/listeners/{prom['id']}").json()["listener"]
    assert listener["default_pool_id"] is None and listener["l7policies"] == []


def test_prometheus_listener_headers_and_tls(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    ok = create_listener(
        alice,
        lb["id"],
        protocol="PROMETHEUS",
        protocol_port=9100,
        insert_headers={"X-Forwarded-For": "true"},
    )
    assert ok["insert_headers"] == {"X-Forwarded-For": "true"}
    body = {"loadbalancer_id": lb["id"], "protocol": "PROMETHEUS", "protocol_port": 9102}
    ssl_header = alice.post(
        "/v2/lbaas/listeners",
        {"listener": {**body, "insert_headers": {"X-SSL-Client-Verify": "true"}}},
    )
    assert ssl_header.status_code == 400, ssl_header.text
    # The port of another TCP-based listener is taken, as for any listener.
    clash = alice.post("/v2/lbaas/listeners", {"listener": {**body, "protocol_port": 9100}})
    assert clash.status_code == 409, clash.text
