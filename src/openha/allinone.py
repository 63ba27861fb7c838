"""`openha up`: the all-in-one. Bootstraps a state directory and supervises the services.

On every start it upgrades the schema, makes sure `<state_dir>/clouds.yaml`
holds a working admin token (creating one on first start, or when the stored
one no longer authenticates), enrols the local host when it can run a data
plane (root, HAProxy installed), then runs `openha api`, `openha controller`
and, as root, `openha agent` as child processes. A child that dies is
restarted after 0.25 s, with a backoff doubling up to 4 s while it keeps crashing
and forgotten once it has run for 5 s; Ctrl-C or SIGTERM stops them all.

Children run in their own sessions so that a terminal's Ctrl-C reaches only
the supervisor, which then stops them in reverse start order; each child also
asks the kernel to SIGTERM it should the supervisor vanish (see
`openha.cli.watch_parent`), so nothing outlives a killed supervisor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from openha import clouds, db, hosts
from openha.credentials import create_token, hash_token
from openha.domain.constants import ROLE_ADMIN
from openha.models import Subnet, Token, utcnow
from openha.settings import Settings

log = logging.getLogger(__name__)

ADMIN_PROJECT = "admin"
CREDENTIAL_FILE = "agent-credential"
TOKEN_DESCRIPTION = "openha up: clouds.yaml"
PARENT_PID_ENV = "OPENHA_PARENT_PID"
# Restart delays: 0.25 s after a crash, doubling while a child keeps crashing, never
# more than a few seconds (a service down for half a minute because it flapped twice
# is worse than a few quick restarts).
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 4.0
# A child up this long is healthy again: its next crash restarts it at once.
HEALTHY_UPTIME = 5.0
STOP_TIMEOUT = 10.0


# --- bootstrap ------------------------------------------------------------------------


@dataclass
class Bootstrap:
    endpoint: str
    clouds_path: Path
    token_created: bool
    agent_credential: str | None
    agent_skipped_because: str | None
    has_subnets: bool


def token_is_valid_admin(session: Session, secret: str) -> bool:
    token = session.scalar(select(Token).where(Token.token_hash == hash_token(secret)))
    if token is None or ROLE_ADMIN not in (token.roles or []):
        return False
    return token.expires_at is None or token.expires_at > utcnow()


def ensure_clouds_yaml(
    sessions: sessionmaker[Session], path: Path, endpoint: str
) -> tuple[str, bool]:
    """Keep a working admin token in clouds.yaml: (token, whether it was just created)."""
    current = clouds.read(path)
    with db.transaction(sessions) as session:
        if current is not None and token_is_valid_admin(session, current[1]):
            token, created = current[1], False
        else:
            token = create_token(session, ADMIN_PROJECT, [ROLE_ADMIN], TOKEN_DESCRIPTION)
            created = True
    if created or current is None or current[0] != endpoint:
        clouds.write(path, endpoint, token)
    return token, created


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    os.replace(tmp, path)


def ensure_enrolment(sessions: sessionmaker[Session], settings: Settings) -> str:
    """The local host's agent credential, reused across restarts while it still works."""
    path = settings.state_dir / CREDENTIAL_FILE
    try:
        stored = path.read_text().strip()
    except FileNotFoundError:
        stored = ""
    with db.transaction(sessions) as session:
        if stored:
            host = hosts.authenticate(session, stored)
            if host is not None and host.name == settings.host_name:
                return stored
        secret = hosts.enroll(
            session,
            settings.host_name,
            availability_zone=settings.availability_zone,
            capacity=settings.host_capacity,
        )
    _write_secret(path, secret)
    log.info("enrolled local host %s", settings.host_name)
    return secret


def agent_blocker() -> str | None:
    """Why the local agent cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("haproxy") is None:
        return "haproxy is not installed"
    return None


def bootstrap(settings: Settings, with_agent: bool = True) -> Bootstrap:
    db.upgrade_schema(settings)
    engine = db.make_engine(settings.database_url)
    sessions = db.make_session_factory(engine)
    endpoint = clouds.endpoint_for_bind(settings.api_bind)
    clouds_path = settings.state_dir / clouds.FILE_NAME
    _, created = ensure_clouds_yaml(sessions, clouds_path, endpoint)
    blocker = agent_blocker() if with_agent else "disabled with --no-agent"
    credential = ensure_enrolment(sessions, settings) if blocker is None else None
    with db.transaction(sessions) as session:
        has_subnets = bool(session.scalar(select(func.count()).select_from(Subnet)))
    engine.dispose()
    return Bootstrap(endpoint, clouds_path, created, credential, blocker, has_subnets)


# --- supervision ----------------------------------------------------------------------


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    next_start: float = 0.0
    reader: threading.Thread | None = field(default=None, repr=False)


def child_argv(command: str) -> list[str]:
    # The interpreter that runs us, so a venv need not be on PATH.
    return [sys.executable, "-m", "openha.cli", command]


def restart_delay(failures: int) -> float:
    """Seconds before restarting a child that crashed `failures` times in a row."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** max(0, failures - 1))


