"""Moving load balancers between hosts under a steady client loop: not one request lost.

Real agents, real HAProxy and keepalived in namespaces on a lab bridge; every
request of the loop is counted (a fresh connection each), before, during and
after the move. Covers migrate (SINGLE and ACTIVE_STANDBY), a drain of a host
carrying several LBs, and a controller restarted in the middle of a migration.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from lbhelpers import TrafficLoop, flavor, http_lb
from stack import Stack, wait_for

from openha.controller.reconciler import Reconciler
from openha.lab import BackendServer, ClientNamespace, Lab

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("OPENHA_MIGRATE_DRAIN_TIMEOUT", "3")
    monkeypatch.setenv("OPENHA_DRAIN_CONCURRENCY", "2")
    stack = Stack(lab, host_down_after=5.0)
    try:
        stack.add_agents(3)
        yield stack
    finally:
        stack.close()


def instances(stack: Stack, lb_id: str) -> list[dict[str, Any]]:
    resp = stack.admin.get("/v2/manage/instances", params={"load_balancer_id": lb_id})
    return list(resp.json()["instances"])


def hosts_of(stack: Stack, lb_id: str) -> set[str]:
    return {i["host_id"] for i in instances(stack, lb_id)}


def finished(stack: Stack, location: str, timeout: float = 60) -> dict[str, Any]:
    def over() -> dict[str, Any] | None:
        op = stack.admin.get(location).json()["operation"]
        return op if op["state"] in ("SUCCEEDED", "FAILED") else None

    return dict(wait_for(over, timeout, what=f"operation {location} finished"))


def migrate(stack: Stack, lb_id: str, host: str) -> str:
    resp = stack.admin.post(f"/v2/manage/loadbalancers/{lb_id}/migrate", json={"host": host})
    assert resp.status_code == 202, resp.text
    return str(resp.headers["Location"])


def healthy_pair(stack: Stack, lb_id: str) -> list[dict[str, Any]] | None:
    insts = instances(stack, lb_id)
    states = sorted(i["vrrp_state"] or "" for i in insts)
    running = all(i["haproxy_running"] for i in insts)
    return insts if len(insts) == 2 and running and states == ["BACKUP", "MASTER"] else None


def test_migrate_single_loses_no_request(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    lb = http_lb(stack, backends)["lb"]
    client = ClientNamespace(lab)
    url = f"http://{lb['vip_address']}/"
    (home,) = hosts_of(stack, lb["id"])
    target = next(a for a in stack.agents if a.host_id != home)
    with TrafficLoop(client, url) as loop:
        loop.wait_requests(50)
        started = time.monotonic()
        op = finished(stack, migrate(stack, lb["id"], target.name))
        took = time.monotonic() - started
        loop.wait_requests(50)
    assert op["state"] == "SUCCEEDED", op
    assert loop.failures == [], f"{len(loop.failures)} of {loop.ok} failed: {loop.failures[:5]}"
    assert hosts_of(stack, lb["id"]) == {target.host_id}
    old = next(a for a in stack.agents if a.host_id == home)
    assert old.instance_dirs() == []
    assert took < 30
    assert stack.lb(lb["id"])["provisioning_status"] == "ACTIVE"


def test_migrate_pair_loses_no_request(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    ha = flavor(stack, "pair", {"loadbalancer_topology": "ACTIVE_STANDBY"})
    lb = http_lb(stack, backends, lb={"flavor_id": ha})["lb"]
    client = ClientNamespace(lab)
    url = f"http://{lb['vip_address']}/"
    before = wait_for(lambda: healthy_pair(stack, lb["id"]), 30, what="a healthy pair")
    target = next(a for a in stack.agents if a.host_id not in {i["host_id"] for i in before})
    with TrafficLoop(client, url) as loop:
        loop.wait_requests(50)
        op = finished(stack, migrate(stack, lb["id"], target.name), timeout=90)
        after = wait_for(lambda: healthy_pair(stack, lb["id"]), 30, what="pair whole again")
        loop.wait_requests(50)
    assert op["state"] == "SUCCEEDED", op
    assert loop.failures == [], f"{len(loop.failures)} of {loop.ok} failed: {loop.failures[:5]}"
    assert not {i["id"] for i in before} & {i["id"] for i in after}
    master = next(i for i in after if i["vrrp_state"] == "MASTER")
    assert master["host_id"] == target.host_id


def test_drain_moves_every_lb_and_loses_no_request(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    lbs = [http_lb(stack, backends, hm=False)["lb"] for _ in range(4)]
    client = ClientNamespace(lab)
    counts: dict[str, int] = {}
    for lb in lbs:
        for h in hosts_of(stack, lb["id"]):
            counts[h] = counts.get(h, 0) + 1
    busiest = max(counts, key=lambda h: counts[h])
    drained = next(a for a in stack.agents if a.host_id == busiest)
    assert stack.admin.delete(f"/v2/manage/hosts/{busiest}").status_code == 409
    loops = [TrafficLoop(client, f"http://{lb['vip_address']}/", pause=0.02) for lb in lbs]
    for loop in loops:
        loop.start()
    try:
        for loop in loops:
            loop.wait_requests(20)
        resp = stack.admin.post(f"/v2/manage/hosts/{busiest}/drain")
        assert resp.status_code == 202, resp.text
        op = finished(stack, resp.headers["Location"], timeout=120)
        for loop in loops:
            loop.wait_requests(20)
    finally:
        for loop in loops:
            loop.stop()
    assert op["state"] == "SUCCEEDED", op
    lost = [f for loop in loops for f in loop.failures]
    assert lost == [], f"{len(lost)} failed: {lost[:5]}"
    host = stack.admin.get(f"/v2/manage/hosts/{busiest}").json()["host"]
    assert (host["admin_state"], host["instance_count"]) == ("DRAINED", 0)
    assert all(busiest not in hosts_of(stack, lb["id"]) for lb in lbs)
    assert drained.instance_dirs() == []


def test_a_migration_resumes_after_a_controller_restart(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    lb = http_lb(stack, backends)["lb"]
    client = ClientNamespace(lab)
    url = f"http://{lb['vip_address']}/"
    (home,) = hosts_of(stack, lb["id"])
    target = next(a for a in stack.agents if a.host_id != home)
    with TrafficLoop(client, url) as loop:
        loop.wait_requests(20)
        location = migrate(stack, lb["id"], target.name)

        def steps() -> list[str]:
            return [s["step"] for s in stack.admin.get(location).json()["operation"]["steps"]]

        wait_for(lambda: "staged" in steps(), 30, 0.02, what="the new instance staged")
        # The controller goes away mid-operation; a new one (another id) carries on.
        stack.stop_controller.set()
        for thread in list(stack._threads):
            if thread is not stack._api_thread:
                thread.join(timeout=30)
        assert "done" not in steps()
        time.sleep(1)
        stack.stop_controller = threading.Event()
        stack.reconciler = Reconciler(stack.settings, stack.sessions, stack.app.state.providers)
        stack._spawn(stack.reconciler.run, stack.stop_controller)
        op = finished(stack, location)
        loop.wait_requests(20)
    assert op["state"] == "SUCCEEDED", op
    assert loop.failures == [], f"{len(loop.failures)} of {loop.ok} failed: {loop.failures[:5]}"
    assert hosts_of(stack, lb["id"]) == {target.host_id}


def test_drain_of_a_host_carrying_halves_of_pairs(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    """Two pairs and a SINGLE; the host with the most of them is drained: each pair is
    rebuilt on the hosts left (one half at a time), whole again, and every VIP answers
    a steady client loop throughout."""
    ha = flavor(stack, "pair", {"loadbalancer_topology": "ACTIVE_STANDBY"})
    pairs = [http_lb(stack, backends, lb={"flavor_id": ha}, hm=False)["lb"] for _ in range(2)]
    single = http_lb(stack, backends, hm=False)["lb"]
    lbs = [*pairs, single]
    for lb in pairs:
        wait_for(lambda lb=lb: healthy_pair(stack, lb["id"]), 30, what="a healthy pair")
    counts: dict[str, int] = {}
    for lb in lbs:
        for h in hosts_of(stack, lb["id"]):
            counts[h] = counts.get(h, 0) + 1
    busiest = max(counts, key=lambda h: counts[h])
    assert any(busiest in hosts_of(stack, lb["id"]) for lb in pairs)
    drained = next(a for a in stack.agents if a.host_id == busiest)
    client = ClientNamespace(lab)
    loops = [TrafficLoop(client, f"http://{lb['vip_address']}/", pause=0.02) for lb in lbs]
    for loop in loops:
        loop.start()
    try:
        for loop in loops:
            loop.wait_requests(20)
        resp = stack.admin.post(f"/v2/manage/hosts/{busiest}/drain")
        assert resp.status_code == 202, resp.text
        op = finished(stack, resp.headers["Location"], timeout=180)
        after = {
            lb["id"]: wait_for(
                lambda lb=lb: healthy_pair(stack, lb["id"]), 30, what="the pair whole again"
            )
            for lb in pairs
        }
        for loop in loops:
            loop.wait_requests(20)
    finally:
        for loop in loops:
            loop.stop()
    assert op["state"] == "SUCCEEDED", op
    lost = {lb["id"]: loop.failures for lb, loop in zip(lbs, loops, strict=True) if loop.failures}
    assert lost == {}, lost
    for lb_id, insts in after.items():
        assert busiest not in {i["host_id"] for i in insts}, (lb_id, insts)
        assert stack.lb(lb_id)["provisioning_status"] == "ACTIVE"
    assert busiest not in hosts_of(stack, single["id"])
    host = stack.admin.get(f"/v2/manage/hosts/{busiest}").json()["host"]
    assert (host["admin_state"], host["instance_count"]) == ("DRAINED", 0)
    assert drained.instance_dirs() == []
