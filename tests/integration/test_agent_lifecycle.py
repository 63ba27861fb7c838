"""Agent integration: deletion, logs, heartbeats/orphans, and the real agent process."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
from agent_support import AgentHarness, AgentProcess, FakeAPI, LBConfig, Member, wait_for
from pyroute2 import IPRoute

from openha.agent.haproxy import HAProxyInstance
from openha.agent.netns import namespace_exists, owned_host_links
from openha.agent.paths import instance_paths, namespace_name
from openha.agent.procs import pid_alive
from openha.agent.protocol import HeartbeatResponse
from openha.agent.service import AgentService
from openha.lab import BackendServer, ClientNamespace, Lab

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
    pids = proc.processes()
    assert pids == [proc.pid()] and namespace_exists(ns)
    assert owned_host_links(ns) and paths.instance_dir.exists()
    assert client.request(f"http://{lb.vip}/").status == 200

    resp = agent.api.delete(f"/v1/instances/{lb.instance_id}")
    assert resp.status_code == 204
    assert not namespace_exists(ns)
    assert owned_host_links(ns) == []
    assert not any(pid_alive(p) for p in pids)
    assert not paths.instance_dir.exists()
    assert agent.api.get(f"/v1/instances/{lb.instance_id}").status_code == 404
    with pytest.raises(OSError):
        client.request(f"http://{lb.vip}/", timeout=1)
    # Idempotent.
    assert agent.api.delete(f"/v1/instances/{lb.instance_id}").status_code == 204
    # The lab bridge is not ours (bridge_managed=False): it stays.
    assert host_links(lab.bridge) == [lab.bridge]


def test_logs_are_filed_per_load_balancer_and_queried(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    """HAProxy → ring → the agent's rsyslogd → `<agent>/logs/<lb>/access.log` → queries."""
    assert agent.put(lb.spec(lab, agent.agent_dir, 1)).status_code == 200
    url = f"/v1/loadbalancers/{lb.lb_id}/logs"
    started = time.time()
    for i in range(5):
        assert client.request(f'http://{lb.vip}/page-{i}?q="x\\y').status == 200

    def logged() -> list[dict]:
        resp = agent.api.get(url, params={"limit": 50})
        assert resp.status_code == 200
        records = [r for r in resp.json()["records"] if "/page-" in r["path"]]
        return records if len(records) == 5 else []

    records = wait_for(logged, timeout=5)
    for i, record in enumerate(records):
        # Client bytes (a quote, a backslash) arrive JSON-escaped, and decode back.
        assert record["path"] == f'/page-{i}?q="x\\y' and record["method"] == "GET"
        assert record["listener"] == lb.listener_id and record["lb"] == lb.lb_id
        assert record["instance"] == lb.instance_id and record["project"] == lb.project_id
        assert record["status"] == 200 and record["client"] == client.ip
        assert record["ts"] >= started - 1 and record["member"] in {m.id for m in lb.members}
    assert agent.api.get(url, params={"status": "5xx"}).json()["records"] == []
    assert len(agent.api.get(url, params={"status": "2xx", "limit": 2}).json()["records"]) == 2
    assert agent.api.get(url, params={"client": "192.0.2.0/24"}).json()["records"] == []
    assert agent.api.get(url, params={"since": time.time() + 60}).json()["records"] == []

    # Following: a cursor gives exactly what was written after it.
    cursor = agent.api.get(url, params={"limit": 1}).json()["cursor"]
    assert client.request(f"http://{lb.vip}/after").status == 200
    news = wait_for(
        lambda: agent.api.get(url, params={"after": cursor}).json()["records"], timeout=5
    )
    assert [r["path"] for r in news] == ["/after"]

    assert agent.api.get(url, params={"kind": "debug"}).status_code == 400
    assert agent.api.get(url, params={"status": "5x"}).status_code == 400
    assert agent.api.get("/v1/loadbalancers/..%2F..%2Fetc/logs").status_code == 404
    assert agent.api.get("/v1/logs/delivery").json()["rsyslogd_running"] is True


def test_auth_and_healthz(agent: AgentHarness) -> None:
    anonymous = httpx.Client(transport=agent.api._transport, base_url=str(agent.api.base_url))
    assert anonymous.get("/v1/healthz").status_code == 200
    assert anonymous.get("/v1/instances").status_code == 401
    bad = {"Authorization": "Bearer wrong"}
    assert anonymous.get("/v1/instances", headers=bad).status_code == 401
    assert agent.api.get("/v1/instances").json() == []
    secret_file = agent.agent_dir / "agent_secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600


