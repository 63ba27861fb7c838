"""Agent faults: a real agent process SIGKILLed at the worst moments, then restarted.

Each test starts `run_agent` in its own process with `OPENHA_AGENT_CRASH_AT` naming a
crash point (see `openha.agent.faults`), lets it die there, starts it again and checks
that what HAProxy serves is what the agent says and what the controller wants.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from agent_support import AgentProcess, FakeAPI, LBConfig, Member, wait_for

from openha.agent import faults
from openha.agent.haproxy import HAProxyInstance
from openha.agent.netns import namespace_exists, namespace_pids
from openha.agent.paths import instance_paths, namespace_name
from openha.lab import BackendServer, ClientNamespace, Lab

pytestmark = pytest.mark.integration


@pytest.fixture
def agent_proc(agent_dir: Path) -> Iterator[AgentProcess]:
    proc = AgentProcess(agent_dir)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def pair_lb(lab: Lab, backends: list[BackendServer]) -> LBConfig:
    """Two members only, so disabling both leaves nothing to serve (503)."""
    return LBConfig(
        instance_id=str(uuid.uuid4()),
        vip=lab.allocate_ip(),
        instance_ip=lab.allocate_ip(),
        members=[Member(str(uuid.uuid4()), b.address) for b in backends[:2]],
    )


def crash_while_applying(agent: AgentProcess, lb: LBConfig, lab: Lab, point: str) -> None:
    """Apply generation 1, then die at `point` while applying 2 (both members disabled)."""
    agent.spawn()
    assert agent.put(lb.spec(lab, agent.agent_dir, 1)).status_code == 200
    agent.stop()
    agent.spawn(crash_at=point)
    for member in lb.members:
        member.disabled = True
    with pytest.raises(httpx.TransportError):
        agent.put(lb.spec(lab, agent.agent_dir, 2))
    assert agent.wait_exit() == -signal.SIGKILL
    agent.proc = None


def test_killed_after_config_swap_before_runtime_commands(
    lab: Lab, agent_proc: AgentProcess, client: ClientNamespace, pair_lb: LBConfig
) -> None:
    """Issue 13.1: the file said 'disabled', HAProxy still served, and a re-push was a no-op."""
    url = f"http://{pair_lb.vip}/"
    crash_while_applying(agent_proc, pair_lb, lab, faults.HAPROXY_CONFIG_WRITTEN)
    agent_proc.spawn()
    # What the agent reports is what runs: generation 1, both members serving.
    status = agent_proc.status(pair_lb.instance_id)
    assert status["applied_generation"] == 1, status
    assert client.request(url).status == 200
    # The controller sees generation 1 and pushes generation 2 again: it must take.
    resp = agent_proc.put(pair_lb.spec(lab, agent_proc.agent_dir, 2))
    assert resp.status_code == 200, resp.text
    assert resp.json()["members"] == {m.id: "MAINT" for m in pair_lb.members}
    assert client.request(url).status == 503


def test_killed_after_runtime_commands_before_recording_them(
    lab: Lab, agent_proc: AgentProcess, client: ClientNamespace, pair_lb: LBConfig
) -> None:
    """HAProxy took the change but the agent died before recording it: on restart the
    agent must not trust its record (generation 1), nor leave HAProxy at generation 2."""
    url = f"http://{pair_lb.vip}/"
    crash_while_applying(agent_proc, pair_lb, lab, faults.HAPROXY_CHANGES_SENT)
    assert client.request(url).status == 503  # the runtime commands did take
    agent_proc.spawn()
    assert agent_proc.status(pair_lb.instance_id)["applied_generation"] == 1
    with agent_proc.client() as api:
        wait_for(lambda: api.get("/v1/healthz").json()["adopting"] == 0)
    # Generation 1 applied again: both members serve, as the agent reports.
    assert client.request(url).status == 200
    # The controller pushes generation 3, the same as 1: a no-op that must be true.
    for member in pair_lb.members:
        member.disabled = False
    resp = agent_proc.put(pair_lb.spec(lab, agent_proc.agent_dir, 3))
    assert resp.status_code == 200, resp.text
    assert set(resp.json()["members"].values()) == {"NO_CHECK"}
    assert client.request(url).status == 200


def test_killed_mid_delete_never_serves_again(
    lab: Lab, agent_dir: Path, client: ClientNamespace, lb: LBConfig, fake_api: FakeAPI
) -> None:
    """Issue 13.3: a restarted agent must not bring back what the controller no longer wants."""
    fake_api.wanted = [lb.instance_id]
    agent = AgentProcess(agent_dir, api_url=fake_api.url)
    ns = namespace_name(lb.instance_id)
    paths = instance_paths(agent_dir, lb.instance_id)
    haproxy = HAProxyInstance(paths, ns)
    try:
        agent.spawn()
        assert agent.put(lb.spec(lab, agent_dir, 1)).status_code == 200
        assert client.request(f"http://{lb.vip}/").status == 200
        agent.stop()
        agent.spawn(crash_at=faults.DELETE_HAPROXY_STOPPED)
        with pytest.raises(httpx.TransportError), agent.client() as api:
            api.delete(f"/v1/instances/{lb.instance_id}")
        assert agent.wait_exit() == -signal.SIGKILL
        agent.proc = None
        assert haproxy.running() is False and paths.instance_dir.exists() and namespace_exists(ns)
        # Meanwhile the controller forgot the instance; its VIP may soon be someone else's.
        fake_api.wanted = []
        agent.spawn(wait=False)
        never_serves_until_removed(haproxy, paths.instance_dir)
        with pytest.raises(OSError):
            client.request(f"http://{lb.vip}/", timeout=1)
    finally:
        agent.stop()


def never_serves_until_removed(haproxy: HAProxyInstance, instance_dir: Path) -> None:
    """Watch, every 10 ms, that nothing runs in the instance's namespace until it is gone."""
    deadline = time.monotonic() + 20
    while instance_dir.exists() or namespace_exists(haproxy.namespace):
        assert not haproxy.running(), "the restarted agent brought HAProxy back"
        assert namespace_pids(haproxy.namespace) == [], "something runs in the namespace"
        assert time.monotonic() < deadline, "the unwanted instance was never removed"
        time.sleep(0.01)


