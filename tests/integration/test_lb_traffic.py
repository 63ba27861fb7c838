"""Load balancers made through the API carry real traffic through real HAProxy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from stack import Stack, wait_for

from openha.lab import BackendServer, ClientNamespace, Lab

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(lab: Lab) -> Iterator[Stack]:
    stack = Stack(lab)
    try:
        stack.add_agent()
        yield stack
    finally:
        stack.close()


def http_lb(
    stack: Stack,
    backends: list[BackendServer],
    *,
    hm: bool = True,
    pool: dict[str, Any] | None = None,
    listener: dict[str, Any] | None = None,
) -> dict[str, Any]:
    lb = stack.create("loadbalancers", "loadbalancer", {"vip_subnet_id": stack.subnet_id})
    li = stack.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80, **(listener or {})},
    )
    po = stack.create(
        "pools",
        "pool",
        {
            "listener_id": li["id"],
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
            **(pool or {}),
        },
    )
    members = [
        stack.create(
            f"pools/{po['id']}/members",
            "member",
            {"address": b.ip, "protocol_port": b.port, "name": b.name},
        )
        for b in backends
    ]
    if hm:
        stack.create(
            "healthmonitors",
            "healthmonitor",
            {
                "pool_id": po["id"],
                "type": "HTTP",
                "delay": 1,
                "timeout": 1,
                "max_retries": 1,
                "max_retries_down": 1,
                "url_path": "/",
            },
        )
    stack.wait_active(lb["id"])
    return {"lb": lb, "listener": li, "pool": po, "members": members}


def served_by(client: ClientNamespace, url: str, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        resp = client.request(url, timeout=5)
        assert resp.status == 200, resp.text
        seen[resp.json()["server"]] += 1
    return seen


def test_round_robin_and_member_health(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    made = http_lb(stack, backends)
    lb = made["lb"]
    client = ClientNamespace(lab)
    url = f"http://{lb['vip_address']}/"
    wait_for(lambda: client.request(url, timeout=2).status == 200, 15, what="VIP answers")
    stack.wait_operating(lb["id"], "ONLINE")
    assert served_by(client, url, 30) == {b.name: 10 for b in backends}

    backends[1].stop()
    stack.wait_operating(lb["id"], "DEGRADED")
    members = stack.tenant.get(f"/v2/lbaas/pools/{made['pool']['id']}/members").json()["members"]
    status = {m["name"]: m["operating_status"] for m in members}
    assert status == {"web1": "ONLINE", "web2": "ERROR", "web3": "ONLINE"}
    assert served_by(client, url, 20) == {"web1": 10, "web3": 10}

    backends[1].start()
    stack.wait_operating(lb["id"], "ONLINE")
    assert set(served_by(client, url, 30)) == {"web1", "web2", "web3"}
    stats = stack.tenant.get(f"/v2/lbaas/loadbalancers/{lb['id']}/stats").json()["stats"]
    assert stats["total_connections"] > 0 and stats["bytes_out"] > 0


def test_delete_removes_the_data_plane(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    made = http_lb(stack, backends[:1], hm=False)
    agent = stack.agents[0]
    assert agent.instance_dirs() and agent.data_plane_pids()
    lb_id = made["lb"]["id"]
    resp = stack.tenant.delete(f"/v2/lbaas/loadbalancers/{lb_id}", params={"cascade": "true"})
    assert resp.status_code == 204
    wait_for(
        lambda: stack.tenant.get(f"/v2/lbaas/loadbalancers/{lb_id}").status_code == 404,
        30,
        what="LB gone",
    )
    assert agent.instance_dirs() == [] and agent.data_plane_pids() == []
    ports = stack.admin.get("/v2.0/ports").json()["ports"]
    assert ports == []
