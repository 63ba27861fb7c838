"""Bad request bodies are a clear 400, never a 500 (issue 13 items 9 and 11): integers
beyond what Octavia or the database takes, text that is not valid Unicode, addresses
that name a subnet itself, CIDRs with host bits, and errors that never echo a huge
value back whole."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.api.factories import create_lb, create_listener, create_member, create_pool
from tests.api.test_agents_and_manage import enroll, register
from tests.api.test_networks import make_network, make_subnet
from tests.conftest import Client

HUGE = 2**64  # beyond any column
INT32_OVER = 2**31  # beyond an Integer column on PostgreSQL


def _is_clear_400(resp: Any) -> str:
    assert resp.status_code == 400, resp.text
    message = resp.json()["faultstring"]
    assert isinstance(message, str) and message
    return str(message)


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("listener", "connection_limit", INT32_OVER),
        ("listener", "connection_limit", HUGE),
        ("listener", "hsts_max_age", INT32_OVER),
        ("listener", "protocol_port", HUGE),
        ("listener", "timeout_client_data", HUGE),
        ("pool", "session_persistence", {"type": "SOURCE_IP", "persistence_timeout": HUGE}),
        ("member", "weight", HUGE),
        ("member", "monitor_port", HUGE),
        ("member", "protocol_port", -HUGE),
    ],
)
def test_integers_beyond_bounds(
    alice: Client, subnet_id: str, kind: str, field: str, value: Any
) -> None:
    lb = create_lb(alice, subnet_id)
    if kind == "listener":
        body = {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80, field: value}
        resp = alice.post("/v2/lbaas/listeners", {"listener": body})
    elif kind == "pool":
        body = {
            "loadbalancer_id": lb["id"],
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
            field: value,
        }
        resp = alice.post("/v2/lbaas/pools", {"pool": body})
    else:
        pool = create_pool(alice, lb["id"])
        body = {"address": "192.0.2.10", "protocol_port": 80, field: value}
        resp = alice.post(f"/v2/lbaas/pools/{pool['id']}/members", {"member": body})
    _is_clear_400(resp)


def test_listener_update_beyond_bounds(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    listener = create_listener(alice, lb["id"])
    url = f"/v2/lbaas/listeners/{listener['id']}"
    _is_clear_400(alice.put(url, {"listener": {"connection_limit": HUGE}}))
    ok = alice.put(url, {"listener": {"connection_limit": 2**31 - 1}})
    assert ok.status_code == 200, ok.text


def test_host_capacity_bounds(
    http: Any, admin: Client, session_factory: sessionmaker[Session]
) -> None:
    secret = enroll(session_factory, "lb-host-bounds")
    host_id = register(http, secret, "lb-host-bounds")
    for capacity in (HUGE, -1):
        _is_clear_400(admin.put(f"/v2/manage/hosts/{host_id}", {"host": {"capacity": capacity}}))
        resp = http.post(
            "/v2/agent/register",
            headers={"Authorization": f"Bearer {secret}"},
            json={
                "name": "lb-host-bounds",
                "capacity": capacity,
                "management_url": "http://127.0.0.1:1",
                "agent_secret": "s3cret",
            },
        )
        assert resp.status_code in (400, 422), resp.text
    beat = http.post(
        "/v2/agent/heartbeat",
        headers={"Authorization": f"Bearer {secret}"},
        json={
            "host_id": host_id,
            "name": "lb-host-bounds",
            "instances": [{"instance_id": "i", "applied_generation": HUGE}],
        },
    )
    assert beat.status_code in (400, 422), beat.text


@pytest.mark.parametrize(
    "raw",
    [
        '{"loadbalancer": {"name": "\\ud800", "vip_subnet_id": "SUBNET"}}',
        '{"loadbalancer": {"name": "ok", "\\udfff": 1, "vip_subnet_id": "SUBNET"}}',
        '{"loadbalancer": {"tags": ["a\\uDBFFb"], "vip_subnet_id": "SUBNET"}}',
    ],
)
def test_lone_surrogates_refused(alice: Client, subnet_id: str, raw: str) -> None:
    resp = alice.http.request(
        "POST",
        "/v2/lbaas/loadbalancers",
        content=raw.replace("SUBNET", subnet_id).encode(),
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert "Unicode" in _is_clear_400(resp)
    assert alice.get("/v2/lbaas/loadbalancers").json()["loadbalancers"] == []


def test_surrogate_pairs_are_text(alice: Client, subnet_id: str) -> None:
    raw = '{"loadbalancer": {"name": "\\ud83d\\ude00", "vip_subnet_id": "SUBNET"}}'
    raw = raw.replace("SUBNET", subnet_id)
    resp = alice.http.request(
        "POST",
        "/v2/lbaas/loadbalancers",
        content=raw.encode(),
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["loadbalancer"]["name"] == "\U0001f600"


def test_surrogates_in_other_bodies(admin: Client) -> None:
    resp = admin.http.request(
        "POST",
        "/v2.0/networks",
        content=b'{"network": {"name": "\\ud800"}}',
        headers={**admin.headers, "Content-Type": "application/json"},
    )
    _is_clear_400(resp)


def test_errors_quote_input_cut_short(alice: Client, subnet_id: str) -> None:
    huge = "x" * 1_000_000
    resp = alice.post(
        "/v2/lbaas/loadbalancers", {"loadbalancer": {"name": huge, "vip_subnet_id": subnet_id}}
    )
    message = _is_clear_400(resp)
    assert len(resp.content) < 2000 and "xxxx…" in message
    resp = alice.post(
        "/v2/lbaas/loadbalancers", {"loadbalancer": {huge: 1, "vip_subnet_id": subnet_id}}
    )
    assert len(resp.content) < 2000
    lb = create_lb(alice, subnet_id)
    resp = alice.post(
        "/v2/lbaas/listeners",
        {
            "listener": {
                "loadbalancer_id": lb["id"],
                "protocol": "HTTP",
                "protocol_port": 80,
                "insert_headers": {"X-Forwarded-For": "y" * 255},
            }
        },
    )
    assert len(_is_clear_400(resp)) < 400


@pytest.mark.parametrize("address", ["198.51.100.0", "198.51.100.255"])
def test_vip_not_network_or_broadcast(alice: Client, subnet_id: str, address: str) -> None:
    resp = alice.post(
        "/v2/lbaas/loadbalancers",
        {"loadbalancer": {"vip_subnet_id": subnet_id, "vip_address": address}},
    )
    assert "network or broadcast" in _is_clear_400(resp)
    ok = create_lb(alice, subnet_id, vip_address="198.51.100.254")
    assert ok["vip_address"] == "198.51.100.254"


def test_vip_not_ipv6_subnet_router_anycast(admin: Client, alice: Client) -> None:
    net = make_network(admin, shared=True)
    sub_id = make_subnet(admin, net["id"], "fd00:1::/64", ip_version=6)["id"]
    resp = alice.post(
        "/v2/lbaas/loadbalancers",
        {"loadbalancer": {"vip_subnet_id": sub_id, "vip_address": "fd00:1::"}},
    )
    _is_clear_400(resp)


@pytest.mark.parametrize("cidr", ["fd00::/0", "10.0.0.5/24", "fd00::1/64"])
def test_subnet_cidr_with_host_bits(admin: Client, cidr: str) -> None:
    net = make_network(admin)
    resp = admin.post("/v2.0/subnets", {"subnet": {"network_id": net["id"], "cidr": cidr}})
    assert "not a network address" in _is_clear_400(resp)
    assert admin.get(f"/v2.0/subnets?network_id={net['id']}").json()["subnets"] == []


def test_member_body_still_fine(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    pool = create_pool(alice, lb["id"])
    assert create_member(alice, pool["id"], weight=256)["weight"] == 256
    assert json.dumps({"ok": True})
