"""The data plane keeps serving through changes, bad configs, agent restarts, crashes and
control-plane outages: a client loop counts every failed request while it happens.

One Stack (API, controller, one real agent), lab and set of backends serve the
module; each test builds its own load balancer behind a steady `TrafficLoop` and
an autouse fixture deletes every LB afterwards, even on failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from lbhelpers import TrafficLoop, delete_lb, http_lb, remove, served_by, update, wait_answers
from stack import Agent, Stack, wait_for

from openha.agent.netns import run_in_namespace
from openha.agent.paths import namespace_name
from openha.agent.procs import children_of, pid_alive
from openha.lab import BackendServer, ClientNamespace, Lab

pytestmark = pytest.mark.integration

SQUATTED_PORT = 8081


@dataclass
class World:
    lab: Lab
    stack: Stack
    agent: Agent
    client: ClientNamespace
    web: list[BackendServer]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with Lab() as lab:
        stack = Stack(lab)
        try:
            agent = stack.add_agent()
            web = [BackendServer(lab, f"web{i}") for i in (1, 2, 3)]
            yield World(lab, stack, agent, ClientNamespace(lab, "c1"), web)
        finally:
            stack.close()


@pytest.fixture(autouse=True)
def _delete_lbs(world: World) -> Iterator[None]:
    yield
    stack = world.stack
    for lb in stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]:
        delete_lb(stack, lb["id"])


def serving_lb(world: World) -> tuple[dict[str, Any], str]:
    """An HTTP LB over web1..3 with a health monitor, answering on its VIP."""
    made = http_lb(world.stack, world.web)
    url = f"http://{made['lb']['vip_address']}/"
    wait_answers(world.client, url)
    return made, url


def master_pid(agent: Agent) -> int:
    (instance,) = agent.instance_dirs()
    return int((instance / "haproxy.pid").read_text().split()[0])


def recent(loop: TrafficLoop, n: int = 40) -> Counter[str]:
    """Which backends served the next `n` requests of the loop."""
    before = Counter(loop.served)
    loop.wait_requests(n)
    return loop.served - before


def no_failures(loop: TrafficLoop) -> str:
    return f"{len(loop.failures)} failed of {loop.ok + len(loop.failures)}: {loop.failures[:5]}"


def test_member_changes_lose_no_request(world: World) -> None:
    """Weights, disable/enable, remove/add and a batch update: runtime API and reloads alike."""
    stack = world.stack
    made, url = serving_lb(world)
    lb_id, pool_id = made["lb"]["id"], made["pool"]["id"]
    members = {m["name"]: m["id"] for m in made["members"]}
    web3 = world.web[2]

    def member(name: str, **body: Any) -> None:
        update(stack, f"pools/{pool_id}/members/{members[name]}", "member", body)
        stack.wait_active(lb_id)

    with TrafficLoop(world.client, url) as loop:
        loop.wait_requests(30)
        member("web1", weight=5)
        member("web2", admin_state_up=False)
        seen = recent(loop)
        assert "web2" not in seen and seen["web1"] > seen["web3"], seen
        member("web2", admin_state_up=True)
        assert "web2" in recent(loop)

        remove(stack, f"pools/{pool_id}/members/{members.pop('web3')}")
        stack.wait_active(lb_id)
        assert "web3" not in recent(loop)
        new = stack.create(
            f"pools/{pool_id}/members",
            "member",
            {"address": web3.ip, "protocol_port": web3.port, "name": "web3"},
        )
        members["web3"] = new["id"]
        stack.wait_active(lb_id)
        assert "web3" in recent(loop, 60)

        # The batch update replaces the whole member list: web2 goes, the others stay.
        batch = [
            {"address": b.ip, "protocol_port": b.port, "name": b.name, "weight": 1}
            for b in (world.web[0], web3)
        ]
        resp = stack.tenant.put(f"/v2/lbaas/pools/{pool_id}/members", json={"members": batch})
        assert resp.status_code == 202, resp.text
        stack.wait_active(lb_id)
        seen = recent(loop)
        assert set(seen) == {"web1", "web3"}, seen
        loop.wait_requests(30)
    assert loop.ok > 300
    assert loop.failures == [], no_failures(loop)


def test_rejected_config_keeps_the_old_one_serving(world: World) -> None:
    """A config HAProxy cannot load: ERROR with the reason, traffic unharmed, fixed by removal.

    Everything the API accepts renders into a config `haproxy -c` accepts (regexes are
    judged by HAProxy's own PCRE2), so the failure comes from the host: something else
    holds the port the new listener needs, and the new worker cannot bind it.
    """
    stack, admin = world.stack, world.stack.admin
    made, url = serving_lb(world)
    lb_id, vip = made["lb"]["id"], made["lb"]["vip_address"]
    (inst,) = admin.get("/v2/manage/instances", params={"load_balancer_id": lb_id}).json()[
        "instances"
    ]
    squatter = run_in_namespace(
        namespace_name(inst["id"]), lambda: socket.create_server((vip, SQUATTED_PORT))
    )
    try:
        with TrafficLoop(world.client, url) as loop:
            listener = stack.create(
                "listeners",
                "listener",
                {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": SQUATTED_PORT},
            )
            wait_for(
                lambda: stack.lb(lb_id)["provisioning_status"] == "ERROR", 30, what="LB in ERROR"
            )
            (inst,) = admin.get("/v2/manage/instances", params={"load_balancer_id": lb_id}).json()[
                "instances"
            ]
            assert str(SQUATTED_PORT) in (inst["last_error"] or ""), inst
            events = admin.get(
                "/v2/manage/events",
                params={"load_balancer_id": lb_id, "kind": "loadbalancer.apply_failed"},
            ).json()["events"]
            assert events and events[0]["severity"] == "ERROR", events
            # The last good config serves on, and keeps doing so while the controller retries.
            loop.wait_requests(100)
            assert stack.lb(lb_id)["provisioning_status"] == "ERROR"

            remove(stack, f"listeners/{listener['id']}")
            stack.wait_active(lb_id)
            loop.wait_requests(50)
    finally:
        squatter.close()
    assert loop.failures == [], no_failures(loop)
    (inst,) = admin.get("/v2/manage/instances", params={"load_balancer_id": lb_id}).json()[
        "instances"
    ]
    assert inst["last_error"] is None, inst
    recovered = admin.get(
        "/v2/manage/events", params={"load_balancer_id": lb_id, "kind": "loadbalancer.recovered"}
    ).json()["events"]
    assert recovered, "recovery must be reported"


def test_agent_restart_keeps_haproxy_and_traffic(world: World) -> None:
    """Stopping and starting the agent leaves HAProxy alone; the new agent adopts it."""
    stack, agent = world.stack, world.agent
    made, url = serving_lb(world)
    lb_id, pool_id = made["lb"]["id"], made["pool"]["id"]
    master = master_pid(agent)
    with TrafficLoop(world.client, url) as loop:
        agent.stop()
        loop.wait_requests(50)
        assert pid_alive(master)
        restarted = time.time()
        agent.start()
        wait_for(lambda: agent.heartbeat_after(restarted), 15, what="the new agent reporting")
        loop.wait_requests(50)
        assert master_pid(agent) == master  # adopted, not restarted
        # The adopted HAProxy still takes changes: a reload (member removed) and the
        # runtime API (member disabled).
        names = {m["name"]: m["id"] for m in made["members"]}
        remove(stack, f"pools/{pool_id}/members/{names['web3']}")
        update(stack, f"pools/{pool_id}/members/{names['web2']}", "member", {"weight": 0})
        stack.wait_active(lb_id)
        seen = recent(loop)
        assert set(seen) == {"web1"}, seen
    assert loop.failures == [], no_failures(loop)
    assert pid_alive(master_pid(agent))


def test_killed_haproxy_comes_back(world: World) -> None:
    """SIGKILL to HAProxy (and any children): the agent restarts it within seconds."""
    stack, agent, client = world.stack, world.agent, world.client
    made, url = serving_lb(world)
    lb_id = made["lb"]["id"]
    stack.wait_operating(lb_id, "ONLINE")
    master = master_pid(agent)
    victims = [master, *children_of(master)]
    assert pid_alive(master)
    with TrafficLoop(world.client, url, timeout=2) as loop:
        loop.wait_requests(20)
        killed_at = time.monotonic()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):  # a worker may follow its master
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(pid_alive(p) for p in victims), 5, what="victims dead")
        wait_for(lambda: loop.failures, 10, what="the outage to show")
        loop.wait_requests(20, timeout=30)
        back_after = time.monotonic() - killed_at
    assert back_after < 15, f"traffic back only after {back_after:.1f}s"
    new_master = master_pid(agent)
    assert new_master not in victims and pid_alive(new_master)
    stack.wait_operating(lb_id, "ONLINE")
    assert set(served_by(client, url, 9)) == {"web1", "web2", "web3"}
    print(f"traffic back {back_after:.1f}s after the kill; {len(loop.failures)} failed requests")


def test_agent_away_long_enough_to_be_declared_down(world: World) -> None:
    """The only host's agent is gone past host_down_after: HAProxy and traffic are untouched,
    and once the agent is back the load balancer returns to ACTIVE by itself."""
    stack, agent = world.stack, world.agent
    made, url = serving_lb(world)
    lb_id = made["lb"]["id"]
    master = master_pid(agent)
    with TrafficLoop(world.client, url) as loop:
        agent.stop()
        wait_for(lambda: agent.host_status() == "DOWN", 15, what="host declared DOWN")
        loop.wait_requests(50)
        agent.start()
        loop.wait_requests(50)
    assert loop.failures == [], no_failures(loop)
    assert master_pid(agent) == master
    stack.wait_operating(lb_id, "ONLINE")
    # The failover attempted meanwhile failed ("No capacity") and left ERROR; the
    # controller retries failed LBs, so it settles back to ACTIVE by itself.
    stack.wait_active(lb_id, timeout=15)


def test_control_plane_outage_keeps_traffic(world: World) -> None:
    """API and controller gone: the data plane serves on; back, they converge again, and
    the hosts' silence during the outage is no host failure (issue 13.2): no host goes
    DOWN, no load balancer ERROR, nothing moves."""
    stack = world.stack
    made, url = serving_lb(world)
    lb_id, pool_id = made["lb"]["id"], made["pool"]["id"]
    master = master_pid(world.agent)
    seen = {e["id"] for e in stack.admin.get("/v2/manage/events").json()["events"]}
    with TrafficLoop(world.client, url) as loop:
        stack.stop_control_plane()
        try:
            with pytest.raises(httpx.TransportError):
                httpx.get(stack.url + "/", timeout=2)
            # Longer than host_down_after: heartbeats fail, nobody is there to notice.
            outage_start = loop.ok
            time.sleep(stack.settings.host_down_after + 2)
            assert loop.ok - outage_start > 50
        finally:
            stack.start_control_plane()
        loop.wait_requests(30)
        # Long enough for a controller that took the silence for a failure to act on it.
        time.sleep(stack.settings.host_down_after + 2)
        assert world.agent.host_status() == "UP"
        assert stack.lb(lb_id)["provisioning_status"] == "ACTIVE"
        kinds = [
            e["kind"]
            for e in stack.admin.get("/v2/manage/events").json()["events"]
            if e["id"] not in seen
        ]
        assert not {"host.down", "instance.rescheduled", "loadbalancer.no_capacity"} & set(kinds), (
            kinds
        )
        member = made["members"][1]["id"]
        update(stack, f"pools/{pool_id}/members/{member}", "member", {"admin_state_up": False})
        stack.wait_active(lb_id)
        assert "web2" not in recent(loop)
    assert loop.failures == [], no_failures(loop)
    assert master_pid(world.agent) == master
    assert Path(f"/proc/{master}").exists()
