"""Moving load balancers between hosts under a steady client loop: not one request lost.

Real agents, real HAProxy and keepalived in namespaces on a lab bridge; every
request of the loop is counted (a fresh connection each), before, during and
after the move. Covers migrate (SINGLE and ACTIVE_STANDBY), a drain of a host
carrying several LBs, and a controller restarted in the middle of a migration.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from lbhelpers import TrafficLoop, flavor, http_lb
from pyroute2 import IPRoute, netns
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


def _echo_lb(stack: Stack, echo: BackendServer, **lb_body: Any) -> dict[str, Any]:
    """A TCP listener on port 7000 in front of one echo backend, no health monitor."""
    lb = stack.create(
        "loadbalancers", "loadbalancer", {"vip_subnet_id": stack.subnet_id, **lb_body}
    )
    li = stack.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 7000},
    )
    po = stack.create(
        "pools",
        "pool",
        {"listener_id": li["id"], "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"},
    )
    stack.create(
        f"pools/{po['id']}/members",
        "member",
        {"address": echo.ip, "protocol_port": echo.port, "name": echo.name},
    )
    stack.wait_active(lb["id"])
    return lb


def _vip_mac(vip: str) -> str:
    """Where this thread's namespace sends packets for `vip` now (its ARP entry)."""
    with IPRoute() as ipr:
        for entry in ipr.get_neighbours(dst=vip):
            return str(entry.get("NDA_LLADDR") or "")
    return ""


@pytest.mark.parametrize("topology", ["SINGLE", "ACTIVE_STANDBY"])
def test_a_connection_open_across_the_switch_is_handed_back_to_the_old_instance(
    stack: Stack, lab: Lab, topology: str
) -> None:
    """The VIP moves while a TCP connection is open: its segments, which now reach the new
    instance (a pair: the surviving half), are handed back to the old one, which keeps
    serving it until it is removed. Without the hand-off, the new instance's kernel
    resets it at its first segment."""
    echo = BackendServer(lab, "echo", kind="echo", port=7001)
    body = {}
    if topology == "ACTIVE_STANDBY":
        body["flavor_id"] = flavor(stack, "pair", {"loadbalancer_topology": topology})
    lb = _echo_lb(stack, echo, **body)
    client = ClientNamespace(lab)
    if topology == "ACTIVE_STANDBY":
        wait_for(lambda: healthy_pair(stack, lb["id"]), 30, what="a healthy pair")
    home = hosts_of(stack, lb["id"])
    target = next(a for a in stack.agents if a.host_id not in home)
    done = threading.Event()
    # (seconds since the first exchange, the VIP's MAC as the client sees it, error or "")
    log: list[tuple[float, str, str]] = []

    def converse() -> None:
        netns.setns(client.namespace, flags=0)  # this thread only
        started = time.monotonic()
        with socket.create_connection((lb["vip_address"], 7000), timeout=5) as sock:
            n = 0
            while not done.is_set():
                n += 1
                mac = _vip_mac(lb["vip_address"])
                try:
                    sock.sendall(b"ping %d\n" % n)
                    got = b""
                    while not got.endswith(b"\n"):
                        chunk = sock.recv(64)
                        if not chunk:
                            raise ConnectionError("closed")
                        got += chunk
                    error = "" if got == b"ping %d\n" % n else f"got {got!r}"
                except OSError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                log.append((round(time.monotonic() - started, 2), mac, error))
                if error:
                    return
                time.sleep(0.05)

    talking = threading.Thread(target=converse, name="echo-conversation", daemon=True)
    talking.start()
    wait_for(lambda: len(log) >= 5, 10, what="the echo conversation")
    op = finished(stack, migrate(stack, lb["id"], target.name), timeout=90)
    done.set()
    talking.join(timeout=10)
    assert op["state"] == "SUCCEEDED", op
    assert target.host_id in hosts_of(stack, lb["id"])
    assert log and not log[0][2], log[:3]
    first_mac = log[0][1]
    after_switch = [(t, err) for t, mac, err in log if mac and mac != first_mac]
    served = [t for t, err in after_switch if not err]
    # The old instance drains for OPENHA_MIGRATE_DRAIN_TIMEOUT (3 s) after the switch:
    # the connection lives on through the new instance for most of it.
    assert len(served) >= 20, f"{len(served)} exchanges after the switch; {log[-3:]}"
    assert not any(err for _, mac, err in log if mac == first_mac), log
    # The old instance removed, its successors drop the hand-off and its table.
    wait_for(lambda: _handoffs(stack, lb["id"]) == [{"to": None, "table": False}] * len(home),
             20, what="no hand-off left")  # fmt: skip


def _handoffs(stack: Stack, lb_id: str) -> list[dict[str, Any]]:
    """Each instance's connection hand-off, as its agent's diagnostics read it."""
    resp = stack.admin.get(f"/v2/manage/loadbalancers/{lb_id}/diagnostics")
    assert resp.status_code == 200, resp.text
    return [
        (i.get("live") or {}).get("plumbing", {}).get("handoff")
        for i in resp.json()["diagnostics"]["instances"]
    ]


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
