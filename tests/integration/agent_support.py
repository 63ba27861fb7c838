"""Helpers for agent integration tests: spec/config builders, agent harness, fake API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from openha.agent.paths import (
    CHROOT_LOG_SOCKET,
    CHROOT_SYSLOG_SOCKET,
    instance_paths,
    namespace_name,
)
from openha.agent.protocol import HeartbeatReport, HeartbeatResponse, RegisterRequest
from openha.agent.server import create_app
from openha.agent.service import AgentService
from openha.domain.spec import InstanceSpec
from openha.lab import Lab
from openha.render.haproxy import LOG_RING, access_log_format
from openha.settings import Settings


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- config and spec builders -----------------------------------------------------------


@dataclass
class Member:
    id: str
    address: str
    weight: int = 1
    disabled: bool = False


@dataclass
class LBConfig:
    """Enough of an LB to hand-write the HAProxy config the controller would render."""

    instance_id: str
    vip: str
    instance_ip: str
    lb_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    project_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    listener_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    pool_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    members: list[Member] = field(default_factory=list)
    port: int = 80
    extra_frontend: list[str] = field(default_factory=list)
    extra_global: list[str] = field(default_factory=list)
    check: bool = False

    def another(self, lab: Lab) -> LBConfig:
        """A second load balancer on the same members, with its own addresses and ids."""
        return LBConfig(
            instance_id=str(uuid.uuid4()),
            vip=lab.allocate_ip(),
            instance_ip=lab.allocate_ip(),
            members=[Member(m.id, m.address) for m in self.members],
        )

    def config(self, agent_dir: Path) -> str:
        """Logging as rendered configs log: the JSON format, a ring to the agent's rsyslogd."""
        paths = instance_paths(agent_dir, self.instance_id)
        log_format = access_log_format("http", self.lb_id, self.instance_id, self.project_id)
        lines = [
            "global",
            "    maxconn 2000",
            # Sandboxed as rendered configs are: chroot, the instance's uid (agent.sandbox).
            f"    chroot {paths.chroot_dir}",
            '    uid "${OPENHA_LB_UID}"',
            '    gid "${OPENHA_LB_GID}"',
            f"    stats socket {paths.stats_socket} mode 600 level admin expose-fd listeners",
            f"    log ring@{LOG_RING} len 8192 local0",
            f"    log {CHROOT_LOG_SOCKET} len 8192 local0 notice",
            f"    log-tag lb-{self.lb_id}",
            *[f"    {line}" for line in self.extra_global],
            f"ring {LOG_RING}",
            "    format rfc3164",
            "    maxlen 8192",
            "    size 262144",
            f"    server syslog unix@{CHROOT_SYSLOG_SOCKET} log-proto octet-count",
            "defaults",
            "    mode http",
            "    log global",
            "    timeout connect 2s",
            "    timeout client 10s",
            "    timeout server 10s",
            f"frontend {self.listener_id}",
            f"    bind {self.vip}:{self.port}",
            f"    log-format '{log_format}'",
            *[f"    {line}" for line in self.extra_frontend],
            f"    default_backend {self.pool_id}",
            f"backend {self.pool_id}",
            "    balance roundrobin",
        ]
        for m in self.members:
            line = f"    server {m.id} {m.address} weight {m.weight}"
            if self.check:
                line += " check inter 500ms fall 2 rise 1"
            if m.disabled:
                line += " disabled"
            lines.append(line)
        return "\n".join(lines) + "\n"

    def spec(self, lab: Lab, agent_dir: Path, generation: int, **overrides: Any) -> InstanceSpec:
        values: dict[str, Any] = dict(
            instance_id=self.instance_id,
            load_balancer_id=self.lb_id,
            project_id=self.project_id,
            generation=generation,
            namespace=namespace_name(self.instance_id),
            interfaces=(lab.interface_spec(self.instance_ip),),
            vip_address=self.vip,
            haproxy_config=self.config(agent_dir),
        )
        values.update(overrides)
        return InstanceSpec(**values)


# --- the agent --------------------------------------------------------------------------