class Supervisor:
    """Starts children, restarts the ones that die (with backoff), stops them all on request."""

    def __init__(self, children: list[Child], console: Console) -> None:
        self.children = children
        self.console = console
        self._out_lock = threading.Lock()

    def start(self, child: Child) -> None:
        env = {**child.env, PARENT_PID_ENV: str(os.getpid())}
        child.proc = subprocess.Popen(
            child.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        assert child.proc.stdout is not None
        child.reader = threading.Thread(
            target=self._relay, args=(child.name, child.proc.stdout), daemon=True
        )
        child.reader.start()
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    def _relay(self, name: str, stream: IO[bytes]) -> None:
        # Prefix each child line with its name so interleaved logs stay readable.
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self._out_lock:
                self.console.print(
                    Text.assemble((f"{name:>10} | ", "dim cyan"), line),
                    soft_wrap=True,
                    highlight=False,
                )
        stream.close()

    def check(self) -> None:
        """One supervision pass: start what is due, notice what died."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is None:
                if now >= child.next_start:
                    self.start(child)
                continue
            code = child.proc.poll()
            uptime = now - child.started_at
            if uptime >= HEALTHY_UPTIME:
                child.failures = 0  # healthy for a while: the backoff starts over
            if code is None:
                continue
            child.failures += 1
            delay = restart_delay(child.failures)
            log.warning(
                "%s exited with code %s after %.1f s; restarting in %.2f s",
                child.name,
                code,
                uptime,
                delay,
            )
            if child.reader is not None:
                child.reader.join(timeout=1)
            child.proc = None
            child.next_start = now + delay

    def running(self) -> list[Child]:
        return [c for c in self.children if c.proc is not None and c.proc.poll() is None]

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM in reverse start order, then SIGKILL whatever is left after `timeout`."""
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                log.info("stopping %s (pid %d)", child.name, child.proc.pid)
                _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", child.name, timeout)
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait()
            if child.reader is not None:
                child.reader.join(timeout=1)
        for child in self.children:
            if child.proc is not None:
                # Whatever the child itself started in its session goes too.
                _signal_group(child.proc, signal.SIGKILL)
                child.proc = None


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def api_ready(endpoint: str) -> bool:
    try:
        return httpx.get(endpoint + "/", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def child_env(settings: Settings, log_level: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OPENHA_STATE_DIR=str(settings.state_dir),
        OPENHA_DATABASE_URL=settings.database_url,
        OPENHA_API_BIND=settings.api_bind,
        OPENHA_LOG_LEVEL=log_level,
    )
    return env


def build_children(settings: Settings, boot: Bootstrap, log_level: str) -> list[Child]:
    env = child_env(settings, log_level)
    children = [
        Child("api", child_argv("api"), env),
        Child("controller", child_argv("controller"), env),
    ]
    if boot.agent_credential is not None:
        agent_env = {**env, "OPENHA_AGENT_TOKEN": boot.agent_credential}
        if "agent_api_url" not in settings.model_fields_set:
            agent_env["OPENHA_AGENT_API_URL"] = boot.endpoint
        children.append(Child("agent", child_argv("agent"), agent_env))
    return children


def summary(settings: Settings, boot: Bootstrap) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("API", boot.endpoint)
    table.add_row("State", str(settings.state_dir))
    table.add_row("Database", settings.database_url)
    table.add_row("clouds.yaml", f"{boot.clouds_path} (cloud 'openha', admin token)")
    table.add_row("Provider", f"{settings.default_provider} (default)")
    if boot.agent_credential is not None:
        table.add_row("Agent", f"supervised, host {settings.host_name}")
    else:
        table.add_row("Agent", f"not started: {boot.agent_skipped_because}")
    return Panel(table, title="OpenHA is up", subtitle="Ctrl-C stops everything", expand=False)


def try_commands(boot: Bootstrap) -> list[str]:
    """Commands to paste, printed outside the panel so that they are not wrapped."""
    os_ = "openstack --os-cloud openha"
    lines = [f"export OS_CLIENT_CONFIG_FILE={boot.clouds_path}", f"{os_} loadbalancer list"]
    if not boot.has_subnets:
        lines += [
            "# no VIP subnet yet: an admin creates one, e.g.",
            f"{os_} network create --share --provider-network-type flat "
            "--provider-physical-network ohbr0 public",
            f"{os_} subnet create --network public --subnet-range 198.51.100.0/24 public-v4",
        ]
    lines.append(f"{os_} loadbalancer create --name lb1 --vip-subnet-id public-v4 --wait")
    return lines


def run(
    settings: Settings,
    log_level: str = "info",
    console: Console | None = None,
    with_agent: bool = True,
) -> int:
    console = console or Console()
    boot = bootstrap(settings, with_agent)
    if boot.token_created:
        log.info("wrote %s with a new admin token", boot.clouds_path)
    if boot.agent_credential is None and settings.default_provider != "noop":
        log.warning(
            "no local agent (%s): load balancers on provider %s need an agent host",
            boot.agent_skipped_because,
            settings.default_provider,
        )
    supervisor = Supervisor(build_children(settings, boot, log_level), console)

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            # A second Ctrl-C: do not wait for graceful shutdowns.
            for child in supervisor.running():
                assert child.proc is not None
                _signal_group(child.proc, signal.SIGKILL)
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    announced = False
    try:
        while not stop.is_set():
            supervisor.check()
            if not announced and api_ready(boot.endpoint):
                announced = True
                console.print(summary(settings, boot))
                console.print(Text("Try:", style="bold"))
                for line in try_commands(boot):
                    style = "dim" if line.startswith("#") else "green"
                    console.print(Text("  " + line, style=style), soft_wrap=True)
            stop.wait(0.25)
    finally:
        supervisor.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("all services stopped")
    return 0
