"""Agent integration: real HAProxy in a namespace serving real traffic from the lab."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
from agent_support import AgentHarness, LBConfig, Member, wait_for

from openha.agent.haproxy import HAProxyInstance
from openha.agent.paths import instance_paths, namespace_name
from openha.agent.procs import pid_alive
from openha.lab import BackendServer, ClientNamespace, Lab

pytestmark = pytest.mark.integration


def haproxy_of(agent_dir: Path, lb: LBConfig) -> HAProxyInstance:
    return HAProxyInstance(
        instance_paths(agent_dir, lb.instance_id), namespace_name(lb.instance_id)
    )


def servers_hit(client: ClientNamespace, url: str, n: int) -> collections.Counter[str]:
    return collections.Counter(client.request(url).json()["server"] for _ in range(n))


class TrafficLoop:
    """Sequential requests from the client namespace until stopped; counts failures."""

    def __init__(self, client: ClientNamespace, url: str) -> None:
        self.client, self.url = client, url
        self.ok = 0
        self.failures: list[str] = []
        self.servers: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.client.request(self.url, timeout=5)
                if resp.status == 200:
                    self.ok += 1
                    self.servers[resp.json()["server"]] += 1
                else:
                    self.failures.append(f"HTTP {resp.status}")
            except OSError as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> TrafficLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_traffic_reaches_vip_and_round_robins(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    resp = agent.put(lb.spec(lab, agent.agent_dir, 1))
    assert resp.status_code == 200, resp.text
    status = resp.json()
    assert status["state"] == "ACTIVE"
    assert status["applied_generation"] == 1
    assert status["haproxy_running"] and status["haproxy_pid"]
    hits = servers_hit(client, f"http://{lb.vip}/", 30)
    assert hits == {"web1": 10, "web2": 10, "web3": 10}
    status = agent.status(lb.instance_id)
    assert set(status["members"]) == {m.id for m in lb.members}
    assert status["listeners"][lb.listener_id]["total_connections"] >= 30
    assert status["pools"][lb.pool_id] == "UP"
    # The same generation again is a quick no-op: the same process serves on.
    proc = haproxy_of(agent.agent_dir, lb)
    before = proc.processes()
    assert before == [status["haproxy_pid"]]  # one process per instance, no master
    started = time.monotonic()
    resp = agent.put(lb.spec(lab, agent.agent_dir, 1))
    assert resp.status_code == 200
    assert time.monotonic() - started < 0.5
    assert proc.processes() == before


def test_bad_config_is_rejected_and_old_config_keeps_serving(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    assert agent.put(lb.spec(lab, agent.agent_dir, 1)).status_code == 200
    proc = haproxy_of(agent.agent_dir, lb)
    good_config = proc.current_config()
    before = proc.processes()
    lb.extra_frontend = ["bogus-keyword 42"]
    resp = agent.put(lb.spec(lab, agent.agent_dir, 2))
    assert resp.status_code == 422, resp.text
    status = resp.json()
    assert status["state"] == "ERROR"
    assert "bogus-keyword" in status["last_error"]
    assert "ALERT" not in status["last_error"]  # the noisy prefix is stripped
    assert (status["applied_generation"], status["desired_generation"]) == (1, 2)
    # Untouched: same processes, same config file, still serving.
    assert proc.current_config() == good_config
    assert proc.processes() == before
    assert servers_hit(client, f"http://{lb.vip}/", 3) == {"web1": 1, "web2": 1, "web3": 1}
    assert agent.status(lb.instance_id)["state"] == "ERROR"
    # A good config afterwards clears the error.
    lb.extra_frontend = ["http-response set-header X-Gen 3"]
    resp = agent.put(lb.spec(lab, agent.agent_dir, 3))
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "ACTIVE" and resp.json()["last_error"] is None
    assert client.request(f"http://{lb.vip}/").headers["x-gen"] == "3"
    # An older generation is refused outright.
    assert agent.put(lb.spec(lab, agent.agent_dir, 2)).status_code == 409


def test_reloads_lose_no_request(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    assert agent.put(lb.spec(lab, agent.agent_dir, 1)).status_code == 200
    proc = haproxy_of(agent.agent_dir, lb)
    serving = [proc.pid()]
    url = f"http://{lb.vip}/"
    with TrafficLoop(client, url) as loop, TrafficLoop(client, url) as loop2:
        wait_for(lambda: loop.ok > 20 and loop2.ok > 20)
        for generation in range(2, 7):
            lb.extra_frontend = [f"http-response set-header X-Gen {generation}"]
            resp = agent.put(lb.spec(lab, agent.agent_dir, generation))
            assert resp.status_code == 200, resp.text
            serving.append(resp.json()["haproxy_pid"])
            start = loop.ok
            wait_for(lambda s=start: loop.ok > s + 30)
    total = loop.ok + loop2.ok
    assert loop.failures == [] and loop2.failures == [], (loop.failures, loop2.failures)
    assert total > 300
    # Every change really reloaded: a new process each time, the old ones gone.
    assert len(set(serving)) == 6 and proc.pid() == serving[-1]
    wait_for(lambda: proc.processes() == [serving[-1]])
    assert client.request(url).headers["x-gen"] == "6"


def test_killed_haproxy_is_restarted_within_a_second(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    """SIGKILL the serving HAProxy: the exit watcher hears it, a new one serves in < 1.5 s."""
    assert agent.put(lb.spec(lab, agent.agent_dir, 1)).status_code == 200
    proc = haproxy_of(agent.agent_dir, lb)
    url = f"http://{lb.vip}/"
    for _ in range(3):
        victim = proc.pid()
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        def serving_again(old: int = victim) -> bool:
            pid = proc.pid()
            if pid is None or pid == old:
                return False
            try:
                return client.request(url, timeout=0.5).status == 200
            except OSError:
                return False

        wait_for(serving_again, timeout=5, interval=0.01)
        back_after = time.monotonic() - killed_at
        print(f"HAProxy SIGKILLed, a new one serving after {back_after * 1000:.0f} ms")
        assert back_after < 1.5, f"a dead HAProxy was back only after {back_after:.2f} s"
        assert not pid_alive(victim)
    wait_for(lambda: agent.status(lb.instance_id)["state"] == "ACTIVE", timeout=5)
    assert agent.status(lb.instance_id)["haproxy_pid"] == proc.pid()
    assert len(servers_hit(client, url, 6)) == 3


def test_agent_restart_adopts_running_haproxy(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    assert agent.put(lb.spec(lab, agent.agent_dir, 1)).status_code == 200
    proc = haproxy_of(agent.agent_dir, lb)
    serving = proc.pid()
    with TrafficLoop(client, f"http://{lb.vip}/") as loop:
        wait_for(lambda: loop.ok > 20)
        agent.stop()
        stopped = loop.ok
        wait_for(lambda: loop.ok > stopped + 50)  # serving with no agent at all
        agent.start()
        status = agent.status(lb.instance_id)
        restarted = loop.ok
        wait_for(lambda: loop.ok > restarted + 50)
    assert loop.failures == []
    assert status["haproxy_pid"] == serving
    assert (status["state"], status["applied_generation"]) == ("ACTIVE", 1)
    assert proc.processes() == [serving]  # traffic was never touched: no reload
    # The adopted instance is fully managed again.
    lb.extra_frontend = ["http-response set-header X-Gen 2"]
    assert agent.put(lb.spec(lab, agent.agent_dir, 2)).status_code == 200
    assert client.request(f"http://{lb.vip}/").headers["x-gen"] == "2"


def test_member_only_change_uses_runtime_api(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig, backends: list
) -> None:
    assert agent.put(lb.spec(lab, agent.agent_dir, 1)).status_code == 200
    proc = haproxy_of(agent.agent_dir, lb)
    before = proc.pid()
    url = f"http://{lb.vip}/"
    # web1 to maintenance, web2 heavier, web3 moved to a new address (a 4th backend).
    spare = BackendServer(lab, "web4")
    lb.members[0].disabled = True
    lb.members[1].weight = 3
    lb.members[2].address = spare.address
    resp = agent.put(lb.spec(lab, agent.agent_dir, 2))
    assert resp.status_code == 200, resp.text
    assert proc.processes() == [before]  # no reload: the same process took the changes
    assert resp.json()["members"][lb.members[0].id] == "MAINT"
    assert proc.current_config() == lb.config(agent.agent_dir)  # written for later restarts
    hits = servers_hit(client, url, 40)
    assert hits == {"web2": 30, "web4": 10}
    # Adding a server is not a runtime change: that one reloads.
    lb.members[0].disabled = False
    lb.members.append(Member(str(uuid.uuid4()), backends[2].address))
    assert agent.put(lb.spec(lab, agent.agent_dir, 3)).status_code == 200
    assert proc.pid() != before
    assert set(servers_hit(client, url, 12)) == {"web1", "web2", "web3", "web4"}