def test_stopped_haproxy_waits_for_the_controller(
    lab: Lab, agent_dir: Path, client: ClientNamespace, lb: LBConfig, fake_api: FakeAPI
) -> None:
    """A HAProxy found stopped at start comes back only once the controller confirms it."""
    fake_api.wanted = [lb.instance_id]
    agent = AgentProcess(agent_dir, api_url=fake_api.url)
    paths = instance_paths(agent_dir, lb.instance_id)
    haproxy = HAProxyInstance(paths, namespace_name(lb.instance_id))
    url = f"http://{lb.vip}/"

    def killed_while_the_agent_is_away() -> None:
        agent.stop()
        pid = haproxy.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # Gone from the namespace, not merely "not running": a killed process loses its
        # command line (exit_mm) before it leaves its namespaces, and on a busy machine
        # the watch below would catch it in between.
        wait_for(lambda: pid not in namespace_pids(haproxy.namespace))

    try:
        agent.spawn()
        assert agent.put(lb.spec(lab, agent_dir, 1)).status_code == 200
        killed_while_the_agent_is_away()
        # The API cannot tell (no opinion): heartbeats flow, HAProxy stays down.
        fake_api.wanted = None
        seen = len(fake_api.heartbeats)
        agent.spawn()
        wait_for(lambda: len(fake_api.heartbeats) > seen + 5)
        assert not haproxy.running() and namespace_pids(haproxy.namespace) == []
        status = agent.status(lb.instance_id)
        assert (status["state"], status["haproxy_running"]) == ("ERROR", False), status
        # Confirmed: back at once.
        fake_api.wanted = [lb.instance_id]
        wait_for(lambda: haproxy.running(), timeout=5)
        wait_for(lambda: client.request(url, timeout=1).status == 200, timeout=5)
        # Not wanted: never started again, removed.
        killed_while_the_agent_is_away()
        fake_api.wanted = []
        agent.spawn(wait=False)
        never_serves_until_removed(haproxy, paths.instance_dir)
    finally:
        agent.stop()


def test_killed_during_first_apply_leaves_nothing_once_unwanted(
    lab: Lab, agent_dir: Path, lb: LBConfig, fake_api: FakeAPI
) -> None:
    """Killed before an instance's first apply was recorded, the agent left a directory
    without spec.json and a namespace; its next start ignored them, so when the controller
    had placed the instance elsewhere they stayed forever (found by the chaos run)."""
    fake_api.wanted = [lb.instance_id]
    agent = AgentProcess(agent_dir, api_url=fake_api.url)
    paths = instance_paths(agent_dir, lb.instance_id)
    haproxy = HAProxyInstance(paths, namespace_name(lb.instance_id))
    try:
        agent.spawn(crash_at=faults.HAPROXY_CONFIG_WRITTEN)
        with pytest.raises(httpx.TransportError):
            agent.put(lb.spec(lab, agent_dir, 1))
        assert agent.wait_exit() == -signal.SIGKILL
        agent.proc = None
        assert paths.config.exists() and not paths.spec_file.exists()
        assert namespace_exists(haproxy.namespace)
        fake_api.wanted = []
        agent.spawn(wait=False)
        never_serves_until_removed(haproxy, paths.instance_dir)
    finally:
        agent.stop()
