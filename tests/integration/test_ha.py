"""ACTIVE_STANDBY pairs: VRRP failover, rebuild elsewhere, no flap back, circuit breaker."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lbhelpers import wait_answers
from pyroute2 import netns
from stack import Agent, Stack, wait_for

from openha.agent.haproxy import cli_command
from openha.agent.paths import instance_paths, namespace_name
from openha.lab import BackendServer, ClientNamespace, Lab
from openha.settings import Settings

pytestmark = pytest.mark.integration


class ClientLoop:
    """Requests through the VIP back to back; records every failure and the longest gap."""

    def __init__(self, client: ClientNamespace, url: str) -> None:
        self.client, self.url = client, url
        self.ok = 0
        self.failed = 0
        self.longest_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.is_set():
            try:
                good = self.client.request(self.url, timeout=0.5).status == 200
            except OSError:
                good = False
            now = time.monotonic()
            if good:
                self.ok += 1
                self.longest_gap = max(self.longest_gap, now - last_ok)
                last_ok = now
            else:
                self.failed += 1
                time.sleep(0.02)

    def __enter__(self) -> ClientLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def three_hosts(lab: Lab, host_down_after: float) -> Iterator[Stack]:
    stack = Stack(lab, host_down_after=host_down_after)
    try:
        stack.add_agents(3)
        yield stack
    finally:
        stack.close()


@pytest.fixture
def stack(lab: Lab) -> Iterator[Stack]:
    """Three hosts; a silent one is declared down after 2 s (failovers are what we test)."""
    yield from three_hosts(lab, host_down_after=2.0)


@pytest.fixture
def steady_stack(lab: Lab) -> Iterator[Stack]:
    """Three hosts with the default down delay, for tests where no host dies: on a loaded
    machine the in-process API can take seconds to answer a heartbeat (it waits for the
    database's write lock behind the controller's transactions), and its agent sends the
    next one only then; 2 s of that is not a dead host."""
    yield from three_hosts(lab, host_down_after=Settings.model_fields["host_down_after"].default)


def ha_flavor(stack: Stack) -> str:
    profile = stack.admin.post(
        "/v2/lbaas/flavorprofiles",
        json={
            "flavorprofile": {
                "name": "pair",
                "provider_name": "haproxy",
                "flavor_data": '{"loadbalancer_topology": "ACTIVE_STANDBY"}',
            }
        },
    )
    assert profile.status_code == 201, profile.text
    flavor = stack.admin.post(
        "/v2/lbaas/flavors",
        json={"flavor": {"name": "ha", "flavor_profile_id": profile.json()["flavorprofile"]["id"]}},
    )
    assert flavor.status_code == 201, flavor.text
    return str(flavor.json()["flavor"]["id"])


def ha_lb(stack: Stack, backends: list[BackendServer]) -> dict[str, Any]:
    body = {
        "vip_subnet_id": stack.subnet_id,
        "flavor_id": ha_flavor(stack),
        "name": "pair",
        "listeners": [
            {
                "protocol": "HTTP",
                "protocol_port": 80,
                "default_pool": {
                    "name": "web",
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                    "members": [{"address": b.ip, "protocol_port": b.port} for b in backends],
                    "healthmonitor": {
                        "type": "HTTP",
                        "delay": 1,
                        "timeout": 1,
                        "max_retries": 1,
                        "max_retries_down": 1,
                    },
                },
            }
        ],
    }
    lb = stack.create("loadbalancers", "loadbalancer", body)
    stack.wait_active(lb["id"], timeout=60)
    return lb


def instances(stack: Stack, lb_id: str) -> list[dict[str, Any]]:
    resp = stack.admin.get("/v2/manage/instances", params={"load_balancer_id": lb_id})
    return list(resp.json()["instances"])


def agent_of(stack: Stack, host_id: str) -> Agent:
    return next(a for a in stack.agents if a.host_id == host_id)


def healthy_pair(stack: Stack, lb_id: str) -> list[dict[str, Any]] | None:
    """Both instances running, one MASTER and one BACKUP, on two different UP hosts."""
    insts = instances(stack, lb_id)
    states = sorted(i["vrrp_state"] or "" for i in insts)
    if (
        len(insts) == 2
        and all(i["haproxy_running"] for i in insts)
        and states == ["BACKUP", "MASTER"]
        and insts[0]["host_id"] != insts[1]["host_id"]
    ):
        return insts
    return None


def master(stack: Stack, lb_id: str) -> dict[str, Any]:
    pair = wait_for(lambda: healthy_pair(stack, lb_id), 30, what="a healthy pair")
    return next(i for i in pair if i["vrrp_state"] == "MASTER")


def test_pair_survives_master_host_loss_and_does_not_flap_back(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    lb = ha_lb(stack, backends)
    client = ClientNamespace(lab)
    url = f"http://{lb['vip_address']}/"
    wait_answers(client, url)
    first_master = master(stack, lb["id"])
    survivor = next(i for i in instances(stack, lb["id"]) if i["id"] != first_master["id"])
    dead = agent_of(stack, first_master["host_id"])
    spare = next(
        a for a in stack.agents if a.host_id not in (first_master["host_id"], survivor["host_id"])
    )

    with ClientLoop(client, url) as loop:
        time.sleep(1)
        killed_at = time.monotonic()
        dead.kill_host()

        # The survivor's keepalived takes the VIP; the controller rebuilds on the spare.
        def rebuilt() -> list[dict[str, Any]] | None:
            pair = healthy_pair(stack, lb["id"])
            return pair if pair and dead.host_id not in {i["host_id"] for i in pair} else None

        pair = wait_for(rebuilt, 40, what="pair whole again without the dead host")
        whole_after = time.monotonic() - killed_at
        time.sleep(1)
    assert loop.ok > 50
    assert loop.longest_gap < 3.0, f"clients saw a {loop.longest_gap:.2f}s gap"
    assert {i["host_id"] for i in pair} == {survivor["host_id"], spare.host_id}
    assert next(i for i in pair if i["id"] == survivor["id"])["vrrp_state"] == "MASTER"
    assert whole_after < 30
    events = stack.admin.get("/v2/manage/events", params={"kind": "host.down"}).json()["events"]
    assert [e["host_id"] for e in events] == [dead.host_id]
    # The survivor checked the members throughout: a failover is not a member outage.
    flashes = stack.admin.get(
        "/v2/manage/events",
        params={"load_balancer_id": lb["id"], "kind": "member.operating_status"},
    ).json()["events"]
    assert [e for e in flashes if e["details"].get("to") != "ONLINE"] == [], flashes

    # The old master boots again: it must not take the VIP back, and drops its stale instance.
    with ClientLoop(client, url) as loop:
        dead.revive()
        wait_for(
            lambda: dead.instance_dirs() == [] and dead.data_plane_pids() == [],
            20,
            what="stale instance removed from the returning host",
        )
        time.sleep(2)
    assert loop.failed == 0, f"{loop.failed} requests failed while the old master returned"
    assert master(stack, lb["id"])["id"] == survivor["id"]


def test_killing_master_haproxy_moves_the_vip(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    lb = ha_lb(stack, backends)
    client = ClientNamespace(lab)
    url = f"http://{lb['vip_address']}/"
    wait_answers(client, url)
    before = master(stack, lb["id"])
    agent = agent_of(stack, before["host_id"])
    # Stop the agent first so it cannot restart HAProxy before keepalived notices.
    agent.stop()
    inst_dir = agent.dir / "instances" / before["id"]
    pid = int((inst_dir / "haproxy.pid").read_text().split()[0])
    with ClientLoop(client, url) as loop:
        time.sleep(0.5)
        for victim in (pid, *_children(pid)):
            os.kill(victim, signal.SIGKILL)
        wait_for(lambda: _vip_holder(stack, lb["id"], before["id"]), 15, what="VIP moved")
        time.sleep(1)
    assert loop.longest_gap < 3.0
    agent.start()
    wait_for(lambda: healthy_pair(stack, lb["id"]), 30, what="pair healthy again")
    # With its agent running, the new master's HAProxy dies: the agent's exit watcher
    # tells keepalived (its track file) before restarting it, and the VIP moves back.
    second = master(stack, lb["id"])
    pid = int((agent_of(stack, second["host_id"]).dir / "instances" / second["id"]
               / "haproxy.pid").read_text().split()[0])  # fmt: skip
    with ClientLoop(client, url) as loop:
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _vip_holder(stack, lb["id"], second["id"]), 15, what="VIP moved back")
        time.sleep(1)
    assert loop.longest_gap < 3.0
    wait_for(lambda: healthy_pair(stack, lb["id"]), 30, what="pair healthy at last")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _stick_entries(stack: Stack, instance: dict[str, Any]) -> int:
    """Entries in the stick tables of `instance`'s HAProxy (`show table`'s `used:`)."""
    sock = instance_paths(agent_of(stack, instance["host_id"]).dir, instance["id"]).stats_socket
    try:
        out = cli_command(sock, "show table")
    except OSError:
        return 0
    return sum(
        int(part.split(":")[1])
        for part in out.replace(",", " ").split()
        if part.startswith("used:")
    )


def _vip_holder(stack: Stack, lb_id: str, old_master: str) -> bool:
    insts = instances(stack, lb_id)
    return any(i["id"] != old_master and i["vrrp_state"] == "MASTER" for i in insts)


def test_circuit_breaker_holds_when_most_hosts_vanish(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    lb = stack.create(
        "loadbalancers",
        "loadbalancer",
        {
            "vip_subnet_id": stack.subnet_id,
            "listeners": [
                {
                    "protocol": "HTTP",
                    "protocol_port": 80,
                    "default_pool": {
                        "name": "web",
                        "protocol": "HTTP",
                        "lb_algorithm": "ROUND_ROBIN",
                        "members": [{"address": backends[0].ip, "protocol_port": backends[0].port}],
                    },
                }
            ],
        },
    )
    stack.wait_active(lb["id"])
    (single,) = instances(stack, lb["id"])
    home = agent_of(stack, single["host_id"])
    other = next(a for a in stack.agents if a is not home)
    # One outage: both hosts fall silent in the same instant (their agents first), or the
    # first could be failed over before the second misses a heartbeat, as it should be.
    home.kill_agent()
    other.kill_agent()
    home.kill_host()
    other.kill_host()
    wait_for(
        lambda: stack.admin.get("/v2/manage/events", params={"kind": "failover.paused"}).json()[
            "events"
        ],
        20,
        what="failover paused event",
    )
    time.sleep(3)
    # Nothing was moved to the last host: the instance still belongs to its dead host.
    assert [i["host_id"] for i in instances(stack, lb["id"])] == [home.host_id]
    other.revive()
    # Now one host of three is down: failover resumes and the LB moves.
    wait_for(
        lambda: [i["host_id"] for i in instances(stack, lb["id"])] != [home.host_id],
        30,
        what="instance rebuilt after the breaker closed",
    )
    assert stack.admin.get("/v2/manage/events", params={"kind": "failover.resumed"}).json()[
        "events"
    ]


def test_planned_failover_moves_the_vip_first(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    lb = ha_lb(stack, backends)
    client = ClientNamespace(lab)
    url = f"http://{lb['vip_address']}/"
    wait_answers(client, url)
    before = master(stack, lb["id"])
    with ClientLoop(client, url) as loop:
        time.sleep(0.5)
        resp = stack.admin.put(f"/v2/lbaas/loadbalancers/{lb['id']}/failover")
        assert resp.status_code == 202

        def replaced() -> list[dict[str, Any]] | None:
            pair = healthy_pair(stack, lb["id"])
            return pair if pair and before["id"] not in {i["id"] for i in pair} else None

        wait_for(replaced, 40, what="old master replaced by a new instance")
        time.sleep(1)
    assert loop.longest_gap < 1.5, f"planned failover gap {loop.longest_gap:.2f}s"
    stack.wait_active(lb["id"])
    # Deleting a pair removes both halves and frees its VRRP router id.
    resp = stack.tenant.delete(f"/v2/lbaas/loadbalancers/{lb['id']}", params={"cascade": "true"})
    assert resp.status_code == 204
    wait_for(
        lambda: stack.tenant.get(f"/v2/lbaas/loadbalancers/{lb['id']}").status_code == 404,
        30,
        what="pair deleted",
    )
    assert all(a.instance_dirs() == [] for a in stack.agents)


def test_pair_waits_for_a_second_host(lab: Lab, backends: list[BackendServer]) -> None:
    stack = Stack(lab)
    try:
        stack.add_agent()
        lb = stack.create(
            "loadbalancers",
            "loadbalancer",
            {"vip_subnet_id": stack.subnet_id, "flavor_id": ha_flavor(stack)},
        )
        wait_for(
            lambda: stack.lb(lb["id"])["provisioning_status"] == "ERROR",
            20,
            what="LB in ERROR without a second host",
        )
        events = stack.admin.get(
            "/v2/manage/events", params={"kind": "loadbalancer.no_capacity"}
        ).json()["events"]
        # The operator reads why: the only host already holds the other half.
        assert any(
            "another healthy host" in e["message"]
            and "1 already used by this load balancer" in e["message"]
            for e in events
        )
        stack.add_agent()
        stack.wait_active(lb["id"], timeout=90)
        assert wait_for(lambda: healthy_pair(stack, lb["id"]), 30, what="pair healthy")
    finally:
        stack.close()


def test_stick_table_survives_failover(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    """SOURCE_IP persistence lives in a stick table the pair shares through HAProxy peers."""
    lb = stack.create(
        "loadbalancers",
        "loadbalancer",
        {
            "vip_subnet_id": stack.subnet_id,
            "flavor_id": ha_flavor(stack),
            "listeners": [
                {
                    "protocol": "HTTP",
                    "protocol_port": 80,
                    "default_pool": {
                        "name": "sticky",
                        "protocol": "HTTP",
                        "lb_algorithm": "ROUND_ROBIN",
                        "session_persistence": {"type": "SOURCE_IP"},
                        "members": [{"address": b.ip, "protocol_port": b.port} for b in backends],
                    },
                }
            ],
        },
    )
    stack.wait_active(lb["id"], timeout=60)
    url = f"http://{lb['vip_address']}/"
    clients = [ClientNamespace(lab, name=f"sc{i}") for i in range(6)]
    wait_answers(clients[0], url)
    before = master(stack, lb["id"])
    # Move the master's round robin on by one, so that a peer starting from scratch
    # would pin the same clients differently: only a synced table keeps the mapping.
    clients[0].request(url)
    pinned = {c.ip: c.request(url).json()["server"] for c in clients[1:]}
    assert len(set(pinned.values())) > 1, "round robin should spread new clients"
    # Peers push table updates asynchronously: fail over once the peer holds them all.
    (peer,) = [i for i in instances(stack, lb["id"]) if i["id"] != before["id"]]
    wait_for(lambda: _stick_entries(stack, peer) >= len(clients), 20, what="peer's table synced")
    assert stack.admin.put(f"/v2/lbaas/loadbalancers/{lb['id']}/failover").status_code == 202
    wait_for(lambda: _vip_holder(stack, lb["id"], before["id"]), 30, what="VIP moved")
    after = {c.ip: c.request(url).json()["server"] for c in clients[1:]}
    assert after == pinned


def test_lost_namespace_and_keepalived_are_rebuilt(
    steady_stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    stack = steady_stack
    lb = ha_lb(stack, backends)
    before = master(stack, lb["id"])
    backup = next(i for i in instances(stack, lb["id"]) if i["id"] != before["id"])
    agent = agent_of(stack, backup["host_id"])
    inst_dir = agent.dir / "instances" / backup["id"]
    keepalived_pid = int((inst_dir / "keepalived.pid").read_text().split()[0])
    os.kill(keepalived_pid, signal.SIGKILL)
    netns.remove(namespace_name(backup["id"]))

    def rebuilt() -> bool:
        pair = healthy_pair(stack, lb["id"])
        try:
            new_pid = int((inst_dir / "keepalived.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError):
            return False  # between the agent's stop of the old one and the new one's start
        return (
            bool(pair)
            and namespace_name(backup["id"]) in netns.listnetns()
            and new_pid != keepalived_pid
        )

    wait_for(rebuilt, 30, what="backup namespace and keepalived rebuilt")
    assert master(stack, lb["id"])["id"] == before["id"]
    # Rebuilt in place by its own agent: no host was taken for dead, nothing moved.
    events = stack.admin.get("/v2/manage/events", params={"kind": "host.down"}).json()["events"]
    assert events == []
    assert {i["id"] for i in instances(stack, lb["id"])} == {before["id"], backup["id"]}


def test_an_api_restart_is_not_a_host_failure(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    """The API is away longer than host_down_after while the controller runs: no host is
    declared down, nothing goes ERROR, nothing moves. An agent killed for real afterwards
    is still declared down within seconds."""
    pair = ha_lb(stack, backends)
    single = stack.create(
        "loadbalancers",
        "loadbalancer",
        {
            "vip_subnet_id": stack.subnet_id,
            "listeners": [{"protocol": "TCP", "protocol_port": 81}],
        },
    )
    stack.wait_active(pair["id"])
    stack.wait_active(single["id"])
    assert wait_for(lambda: healthy_pair(stack, pair["id"]), 30, what="pair healthy")
    where = {
        lb: sorted(i["host_id"] for i in instances(stack, lb)) for lb in (pair["id"], single["id"])
    }
    seen = {e["id"] for e in stack.admin.get("/v2/manage/events").json()["events"]}

    stack.stop_api()
    gone = time.monotonic()
    time.sleep(stack.settings.host_down_after * 2 + 2)
    stack.start_api()
    # The controller had every reason to think every host silent; it judged none.
    time.sleep(stack.settings.host_down_after + 2)
    print(f"API away {time.monotonic() - gone:.1f}s")
    events = [
        e for e in stack.admin.get("/v2/manage/events").json()["events"] if e["id"] not in seen
    ]
    bad = [
        e["kind"]
        for e in events
        if e["kind"]
        in (
            "host.down",
            "instance.rescheduled",
            "loadbalancer.apply_failed",
            "loadbalancer.no_capacity",
            "failover.paused",
        )
    ]
    assert bad == [], events
    assert all(a.host_status() == "UP" for a in stack.agents)
    for lb_id, hosts in where.items():
        assert stack.lb(lb_id)["provisioning_status"] == "ACTIVE"
        assert sorted(i["host_id"] for i in instances(stack, lb_id)) == hosts

    # A host that really dies is noticed all the same.
    victim = agent_of(stack, where[single["id"]][0])
    victim.kill_host()
    died = time.monotonic()
    wait_for(lambda: victim.host_status() == "DOWN", 15, what="dead host declared DOWN")
    noticed = time.monotonic() - died
    print(f"dead host declared down after {noticed:.1f}s")
    assert noticed < stack.settings.host_down_after + 3
