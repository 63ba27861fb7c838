"""Agent integration: deletion, logs, heartbeats/orphans, and the real agent process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from agent_support import AgentHarness, FakeAPI, LBConfig, free_port, wait_for
from pyroute2 import IPRoute

from openha.agent.haproxy import HAProxyInstance, pid_alive
from openha.agent.netns import namespace_exists
from openha.agent.paths import instance_paths, namespace_name
from openha.lab import ClientNamespace, Lab

pytestmark = pytest.mark.integration


def host_links(prefix: str) -> list[str]:
    with IPRoute() as ipr:
        names = [link.get("ifname") or "" for link in ipr.get_links()]
    return [n for n in names if n.startswith(prefix)]


def test_delete_removes_everything(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    assert agent.put(lb.spec(lab, agent.agent_dir, 1)).status_code == 200
    ns = namespace_name(lb.instance_id)
    paths = instance_paths(agent.agent_dir, lb.instance_id)
    proc = HAProxyInstance(paths, ns)
    pids = proc.pids()
    assert len(pids) >= 2 and namespace_exists(ns)
    assert host_links("ohv" + ns[4:]) and paths.instance_dir.exists()
    assert client.request(f"http://{lb.vip}/").status == 200

    resp = agent.api.delete(f"/v1/instances/{lb.instance_id}")
    assert resp.status_code == 204
    assert not namespace_exists(ns)
    assert host_links("ohv" + ns[4:]) == []
    assert not any(pid_alive(p) for p in pids)
    assert not paths.instance_dir.exists()
    assert agent.api.get(f"/v1/instances/{lb.instance_id}").status_code == 404
    with pytest.raises(OSError):
        client.request(f"http://{lb.vip}/", timeout=1)
    # Idempotent.
    assert agent.api.delete(f"/v1/instances/{lb.instance_id}").status_code == 204
    # The lab bridge is not ours (bridge_managed=False): it stays.
    assert host_links(lab.bridge) == [lab.bridge]


def test_logs_are_collected_per_instance(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    assert agent.put(lb.spec(lab, agent.agent_dir, 1)).status_code == 200
    started = time.time()
    for i in range(5):
        assert client.request(f"http://{lb.vip}/page-{i}").status == 200

    def logged() -> list[dict]:
        resp = agent.api.get(f"/v1/instances/{lb.instance_id}/logs", params={"lines": 50})
        assert resp.status_code == 200
        records = [r for r in resp.json()["records"] if "/page-" in r["message"]]
        return records if len(records) == 5 else []

    records = wait_for(logged, timeout=5)
    for i, record in enumerate(records):
        assert f"GET /page-{i} HTTP/1.1" in record["message"]
        assert record["listener_id"] == lb.listener_id
        assert record["load_balancer_id"] == lb.lb_id
        assert record["project_id"] == lb.project_id
        assert record["ts"] >= started - 1
    since = agent.api.get(
        f"/v1/instances/{lb.instance_id}/logs", params={"since": time.time() + 60}
    )
    assert since.json()["records"] == []
    assert agent.api.get("/v1/instances/nope/logs").status_code == 404


def test_auth_and_healthz(agent: AgentHarness) -> None:
    anonymous = httpx.Client(transport=agent.api._transport, base_url=str(agent.api.base_url))
    assert anonymous.get("/v1/healthz").status_code == 200
    assert anonymous.get("/v1/instances").status_code == 401
    bad = {"Authorization": "Bearer wrong"}
    assert anonymous.get("/v1/instances", headers=bad).status_code == 401
    assert agent.api.get("/v1/instances").json() == []
    secret_file = agent.agent_dir / "agent_secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600


def test_heartbeat_registers_and_removes_orphans(
    lab: Lab, agent_dir: Path, fake_api: FakeAPI, lb: LBConfig
) -> None:
    agent = AgentHarness(agent_dir, api_url=fake_api.url).start()
    try:
        wait_for(lambda: fake_api.heartbeats, timeout=5)
        reg = fake_api.registrations[0]
        assert reg.agent_secret == agent.service.secret and reg.agent_dir == str(agent_dir)
        fake_api.wanted = [lb.instance_id]
        assert agent.put(lb.spec(lab, agent_dir, 1)).status_code == 200
        wait_for(
            lambda: any(
                s.instance_id == lb.instance_id and s.state == "ACTIVE"
                for h in fake_api.heartbeats[-3:]
                for s in h.instances
            ),
            timeout=5,
        )
        assert namespace_exists(namespace_name(lb.instance_id))
        fake_api.wanted = []  # the API rebuilt it elsewhere: an orphan here
        # The namespace goes before the agent forgets the instance: wait for both.
        wait_for(lambda: not namespace_exists(namespace_name(lb.instance_id)), timeout=5)
        wait_for(lambda: agent.api.get("/v1/instances").json() == [], timeout=5)
        assert not instance_paths(agent_dir, lb.instance_id).instance_dir.exists()
    finally:
        agent.stop()


def test_agent_process_survives_sigterm_and_adopts(
    lab: Lab, agent_dir: Path, client: ClientNamespace, lb: LBConfig
) -> None:
    """The real `run_agent` in its own process: SIGTERM leaves HAProxy serving."""
    port = free_port()
    env = {
        **os.environ,
        "OPENHA_STATE_DIR": str(agent_dir),
        "OPENHA_AGENT_DIR": str(agent_dir),
        "OPENHA_AGENT_BIND": f"127.0.0.1:{port}",
        "OPENHA_AGENT_API_URL": "http://127.0.0.1:9",
        "OPENHA_HOST_NAME": "proc-host",
    }
    code = "from openha.agent.server import run_agent; from openha.settings import Settings; "
    code += "run_agent(Settings())"
    base = f"http://127.0.0.1:{port}"

    def spawn() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL)

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/v1/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=15)
        return proc

    agent_proc = spawn()
    try:
        secret = (agent_dir / "agent_secret").read_text().strip()
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {secret}"})
        spec = lb.spec(lab, agent_dir, 1)
        resp = api.put(f"/v1/instances/{lb.instance_id}", json=spec.model_dump(mode="json"))
        assert resp.status_code == 200, resp.text
        master = resp.json()["haproxy_pid"]
        agent_proc.send_signal(signal.SIGTERM)
        assert agent_proc.wait(timeout=15) == 0
        haproxy = HAProxyInstance(
            instance_paths(agent_dir, lb.instance_id), namespace_name(lb.instance_id)
        )
        assert haproxy.master_pid() == master
        assert client.request(f"http://{lb.vip}/").status == 200  # no agent, still serving
        agent_proc = spawn()
        status = api.get(f"/v1/instances/{lb.instance_id}").json()
        assert (status["haproxy_pid"], status["state"]) == (master, "ACTIVE")
        api.close()
    finally:
        if agent_proc.poll() is None:
            agent_proc.send_signal(signal.SIGTERM)
            agent_proc.wait(timeout=15)
