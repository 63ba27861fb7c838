"""One HAProxy master-worker per instance: validate, write atomically, reload hitlessly.

The controller renders the whole config; this module only checks it (`haproxy -c`),
swaps it in with a rename and asks the master to reload through its CLI. The master
CLI does not report a failed reload, so success is judged by comparing `show proc`
before and after (reload counter, failed-reload counter, a new worker). Changes that
touch only server address/weight/admin state are sent through the runtime API instead,
so no reload (and no new worker) is needed; the new config file is still written so a
later restart or reload uses it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from openha.agent import faults
from openha.agent.netns import NamespaceExec, run_in_namespace
from openha.agent.paths import InstancePaths
from openha.domain.observed import ListenerCounters

log = logging.getLogger(__name__)

HAPROXY_BIN = shutil.which("haproxy") or "/usr/sbin/haproxy"
START_TIMEOUT = 15.0
RELOAD_TIMEOUT = 15.0
MAX_ERROR_CHARS = 2000


# How often a reload's progress is checked: the master answers in well under 10 ms.
POLL_INTERVAL = 0.01


class HAProxyError(Exception):
    """HAProxy refused a config, failed to start or failed to reload."""


# --- small helpers ----------------------------------------------------------------------


def atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write `path` so readers see either the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def cli_command(sock_path: Path, command: str, timeout: float = 5.0) -> str:
    """Send one command to an HAProxy CLI socket and return its whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(sock_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def summarize_errors(output: str) -> str:
    """HAProxy's ALERT lines without their noisy prefix: short and useful."""
    lines = []
    for line in output.splitlines():
        if "ALERT" in line or "Fatal errors" in line:
            line = re.sub(r"^\[ALERT\]\s+\(\d+\)\s*:\s*", "", line.strip())
            lines.append(line.removeprefix("config : "))
    text = "\n".join(lines) if lines else output.strip()
    return text[:MAX_ERROR_CHARS] or "haproxy failed without a message"


def pid_alive(pid: int) -> bool:
    """True when `pid` runs and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            kids.append(int(entry))
    return kids


# --- show proc --------------------------------------------------------------------------


@dataclass
class ProcInfo:
    master_pid: int
    reloads: int
    failed_reloads: int
    workers: list[tuple[int, int]] = field(default_factory=list)  # (pid, reloads survived)

    @property
    def current_worker(self) -> int | None:
        """The worker started by the last successful (re)load."""
        current = [pid for pid, reloads in self.workers if reloads == 0]
        return current[0] if current else None


def parse_show_proc(text: str) -> ProcInfo:
    master: ProcInfo | None = None
    workers = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 3:
            continue
        if parts[1] == "master":
            failed = re.search(r"failed:\s*(\d+)", line)
            master = ProcInfo(int(parts[0]), int(parts[2]), int(failed.group(1)) if failed else 0)
        elif parts[1] == "worker":
            workers.append((int(parts[0]), int(parts[2])))
    if master is None:
        raise HAProxyError(f"unexpected 'show proc' answer: {text[:200]!r}")
    master.workers = workers
    return master


# --- show stat --------------------------------------------------------------------------


@dataclass
class StatSummary:
    listeners: dict[str, ListenerCounters] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)
    pools: dict[str, str] = field(default_factory=dict)


def normalize_status(status: str) -> str:
    """'UP 1/3' → 'UP', 'MAINT (via b/s)' → 'MAINT', 'no check' → 'NO_CHECK'."""
    status = status.strip()
    if not status:
        return "UNKNOWN"
    if status.lower() == "no check":
        return "NO_CHECK"
    return status.split()[0].split("(")[0].upper()


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def parse_show_stat(text: str) -> StatSummary:
    """Parse `show stat` CSV into per-listener counters and pool/member states."""
    text = text.lstrip()
    if text.startswith("# "):
        text = text[2:]
    summary = StatSummary()
    for row in csv.DictReader(io.StringIO(text)):
        px, sv = row.get("pxname"), row.get("svname")
        if not px or not sv:
            continue
        if sv == "FRONTEND":
            summary.listeners[px] = ListenerCounters(
                bytes_in=_int(row.get("bin")),
                bytes_out=_int(row.get("bout")),
                active_connections=_int(row.get("scur")),
                total_connections=_int(row.get("stot")),
                request_errors=_int(row.get("ereq")),
            )
        elif sv == "BACKEND":
            summary.pools[px] = normalize_status(row.get("status") or "")
        else:
            summary.members[sv] = normalize_status(row.get("status") or "")
    return summary


# --- config diff → runtime commands -----------------------------------------------------


_SECTION_KEYWORDS = frozenset(
    [
        "global",
        "defaults",
        "frontend",
        "backend",
        "listen",
        "peers",
        "resolvers",
        "userlist",
        "program",
        "cache",
        "ring",
        "mailers",
        "http-errors",
    ]
)


def _significant_lines(config: str) -> list[str]:
    lines = []
    for raw in config.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append(" ".join(line.split()))
    return lines


@dataclass(frozen=True)
class _Server:
    name: str
    address: str
    weight: int
    disabled: bool
    rest: tuple[str, ...]


def _parse_server(line: str) -> _Server:
    tokens = line.split()
    name, address, params = tokens[1], tokens[2], tokens[3:]
    weight, disabled, rest = 1, False, []
    i = 0
    while i < len(params):
        tok = params[i]
        if tok == "weight" and i + 1 < len(params) and params[i + 1].isdigit():
            weight = int(params[i + 1])
            i += 2
            continue
        if tok == "disabled":
            disabled = True
        elif tok != "enabled":
            rest.append(tok)
        i += 1
    return _Server(name, address, weight, disabled, tuple(rest))


def _split_address(address: str) -> tuple[str, str] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), port


def runtime_changes(old: str, new: str) -> list[str] | None:
    """Runtime API commands turning `old` into `new`, or None if a reload is needed.

    Only server lines may differ, and only in address/port, weight and
    `disabled`; anything else (a new server, a timeout, a comment-free reorder...)
    needs a reload. Returns [] when the configs are equivalent.
    """
    old_lines, new_lines = _significant_lines(old), _significant_lines(new)
    if len(old_lines) != len(new_lines):
        return None
    section = ""
    commands: list[str] = []
    for a, b in zip(old_lines, new_lines, strict=True):
        first = a.split(" ", 1)[0]
        if first in _SECTION_KEYWORDS:
            if a != b:
                return None
            section = a
            continue
        if a == b:
            continue
        if not (first == "server" and b.startswith("server ")):
            return None
        kind, _, proxy = section.partition(" ")
        if kind not in ("backend", "listen") or not proxy:
            return None
        proxy = proxy.split()[0]
        try:
            so, sn = _parse_server(a), _parse_server(b)
        except IndexError:
            return None
        if so.name != sn.name or so.rest != sn.rest:
            return None
        target = f"{proxy}/{sn.name}"
        if so.address != sn.address:
            parsed = _split_address(sn.address)
            if parsed is None or _split_address(so.address) is None:
                return None
            commands.append(f"set server {target} addr {parsed[0]} port {parsed[1]}")
        if so.weight != sn.weight:
            commands.append(f"set server {target} weight {sn.weight}")
        if so.disabled != sn.disabled:
            commands.append(f"set server {target} state {'maint' if sn.disabled else 'ready'}")
    return commands


def runtime_answer_ok(answer: str) -> bool:
    """The runtime API answers nothing on success, or a note about what it changed."""
    text = answer.strip()
    return not text or "changed" in text or "no need to change" in text


# --- the process ------------------------------------------------------------------------


_BIND = re.compile(r"^\s*bind\s+(\S+)")


def bind_addresses(config: str) -> set[tuple[str, int]]:
    """The (address, port) pairs a config's `bind` lines listen on."""
    out = set()
    for line in config.splitlines():
        m = _BIND.match(line)
        if not m:
            continue
        token = m.group(1).strip("'\"")
        if token.startswith("["):
            host, _, port = token[1:].partition("]:")
        else:
            host, _, port = token.rpartition(":")
        if host and port.isdigit():
            out.add((host, int(port)))
    return out


def unbindable(old: str, new: str, namespace: str) -> str | None:
    """Why a listener the new config adds cannot bind in the namespace, if it cannot.

    `haproxy -c` does not bind, and a reload whose new worker fails to bind leaves no
    reason behind (the master only counts a failed reload), so new addresses are
    tried first: a port held by something else is refused with a clear message.
    """
    fresh = sorted(bind_addresses(new) - bind_addresses(old))
    if not fresh:
        return None

    def probe() -> str | None:
        for host, port in fresh:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                except OSError as exc:
                    return f"cannot listen on {host}:{port}: {exc.strerror}"
        return None

    return run_in_namespace(namespace, probe)


@dataclass
class ConfigOutcome:
    """How `HAProxyInstance.apply` made a config the running one, and what failed."""

    action: str  # "none" | "start" | "reload" | "runtime"
    error: str | None = None


class HAProxyInstance:
    """The HAProxy master-worker of one instance, running inside its namespace."""

    def __init__(self, paths: InstancePaths, namespace: str) -> None:
        self.paths = paths
        self.namespace = namespace

    # -- process state --

    def master_pid(self) -> int | None:
        """The running master's pid, or None (no pid file, dead, or someone else's pid)."""
        try:
            pid = int(self.paths.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if not pid_alive(pid):
            return None
        # Pids get reused: make sure this one is our master (its argv names our config).
        if str(self.paths.config) not in cmdline(pid):
            return None
        return pid

    def running(self) -> bool:
        return self.master_pid() is not None

    def master(self, command: str, timeout: float = 5.0) -> str:
        # The master CLI keeps the connection open after a command unless told to quit.
        return cli_command(self.paths.master_socket, f"{command};quit", timeout)

    def show_proc(self) -> ProcInfo:
        return parse_show_proc(self.master("show proc"))

    def runtime(self, command: str, timeout: float = 5.0) -> str:
        return cli_command(self.paths.stats_socket, command, timeout)

    def stats(self) -> StatSummary:
        return parse_show_stat(self.runtime("show stat"))

    def pids(self) -> list[int]:
        """Master and workers."""
        master = self.master_pid()
        return [] if master is None else [master, *children_of(master)]

    # -- lifecycle --

    def validate(self, config: str) -> str | None:
        """Check `config` with `haproxy -c`; None when valid, else the error text."""
        atomic_write(self.paths.candidate, config, 0o600)
        proc = subprocess.run(
            [HAPROXY_BIN, "-c", "-f", str(self.paths.candidate)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode == 0:
            return None
        with contextlib.suppress(FileNotFoundError):
            self.paths.candidate.unlink()
        # Name the file as the operator knows it, not the temporary candidate.
        output = (proc.stdout + proc.stderr).replace(str(self.paths.candidate), "haproxy.cfg")
        return summarize_errors(output)

    def start(self) -> None:
        """Start the master-worker from the current config file, inside the namespace."""
        if self.running():
            return
        with contextlib.suppress(FileNotFoundError):
            self.paths.pid_file.unlink()
        cmd = [
            HAPROXY_BIN,
            "-W",
            "-S",
            str(self.paths.master_socket),
            "-D",
            "-p",
            str(self.paths.pid_file),
            "-f",
            str(self.paths.config),
        ]
        # stderr to a file, not a pipe: the daemonised master could hold a pipe open.
        with NamespaceExec(self.namespace) as nsexec, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=nsexec,
                cwd=self.paths.instance_dir,
                timeout=START_TIMEOUT,
            )
            err.seek(0)
            output = err.read()
        if proc.returncode != 0:
            raise HAProxyError(summarize_errors(output))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.running():
                with contextlib.suppress(OSError, HAProxyError):
                    if self.show_proc().current_worker:
                        return
            time.sleep(0.05)
        raise HAProxyError("haproxy did not come up: " + summarize_errors(output))

    def reload(self) -> None:
        """Hitless reload through the master CLI; raise HAProxyError if it did not take."""
        before = self.show_proc()
        with contextlib.suppress(OSError):
            # The master re-executes itself and drops the connection: no answer expected.
            cli_command(self.paths.master_socket, "reload", timeout=RELOAD_TIMEOUT)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while time.monotonic() < deadline:
            try:
                after = self.show_proc()
            except (OSError, HAProxyError):
                time.sleep(POLL_INTERVAL)  # the master is busy re-executing
                continue
            if after.failed_reloads > before.failed_reloads:
                raise HAProxyError("haproxy reload failed; the previous config keeps serving")
            if after.reloads > before.reloads:
                new = after.current_worker
                if new is not None and new not in {pid for pid, _ in before.workers}:
                    return
            time.sleep(POLL_INTERVAL)
        raise HAProxyError("haproxy reload did not complete in time")

    def stop(self, timeout: float = 5.0) -> None:
        """Hard stop: master and workers, escalating to SIGKILL."""
        pids = self.pids()
        if not pids:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[0], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.05)
        for pid in pids:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    # -- apply --

    def current_config(self) -> str | None:
        try:
            return self.paths.config.read_text()
        except FileNotFoundError:
            return None

    def apply(self, config: str, validated: bool = False) -> ConfigOutcome:
        """Make `config` the running config; on any failure the old one keeps serving.

        `validated` says `validate(config)` just succeeded (the candidate file is in place).
        """
        old = self.current_config()
        running = self.running()
        if old == config:
            with contextlib.suppress(FileNotFoundError):
                self.paths.candidate.unlink()
            if running:
                return ConfigOutcome("none")
            try:
                self.start()
            except HAProxyError as exc:
                return ConfigOutcome("start", str(exc))
            return ConfigOutcome("start")
        if not (validated and self.paths.candidate.exists()):
            error = self.validate(config)
            if error:
                return ConfigOutcome("none", error)
        blocked = unbindable(old or "", config, self.namespace)
        if blocked:
            return ConfigOutcome("none", blocked)
        os.replace(self.paths.candidate, self.paths.config)
        faults.crash_point(faults.HAPROXY_CONFIG_WRITTEN)
        if not running:
            try:
                self.start()
                return ConfigOutcome("start")
            except HAProxyError as exc:
                self._restore(old)
                return ConfigOutcome("start", str(exc))
        commands = runtime_changes(old, config) if old is not None else None
        if commands is not None and self._run_runtime(commands):
            return ConfigOutcome("runtime")
        try:
            self.reload()
        except (HAProxyError, OSError) as exc:
            self._restore(old)
            return ConfigOutcome("reload", str(exc))
        return ConfigOutcome("reload")

    def _run_runtime(self, commands: list[str]) -> bool:
        for command in commands:
            try:
                answer = self.runtime(command)
            except OSError as exc:
                log.warning("runtime command %r failed (%s); reloading instead", command, exc)
                return False
            if not runtime_answer_ok(answer):
                log.info("runtime command %r refused (%s); reloading", command, answer.strip())
                return False
        return True

    def _restore(self, old: str | None) -> None:
        """Put the last good config back so a later restart does not pick up a bad one."""
        if old is None:
            with contextlib.suppress(FileNotFoundError):
                self.paths.config.unlink()
        else:
            atomic_write(self.paths.config, old, 0o600)
