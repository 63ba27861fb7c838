"""Agent integration: deletion, logs, heartbeats/orphans, and the real agent process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from agent_support import (
    AgentHarness,
    AgentProcess,
    FakeAPI,
    LBConfig,
    Member,
    free_port,
    wait_for,
)
from pyroute2 import IPRoute

from openha.agent.cgroups import detect, own_groups
from openha.agent.haproxy import HAPROXY_BIN, HAProxyInstance
from openha.agent.netns import (
    ensure_namespace,
    namespace_exists,
    namespace_owner,
    owned_host_links,
    remove_namespace,
)
from openha.agent.paths import instance_paths, namespace_name
from openha.agent.procs import pid_alive
from openha.agent.protocol import HeartbeatResponse
from openha.agent.purge import purge
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
    # Each request once. HAProxy logs a request when its stream ends, which for one
    # closed by the client may come after the next request's: the order may differ.
    # Client bytes (a quote, a backslash) arrive JSON-escaped, and decode back.
    assert sorted(r["path"] for r in records) == [f'/page-{i}?q="x\\y' for i in range(5)]
    for record in records:
        assert record["method"] == "GET"
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


HAND_CONFIG = """global
    log stderr local0 emerg
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend hand
    bind 127.0.0.1:{port}
    http-request return status 200
"""


def test_strays_are_reported_then_reaped_and_other_agents_instances_kept(
    lab: Lab, agent_dir: Path, fake_api: FakeAPI, lb: LBConfig, tmp_path: Path
) -> None:
    """Issue 11: leftovers no instance directory explains (an agent's instance whose
    directory was wiped while it ran, an unmarked `ohi-*` namespace, a HAProxy running
    a gone instance's config) are reported by an agent that does not own them, kept
    through the grace period, then removed; a namespace another agent's existing
    instance directory owns is never touched."""
    grace = 3.0
    # The wiped instance: made by an agent that is then stopped (its HAProxy runs on).
    owner = AgentHarness(agent_dir).start()
    try:
        assert owner.put(lb.spec(lab, agent_dir, 1)).status_code == 200
    finally:
        owner.stop()
    wiped_ns = namespace_name(lb.instance_id)
    wiped_paths = instance_paths(agent_dir, lb.instance_id)
    wiped_pid = int(wiped_paths.pid_file.read_text().split()[0])
    assert pid_alive(wiped_pid) and namespace_owner(wiped_ns) == str(wiped_paths.instance_dir)
    wiped_groups = [
        mount / path.lstrip("/")
        for controller, path in own_groups(Path(f"/proc/{wiped_pid}/cgroup").read_text()).items()
        if "/openha/" in path and (mount := detect().mounts.get(controller))
    ]
    assert wiped_groups, "the sandbox put the instance in its cgroups"
    shutil.rmtree(wiped_paths.instance_dir)
    # Another agent's instance (its directory exists), and one no one marked.
    kept_ns, unmarked_ns = namespace_name(str(uuid.uuid4())), namespace_name(str(uuid.uuid4()))
    kept_dir = tmp_path / "instances" / "other"
    kept_dir.mkdir(parents=True)
    hand_dir = tmp_path / "instances" / str(uuid.uuid4())
    hand_dir.mkdir(parents=True)
    hand_pid = 0
    watcher_dir = Path(tempfile.mkdtemp(prefix="oha-", dir="/tmp"))
    watcher = AgentHarness(
        watcher_dir, api_url=fake_api.url, stray_grace=grace, stray_scan_interval=0.3
    )
    try:
        ensure_namespace(kept_ns, str(kept_dir))
        ensure_namespace(unmarked_ns)
        config = hand_dir / "haproxy.cfg"
        config.write_text(HAND_CONFIG.format(port=free_port()))
        pid_file = tmp_path / "hand.pid"
        subprocess.run([HAPROXY_BIN, "-D", "-p", str(pid_file), "-f", str(config)], check=True)
        hand_pid = int(pid_file.read_text().split()[0])
        shutil.rmtree(hand_dir)

        watcher.start()
        expected = {
            ("namespace", wiped_ns),
            ("namespace", unmarked_ns),
            ("process", f"haproxy[{hand_pid}]"),
        }

        def reported() -> dict[tuple[str, str], dict[str, object]]:
            views = [h.strays for h in fake_api.heartbeats if h.strays is not None]
            return {(s["kind"], s["name"]): s for s in (views[-1]["current"] if views else [])}

        current = wait_for(lambda: (r := reported()) and expected <= set(r) and r, timeout=10)
        seen_at = time.monotonic()
        assert ("namespace", kept_ns) not in current
        assert wiped_pid in current[("namespace", wiped_ns)]["pids"]
        # Through the grace period, nothing is touched.
        time.sleep(grace / 2)
        assert namespace_exists(wiped_ns) and pid_alive(wiped_pid) and pid_alive(hand_pid)
        assert namespace_exists(unmarked_ns)

        wait_for(
            lambda: not namespace_exists(wiped_ns) and not namespace_exists(unmarked_ns),
            timeout=grace + 10,
        )
        assert time.monotonic() - seen_at > grace / 2
        wait_for(lambda: not pid_alive(wiped_pid) and not pid_alive(hand_pid), timeout=10)
        reaped = wait_for(
            lambda: (
                {
                    (r["kind"], r["name"])
                    for h in fake_api.heartbeats
                    if h.strays is not None
                    for r in h.strays["reaped"]
                }
                >= expected
            ),
            timeout=5,
        )
        assert reaped
        assert namespace_exists(kept_ns)
        assert not reported().keys() & expected
        assert not [g for g in wiped_groups if g.exists()], "its emptied cgroups went too"
    finally:
        watcher.stop()
        for ns in (kept_ns, unmarked_ns, wiped_ns):
            remove_namespace(ns)
        for pid in (wiped_pid, hand_pid):
            if pid and pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        purge(watcher_dir)
        shutil.rmtree(watcher_dir, ignore_errors=True)