class AgentHarness:
    """An AgentService with its FastAPI app behind a TestClient, restartable in place."""

    def __init__(
        self,
        agent_dir: Path,
        api_url: str = "http://127.0.0.1:9",
        heartbeat_interval: float = 0.2,
        orphan_grace: float = 0.0,
        stray_grace: float = 300.0,
        stray_scan_interval: float = 60.0,
    ) -> None:
        self.agent_dir = agent_dir
        self.api_url = api_url
        self.heartbeat_interval = heartbeat_interval
        # These tests are about what removal does; the grace has a test of its own.
        self.orphan_grace = orphan_grace
        self.stray_grace = stray_grace
        self.stray_scan_interval = stray_scan_interval
        self.service: AgentService | None = None
        self.client: TestClient | None = None

    def settings(self) -> Settings:
        return Settings(
            state_dir=self.agent_dir,
            agent_dir=self.agent_dir,
            agent_api_url=self.api_url,
            agent_token="enrol-token",
            host_name="test-host",
            heartbeat_interval=self.heartbeat_interval,
            orphan_grace_seconds=self.orphan_grace,
            stray_grace_seconds=self.stray_grace,
            stray_scan_interval=self.stray_scan_interval,
        )

    def start(self) -> AgentHarness:
        self.service = AgentService(self.settings(), supervise_interval=0.3)
        self.service.start()
        self.client = TestClient(create_app(self.service))
        self.client.headers["Authorization"] = f"Bearer {self.service.secret}"
        return self

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.service is not None:
            self.service.stop()
            self.service = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def api(self) -> TestClient:
        assert self.client is not None
        return self.client

    def put(self, spec: InstanceSpec) -> Any:
        return self.api.put(f"/v1/instances/{spec.instance_id}", json=spec.model_dump(mode="json"))

    def status(self, instance_id: str) -> dict[str, Any]:
        resp = self.api.get(f"/v1/instances/{instance_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()


class AgentProcess:
    """The real `run_agent` in a process of its own: killable, restartable, faults injectable."""

    def __init__(
        self,
        agent_dir: Path,
        api_url: str = "http://127.0.0.1:9",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.agent_dir = agent_dir
        self.api_url = api_url
        self.extra_env = extra_env or {}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self, crash_at: str | None = None, wait: bool = True) -> AgentProcess:
        env = {
            **os.environ,
            "OPENHA_STATE_DIR": str(self.agent_dir),
            "OPENHA_AGENT_DIR": str(self.agent_dir),
            "OPENHA_AGENT_BIND": f"127.0.0.1:{self.port}",
            "OPENHA_AGENT_API_URL": self.api_url,
            "OPENHA_AGENT_TOKEN": "enrol-token",
            "OPENHA_HOST_NAME": "proc-host",
            "OPENHA_HEARTBEAT_INTERVAL": "0.2",
            "OPENHA_ORPHAN_GRACE_SECONDS": "0",
            # Tests leave the host's kernel limits alone (bench/density.py does not).
            "OPENHA_AGENT_NEIGHBOUR_TABLE": "0",
            **self.extra_env,
        }
        env.pop("OPENHA_AGENT_CRASH_AT", None)
        if crash_at is not None:
            env["OPENHA_AGENT_CRASH_AT"] = crash_at
        code = "from openha.agent.server import run_agent; from openha.settings import Settings; "
        code += "run_agent(Settings())"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL
        )
        if wait:
            wait_for(self.healthy, timeout=15)
        return self

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base}/v1/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self) -> httpx.Client:
        secret = (self.agent_dir / "agent_secret").read_text().strip()
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {secret}"}, timeout=30
        )

    def put(self, spec: InstanceSpec) -> httpx.Response:
        with self.client() as api:
            return api.put(f"/v1/instances/{spec.instance_id}", json=spec.model_dump(mode="json"))

    def status(self, instance_id: str) -> dict[str, Any]:
        with self.client() as api:
            resp = api.get(f"/v1/instances/{instance_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait_exit(self, timeout: float = 15) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM, as an operator's restart would; HAProxy keeps running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


# --- a stand-in for the API's agent endpoints -------------------------------------------


class FakeAPI:
    """Serves /v2/agent/register and /v2/agent/heartbeat on 127.0.0.1 in a thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.registrations: list[RegisterRequest] = []
        self.heartbeats: list[HeartbeatReport] = []
        self.wanted: list[str] | None = None
        self.superseded: list[str] = []
        app = FastAPI()

        @app.post("/v2/agent/register")
        def register(req: RegisterRequest) -> dict[str, str]:
            self.registrations.append(req)
            return {"host_id": "host-1"}

        @app.post("/v2/agent/heartbeat")
        def heartbeat(report: HeartbeatReport) -> HeartbeatResponse:
            self.heartbeats.append(report)
            return HeartbeatResponse(
                wanted_instance_ids=self.wanted, superseded_instance_ids=self.superseded
            )

        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> FakeAPI:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
