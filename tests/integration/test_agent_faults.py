"""Agent faults: a real agent process SIGKILLed at the worst moments, then restarted.

Each test starts `run_agent` in its own process with `OPENHA_AGENT_CRASH_AT` naming a
crash point (see `openha.agent.faults`), lets it die there, starts it again and checks
that what HAProxy serves is what the agent says and what the controller wants.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from agent_support import AgentProcess, FakeAPI, LBConfig, Member

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
        heartbeats = len(fake_api.heartbeats)
        agent.spawn(wait=False)
        deadline = time.monotonic() + 20
        while paths.instance_dir.exists() or namespace_exists(ns):
            assert not haproxy.running(), "the restarted agent brought HAProxy back"
            assert namespace_pids(ns) == [], "something runs in the deleted instance's namespace"
            assert time.monotonic() < deadline, "the unwanted instance was never removed"
            time.sleep(0.01)
        assert len(fake_api.heartbeats) > heartbeats
        with pytest.raises(OSError):
            client.request(f"http://{lb.vip}/", timeout=1)
    finally:
        agent.stop()
