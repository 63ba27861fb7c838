"""A whole OpenHA on one machine for integration tests: API, controller, real agents.

The API (uvicorn) and the controller run in threads of the test process; each
agent is a real `openha agent` process with its own state directory and host
identity, all attached to one lab bridge, so a test can kill a "host" (agent,
HAProxy, keepalived and its links, all at once) and watch the system recover.
Everything is removed on close, even after a failure.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pyroute2 import IPRoute, netns
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openha import hosts
from openha.agent import faults
from openha.agent.paths import namespace_name
from openha.agent.purge import purge
from openha.api.app import bind, create_app
from openha.controller.reconciler import Reconciler
from openha.credentials import create_token
from openha.db import make_engine, make_session_factory, transaction, upgrade
from openha.lab import Lab
from openha.models import Host
from openha.settings import Settings

PROJECT = "3333333333333333333333333333333a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def processes_naming(root: Path) -> list[int]:
    """Processes whose command line names a path under `root` (HAProxy, keepalived, agents)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in cmd:
            pids.append(int(entry.name))
    return pids


@functools.cache
def migrated_database() -> Path:
    """A database migrated once per test process; each Stack starts from a copy."""
    directory = Path(tempfile.mkdtemp(prefix="ohdb-", dir="/tmp"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = directory / "openha.db"
    upgrade(f"sqlite:///{path}")
    return path


_free_apps: list[Any] = []


def _app_for(settings: Settings, sessions: sessionmaker[Session]) -> Any:
    """An API app bound to this stack: one a closed stack gave back, else a new one.

    FastAPI prepares every route's parameters on an app's first requests (a second or
    two of CPU); a test process's stacks run one after another, so they share apps.
    """
    if _free_apps:
        app = _free_apps.pop()
        bind(app, settings, sessions)
        return app
    return create_app(settings, sessions)


class Agent:
    """One host: an `openha agent` process and the data planes it started."""

    def __init__(
        self, stack: Stack, name: str, zone: str = "", env: dict[str, str] | None = None
    ) -> None:
        self.stack, self.name, self.zone = stack, name, zone
        self.extra_env = env or {}
        self.dir = stack.root / name
        self.port = free_port()
        with transaction(stack.sessions) as s:
            self.credential = hosts.enroll(s, name, zone)
        self.proc: subprocess.Popen[bytes] | None = None
        self.terminating = False
        self.log = open(stack.root / f"{name}.log", "ab")  # noqa: SIM115 - closed in close()

    def start(self) -> Agent:
        self.spawn()
        return self.wait_up()

    def wait_up(self) -> Agent:
        try:
            wait_for(lambda: self.host_status() == "UP", 45, what=f"agent {self.name} up")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {self.describe()}") from None
        return self

    def describe(self) -> str:
        """The process's state and its log's last lines: what a failed wait needs to say."""
        code = None if self.proc is None else self.proc.poll()
        state = "not started" if self.proc is None else f"exit code {code}"
        self.log.flush()
        lines = (self.stack.root / f"{self.name}.log").read_text(errors="replace").splitlines()
        return f"agent process {state}; its log ends:\n" + "\n".join(lines[-30:])

    def spawn(self, crash_at: str | None = None) -> subprocess.Popen[bytes]:
        """Start the agent process and return at once, as a supervisor restarts it.

        `crash_at` names a crash point (`openha.agent.faults`) the process dies at.
        """
        env = {
            **os.environ,
            "OPENHA_STATE_DIR": str(self.dir),
            "OPENHA_AGENT_DIR": str(self.dir),
            "OPENHA_AGENT_BIND": f"127.0.0.1:{self.port}",
            "OPENHA_AGENT_API_URL": self.stack.url,
            "OPENHA_AGENT_TOKEN": self.credential,
            "OPENHA_HOST_NAME": self.name,
            "OPENHA_AVAILABILITY_ZONE": self.zone,
            "OPENHA_HEARTBEAT_INTERVAL": "0.5",
            # Short, so that what tests delete while an agent is away goes soon
            # (test_agent_lifecycle covers the grace itself).
            "OPENHA_ORPHAN_GRACE_SECONDS": "3",
            "OPENHA_AGENT_NEIGHBOUR_TABLE": "0",  # leave the host's kernel limits alone
            # Die with the test run even if it is killed before its teardown runs.
            "OPENHA_PARENT_PID": str(os.getpid()),
            **self.extra_env,
        }
        if crash_at is not None:
            env[faults.CRASH_AT_ENV] = crash_at
        openha = Path(sys.executable).parent / "openha"
        self.terminating = False
        self.proc = subprocess.Popen(
            [str(openha), "agent"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.proc

    def host_status(self) -> str | None:
        with transaction(self.stack.sessions) as s:
            host = s.scalar(select(Host).where(Host.name == self.name))
            return host.status if host else None

    def heartbeat_after(self, since: float) -> bool:
        """True once the API has recorded a heartbeat of this host later than `since`."""
        with transaction(self.stack.sessions) as s:
            host = s.scalar(select(Host).where(Host.name == self.name))
            seen = host.last_heartbeat_at if host else None
        return seen is not None and seen > datetime.fromtimestamp(since, UTC).replace(tzinfo=None)

    @property
    def host_id(self) -> str:
        with transaction(self.stack.sessions) as s:
            host = s.scalar(select(Host).where(Host.name == self.name))
            assert host is not None
            return host.id

    def terminate(self) -> None:
        """Ask the agent to stop (SIGTERM, once) without waiting: see `stop`."""
        if self.proc is not None and self.proc.poll() is None and not self.terminating:
            self.proc.send_signal(signal.SIGTERM)
            self.terminating = True

    def stop(self) -> None:
        """Stop the agent gracefully: its data planes keep running, as in production."""
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        self.terminating = False

    def instance_dirs(self) -> list[Path]:
        return (
            sorted((self.dir / "instances").glob("*")) if (self.dir / "instances").exists() else []
        )

    def data_plane_pids(self) -> list[int]:
        pids = []
        for d in self.instance_dirs():
            for name in ("haproxy.pid", "keepalived.pid", "vrrp.pid"):
                with contextlib.suppress(OSError, ValueError):
                    pids.append(int((d / name).read_text().split()[0]))
        return [p for p in pids if _pid_alive(p)]

    def links(self) -> list[str]:
        short = {d.name.replace("-", "")[:8] for d in self.instance_dirs()}
        with IPRoute() as ipr:
            names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
        return [n for n in names if n.startswith("ohv") and n[3:11] in short]

    def kill_agent(self) -> None:
        """The agent (the host's heartbeats) dies at once; see `kill_host`."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def kill_host(self) -> None:
        """The machine dies: agent, HAProxy and keepalived stop at once, its links go dark."""
        self.kill_agent()
        # Every process of the host, not only those in pid files: a HAProxy caught in a
        # reload has its pid in no file yet, and a reboot would not spare it either. A
        # daemon forking as the scan runs is caught by the next round.
        for _ in range(5):
            pids = processes_naming(self.dir)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        with IPRoute() as ipr:
            for name in self.links():
                with contextlib.suppress(Exception):
                    ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="down")

    def revive(self) -> Agent:
        """The machine boots again: kernel state (namespaces, links) is gone, the disk is not.

        The agent starts with its old state directory and must not bring back what
        the controller rebuilt elsewhere meanwhile.
        """
        for d in self.instance_dirs():
            with contextlib.suppress(Exception):
                netns.remove(namespace_name(d.name))
        return self.start()

    def close(self) -> None:
        self.stop()
        purge(self.dir)
        self.log.close()


class Stack:
    def __init__(self, lab: Lab, *, host_down_after: float = 3.0) -> None:
        self.lab = lab
        # Short and under /tmp: unix socket paths must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="ohs-", dir="/tmp"))
        # Traversable (not listable) for keepalived's unprivileged script user.
        self.root.chmod(0o711)
        self.settings = Settings(
            state_dir=self.root / "api",
            database_url=f"sqlite:///{self.root / 'openha.db'}",
            default_provider="haproxy",
            controller_interval=0.1,
            observe_interval=0.3,
            host_down_after=host_down_after,
            heartbeat_interval=0.5,
        )
        shutil.copyfile(migrated_database(), self.root / "openha.db")
        self.sessions = make_session_factory(make_engine(self.settings.database_url))
        self.agents: list[Agent] = []
        self._threads: list[threading.Thread] = []
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.app = _app_for(self.settings, self.sessions)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning")
        )
        self._api_thread = self._spawn(self.server.run)
        wait_for(lambda: self.server.started, 15, what="API started")
        self.stop_controller = threading.Event()
        self.reconciler = Reconciler(self.settings, self.sessions, self.app.state.providers)
        self._spawn(self.reconciler.run, self.stop_controller)
        with transaction(self.sessions) as s:
            admin_token = create_token(s, "admin", ["admin"])
            token = create_token(s, PROJECT, ["member"])
        self.admin = httpx.Client(
            base_url=self.url, headers={"X-Auth-Token": admin_token}, timeout=30
        )
        self.tenant = httpx.Client(base_url=self.url, headers={"X-Auth-Token": token}, timeout=30)
        self.subnet_id = self._network()

    def _spawn(self, target: Callable[..., Any], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _network(self) -> str:
        net = self.admin.post(
            "/v2.0/networks",
            json={
                "network": {
                    "name": f"{self.lab.prefix}-net",
                    "shared": True,
                    "provider:network_type": "flat",
                    "provider:physical_network": self.lab.bridge,
                    "openha:bridge_managed": False,
                }
            },
        )
        assert net.status_code == 201, net.text
        hosts_ = list(self.lab.network.hosts())
        sub = self.admin.post(
            "/v2.0/subnets",
            json={
                "subnet": {
                    "network_id": net.json()["network"]["id"],
                    "cidr": str(self.lab.network),
                    "ip_version": 4,
                    "gateway_ip": self.lab.host_ip,
                    # The lab hands out the low addresses to backends and clients.
                    "allocation_pools": [{"start": str(hosts_[100]), "end": str(hosts_[200])}],
                }
            },
        )
        assert sub.status_code == 201, sub.text
        return str(sub.json()["subnet"]["id"])

    def add_agent(
        self, name: str | None = None, zone: str = "", env: dict[str, str] | None = None
    ) -> Agent:
        agent = Agent(self, name or f"{self.lab.prefix}h{len(self.agents)}", zone, env)
        self.agents.append(agent)
        return agent.start()

    def add_agents(self, count: int) -> list[Agent]:
        """`count` hosts started together (an agent's imports alone take a second of
        CPU), each of which must come up."""
        agents = [Agent(self, f"{self.lab.prefix}h{len(self.agents) + i}") for i in range(count)]
        self.agents += agents
        for agent in agents:
            agent.spawn()
        return [agent.wait_up() for agent in agents]

    # --- tenant helpers --------------------------------------------------------------

    def create(self, path: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.tenant.post(f"/v2/lbaas/{path}", json={key: body})
        assert resp.status_code == 201, resp.text
        return dict(resp.json()[key])

    def lb(self, lb_id: str) -> dict[str, Any]:
        return dict(self.tenant.get(f"/v2/lbaas/loadbalancers/{lb_id}").json()["loadbalancer"])

    def wait_active(self, lb_id: str, timeout: float = 30.0) -> dict[str, Any]:
        def active() -> dict[str, Any] | None:
            lb = self.lb(lb_id)
            return lb if lb["provisioning_status"] == "ACTIVE" else None

        return dict(wait_for(active, timeout, what=f"LB {lb_id} ACTIVE"))

    def wait_operating(self, lb_id: str, status: str, timeout: float = 30.0) -> None:
        wait_for(
            lambda: self.lb(lb_id)["operating_status"] == status,
            timeout,
            what=f"LB {lb_id} {status}",
        )

    # --- control plane outage ---------------------------------------------------------

    def stop_control_plane(self) -> None:
        """The API and the controller go away together; agents and data planes stay."""
        self.stop_controller.set()
        self.server.should_exit = True
        for thread in self._threads:
            thread.join(timeout=15)
            assert not thread.is_alive(), "control plane thread did not stop"
        self._threads.clear()

    def stop_api(self) -> None:
        """Only the API goes away (a deploy, a crash): the controller keeps running."""
        self.server.should_exit = True
        wait_for(lambda: not self._api_thread.is_alive(), 15, what="API stopped")

    def start_api(self) -> None:
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning")
        )
        self._api_thread = self._spawn(self.server.run)
        wait_for(lambda: self.server.started, 15, what="API started again")

    def start_control_plane(self) -> None:
        """A fresh reconcile loop, then a fresh API server (same URL and database): the
        controller looks at the fleet first, with every host silent since before the
        outage and no API to hear them, and must not take that for a host failure."""
        self.stop_controller = threading.Event()
        self.reconciler = Reconciler(self.settings, self.sessions, self.app.state.providers)
        self._spawn(self.reconciler.run, self.stop_controller)
        # Its host liveness pass runs every second: let it judge (twice) before the API
        # is back and the agents' heartbeats land.
        time.sleep(2.5)
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning")
        )
        self._api_thread = self._spawn(self.server.run)
        wait_for(lambda: self.server.started, 15, what="API started again")

    def close(self) -> None:
        # All at once: each agent takes a moment to stop its loops and its rsyslogd.
        for agent in self.agents:
            agent.terminate()
        for agent in self.agents:
            with contextlib.suppress(Exception):
                agent.close()
        self.stop_controller.set()
        self.server.should_exit = True
        for thread in self._threads:
            thread.join(timeout=10)
        self.admin.close()
        self.tenant.close()
        if not any(thread.is_alive() for thread in self._threads):
            _free_apps.append(self.app)
        shutil.rmtree(self.root, ignore_errors=True)