def test_heartbeat_registers_and_removes_orphans_after_their_grace(
    lab: Lab, agent_dir: Path, fake_api: FakeAPI, lb: LBConfig
) -> None:
    """An orphan (the API does not want it) keeps running through its grace period, and
    is kept if the API wants it again meanwhile (a restored database, a stale read);
    once the period is over, or at once when the API says another instance took over,
    it is removed."""
    grace = 4.0
    agent = AgentHarness(agent_dir, api_url=fake_api.url, orphan_grace=grace).start()
    ns = namespace_name(lb.instance_id)
    paths = instance_paths(agent_dir, lb.instance_id)

    def running() -> bool:
        return namespace_exists(ns) and agent.api.get("/v1/instances").json() != []

    def serving() -> None:
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
        assert running()

    try:
        wait_for(lambda: fake_api.heartbeats, timeout=5)
        reg = fake_api.registrations[0]
        assert reg.agent_secret == agent.service.secret and reg.agent_dir == str(agent_dir)
        serving()
        pid = int(paths.pid_file.read_text())

        fake_api.wanted = []  # e.g. a database restored from before it was made
        time.sleep(grace / 2)
        assert running() and pid_alive(pid), "removed before its grace period was over"
        fake_api.wanted = [lb.instance_id]  # the database caught up: wanted after all
        time.sleep(1.0)
        fake_api.wanted = []
        time.sleep(grace / 2 + 0.5)  # over the grace counted from the first time
        assert running() and pid_alive(pid), "the grace period restarts once wanted again"
        unwanted = time.monotonic()
        # The namespace goes before the agent forgets the instance: wait for both.
        wait_for(lambda: not namespace_exists(ns), timeout=grace + 5)
        wait_for(lambda: agent.api.get("/v1/instances").json() == [], timeout=5)
        assert time.monotonic() - unwanted > grace / 2 - 1.0
        assert not paths.instance_dir.exists()

        # Another instance of its LB took over (rebuilt elsewhere): no grace.
        serving()
        fake_api.superseded = [lb.instance_id]
        fake_api.wanted = []
        unwanted = time.monotonic()
        wait_for(lambda: not namespace_exists(ns), timeout=grace)
        assert time.monotonic() - unwanted < grace - 1.0
        wait_for(lambda: agent.api.get("/v1/instances").json() == [], timeout=5)
    finally:
        agent.stop()


def test_heartbeat_loop_survives_any_exception(
    agent_dir: Path, fake_api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 8.7: a bug in one heartbeat must not end the loop (the host would go DOWN)."""
    real = AgentService.heartbeat_once
    calls = []

    def flaky(self: AgentService, client: httpx.Client) -> HeartbeatResponse:
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise RuntimeError("injected fault")
        return real(self, client)

    monkeypatch.setattr(AgentService, "heartbeat_once", flaky)
    agent = AgentHarness(agent_dir, api_url=fake_api.url).start()
    try:
        wait_for(lambda: len(fake_api.heartbeats) >= 2, timeout=5)
        assert len(calls) >= 5
    finally:
        agent.stop()


def test_restarted_agent_heartbeats_at_once_with_every_instance(
    lab: Lab, agent_dir: Path, fake_api: FakeAPI, backends: list[BackendServer]
) -> None:
    """Issue 13.2: the first heartbeat goes out at start, before any adoption work, and
    already names every instance on disk (one it left out would look lost to the API)."""
    lbs = [
        LBConfig(
            instance_id=str(uuid.uuid4()),
            vip=lab.allocate_ip(),
            instance_ip=lab.allocate_ip(),
            members=[Member(str(uuid.uuid4()), backends[0].address)],
        )
        for _ in range(3)
    ]
    fake_api.wanted = [lb.instance_id for lb in lbs]
    agent = AgentHarness(agent_dir, api_url=fake_api.url, heartbeat_interval=60)
    agent.start()
    try:
        for lb in lbs:
            assert agent.put(lb.spec(lab, agent_dir, 1)).status_code == 200
        agent.stop()
        seen = len(fake_api.heartbeats)
        started = time.monotonic()
        agent.start()
        wait_for(lambda: len(fake_api.heartbeats) > seen, timeout=5, interval=0.01)
        first = fake_api.heartbeats[seen]
        print(f"first heartbeat {time.monotonic() - started:.3f} s after the start")
        assert time.monotonic() - started < 2  # not after an interval of 60 s
        assert {s.instance_id for s in first.instances} == set(fake_api.wanted)
    finally:
        agent.stop()


def test_agent_process_survives_sigterm_and_adopts(
    lab: Lab, agent_dir: Path, client: ClientNamespace, lb: LBConfig
) -> None:
    """The real `run_agent` in its own process: SIGTERM leaves HAProxy serving."""
    agent = AgentProcess(agent_dir).spawn()
    try:
        resp = agent.put(lb.spec(lab, agent_dir, 1))
        assert resp.status_code == 200, resp.text
        serving = resp.json()["haproxy_pid"]
        agent.stop()
        haproxy = HAProxyInstance(
            instance_paths(agent_dir, lb.instance_id), namespace_name(lb.instance_id)
        )
        assert haproxy.pid() == serving
        assert client.request(f"http://{lb.vip}/").status == 200  # no agent, still serving
        agent.spawn()
        status = agent.status(lb.instance_id)
        assert (status["haproxy_pid"], status["state"]) == (serving, "ACTIVE")
    finally:
        agent.stop()
