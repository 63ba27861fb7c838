"""Load balancers made through the API carry real traffic through real HAProxy."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from lbhelpers import http_lb, served_by, wait_answers
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


def test_round_robin_and_member_health(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    made = http_lb(stack, backends)
    lb = made["lb"]
    client = ClientNamespace(lab)
    url = f"http://{lb['vip_address']}/"
    wait_answers(client, url, 15)
    stack.wait_operating(lb["id"], "ONLINE")
    assert served_by(client, url, 30) == {b.name: 10 for b in backends}

    backends[1].stop()
    stack.wait_operating(lb["id"], "DEGRADED")
    shown = time.time()
    members = stack.tenant.get(f"/v2/lbaas/pools/{made['pool']['id']}/members").json()["members"]
    status = {m["name"]: m["operating_status"] for m in members}
    assert status == {"web1": "ONLINE", "web2": "ERROR", "web3": "ONLINE"}
    # From HAProxy's own word ("Server <pool>/<member> is DOWN", which rsyslogd files
    # with the time it got it) to the API: a heartbeat and an observation, not a sweep.
    noticed = haproxy_said(stack, f"{made['members'][1]['id']} is DOWN")
    print(f"member down reached the API {shown - noticed:.2f}s after HAProxy said so")
    assert shown - noticed < 2.0, f"member down reached the API {shown - noticed:.1f}s late"
    assert served_by(client, url, 20) == {"web1": 10, "web3": 10}

    backends[1].start()
    stack.wait_operating(lb["id"], "ONLINE")
    assert set(served_by(client, url, 30)) == {"web1", "web2", "web3"}
    stats = stack.tenant.get(f"/v2/lbaas/loadbalancers/{lb['id']}/stats").json()["stats"]
    assert stats["total_connections"] > 0 and stats["bytes_out"] > 0


def haproxy_said(stack: Stack, words: str) -> float:
    """When rsyslogd received the first HAProxy admin line holding `words` (unix time)."""
    for log in stack.agents[0].dir.glob("logs/*/admin.log"):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if words in record["message"]:
                return float(record["ts"])
    raise AssertionError(f"HAProxy never said {words!r}")


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
