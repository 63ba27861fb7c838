"""One HAProxy process per instance: validate, swap atomically, reload hitlessly.

The controller renders the whole config; this module only checks it (`haproxy -c`)
and makes it the running one. HAProxy runs as a single daemon process (`-D`), not
master-worker: a master costs ~2.4 MB per load balancer for nothing the agent does
not already do (supervise, reload), and a thousand of them on a host add up. A reload
starts a new process that takes the listening sockets over from the serving one
through its stats socket (`-x`, `expose-fd listeners`) and then tells it to finish
its connections and leave (`-sf`): no connection is refused, and a config that
cannot start leaves the old process serving, with HAProxy's own error as the reason.

Every process starts in the instance's cgroup with a cut bounding set and the
instance's uid in its environment; the config's own `chroot`, `uid` and `gid` lock it
in once its sockets are bound (`agent.sandbox`). The agent, not a privileged master,
starts each successor.

Changes that touch only server address/weight/admin state go through the runtime API
instead, with no new process. Either way the agent records what the serving process
loaded (`InstancePaths.loaded`: its pid and config text) only once the start, reload
or runtime commands took, and diffs the next config against that record, never
against the file, so an agent killed half-way through cannot believe a change took
when it did not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from openha.agent import faults
from openha.agent.history import InstanceHistory
from openha.agent.netns import NamespaceExec, namespace_pids, run_in_namespace
from openha.agent.paths import InstancePaths
from openha.agent.procs import cmdline, pid_alive, pid_from_file
from openha.agent.runtime_maps import MapUpdateError, refresh_limits, replace_map
from openha.agent.sandbox import HAPROXY_CAPS, InstanceSandbox
from openha.agent.toptalkers import parse_trips
from openha.domain.observed import ListenerCounters
from openha.render.protection import INTERNAL_PROXY_PREFIX, LIMITS_MAP, TRIPS_TABLE

log = logging.getLogger(__name__)

HAPROXY_BIN = shutil.which("haproxy") or "/usr/sbin/haproxy"
START_TIMEOUT = 15.0
MAX_ERROR_CHARS = 2000


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


# --- show stat --------------------------------------------------------------------------


@dataclass
class StatSummary:
    listeners: dict[str, ListenerCounters] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)
    pools: dict[str, str] = field(default_factory=dict)
    limit_trips: int | None = None  # protected instances: trips of every kind


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


_STAT_COLUMNS = ("pxname", "svname", "scur", "stot", "bin", "bout", "ereq", "status")


def parse_show_stat(text: str) -> StatSummary:
    """Parse `show stat` CSV into per-listener counters and pool/member states.

    Agents read it for many instances, so only the columns used are split out: they
    come before the free-text ones (check descriptions, quoted when they hold a
    comma), which are never split. OpenHA's own proxies (the protection profile's
    tables, trip backend and refresh listener) are neither listeners nor pools.
    """
    text = text.lstrip()
    if text.startswith("# "):
        text = text[2:]
    header, _, body = text.partition("\n")
    names = header.rstrip("\r").split(",")
    index = {name: names.index(name) for name in _STAT_COLUMNS if name in names}
    depth = max(index.values(), default=0) + 1
    summary = StatSummary()
    for line in body.splitlines():
        fields = line.split(",", depth)
        row = {name: fields[i] for name, i in index.items() if i < len(fields)}
        px, sv = row.get("pxname"), row.get("svname")
        if not px or not sv or px.startswith(INTERNAL_PROXY_PREFIX):
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


# A changed certificate file: HAProxy's runtime API swaps what it loaded from that path
# (`set ssl cert` opens a transaction, `commit ssl cert` applies it) without a reload.
# A changed CA or CRL reloads: HAProxy resumes cached TLS sessions without verifying
# the peer again, so only a new process (no session cache) enforces the new CA or CRL
# at once (a member no longer trusted kept answering through resumed sessions).
_RELOAD_SUFFIXES = (".crt-list", "-ca.pem", "-crl.pem")
_RUNTIME_PATH = re.compile(r"/[A-Za-z0-9_./-]+")


# Spec files with this suffix are HAProxy maps (protection thresholds and lists): a
# change goes in through the runtime API (`replace_maps`), no reload.
MAP_SUFFIX = ".map"


def changed_maps(changed_files: Mapping[str, str] | None) -> dict[str, str]:
    """The map files among the changed ones (path -> content)."""
    return {p: c for p, c in (changed_files or {}).items() if p.endswith(MAP_SUFFIX)}


def tls_runtime_changes(changed_files: Mapping[str, str] | None) -> list[str] | None:
    """Runtime API commands loading changed certificate files, or None if a reload is needed.

    `changed_files` maps the absolute paths of files whose content changed to that
    content; None says a file is new (nothing loaded it yet). A changed crt-list (an
    SNI certificate added or removed), CA or CRL needs a reload too. Other files
    (scripts) are not HAProxy's.
    """
    if changed_files is None:
        return None
    commands: list[str] = []
    for path, content in sorted(changed_files.items()):
        if path.endswith(_RELOAD_SUFFIXES):
            return None
        if not path.endswith(".pem"):
            continue
        if not _RUNTIME_PATH.fullmatch(path):
            return None
        body = content if content.endswith("\n") else content + "\n"
        # The payload ends at an empty line: the one `cli_command` adds after it.
        commands.append(f"set ssl cert {path} <<\n{body}")
        commands.append(f"commit ssl cert {path}")
    return commands


def describe_command(command: str) -> str:
    """What a log line may say about a runtime command: never its payload (keys)."""
    return command.split("\n", 1)[0].removesuffix(" <<")


def runtime_answer_ok(answer: str, command: str = "") -> bool:
    """The runtime API answers nothing on success, or a note about what it changed."""
    text = answer.strip()
    lower = text.lower()
    if command.startswith("set ssl "):
        return "transaction" in lower and "error" not in lower
    if command.startswith("commit ssl "):
        return "success" in lower and "error" not in lower
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

    `haproxy -c` does not bind, and HAProxy binds with SO_REUSEPORT, so a new
    listener could share a port with whatever else holds it there; new addresses are
    tried first, without it: a port held by something else is refused with a clear
    message before any process is started.
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


@dataclass(frozen=True)
class Loaded:
    """What a serving HAProxy process loaded: its pid and its configuration text."""

    pid: int
    config: str


class HAProxyInstance:
    """The HAProxy of one instance, running inside its namespace."""

    def __init__(
        self, paths: InstancePaths, namespace: str, sandbox: InstanceSandbox | None = None
    ) -> None:
        self.paths = paths
        self.namespace = namespace
        # Its uid and cgroup (`agent.sandbox`); None only in tests of this class alone,
        # where the config's uid/gid come from the caller's environment.
        self.sandbox = sandbox
        # What the serving process runs, as far as this agent knows for sure; None
        # when unknown (nothing recorded yet in this run, or adoption found doubt).
        self.loaded: Loaded | None = None
        self.history = InstanceHistory(paths.history)

    # -- process state --

    def pid(self) -> int | None:
        """The serving process's pid, or None (no pid file, dead, or someone else's pid)."""
        return pid_from_file(self.paths.pid_file, self.paths.config)

    def _ours(self, pid: int) -> bool:
        # Pids get reused: make sure this one is our HAProxy (its argv names our config).
        return pid_alive(pid) and str(self.paths.config) in cmdline(pid)

    def running(self) -> bool:
        return self.pid() is not None

    def runtime(self, command: str, timeout: float = 5.0) -> str:
        return cli_command(self.paths.stats_socket, command, timeout)

    def stats(self, trips: bool = False) -> StatSummary:
        """`show stat`, and with `trips` the protection trips table, in one round trip."""
        if not trips:
            return parse_show_stat(self.runtime("show stat"))
        stat, _, table = self.runtime(f"show stat;show table {TRIPS_TABLE}").partition("\n\n")
        summary = parse_show_stat(stat)
        summary.limit_trips = sum(parse_trips(table).values())
        return summary

    def processes(self) -> list[int]:
        """Every live process of this instance: the serving one and any still draining."""
        return [pid for pid in namespace_pids(self.namespace) if self._ours(pid)]

    # -- what runs --

    def record_loaded(self, pid: int, config: str) -> None:
        self.loaded = Loaded(pid, config)
        atomic_write(self.paths.loaded, json.dumps({"pid": pid, "config": config}), 0o600)

    def known_config(self) -> str | None:
        """The config the serving process runs, when this agent knows it for sure."""
        loaded, pid = self.loaded, self.pid()
        return loaded.config if loaded is not None and pid == loaded.pid else None

    def adopt(self, config: str) -> bool:
        """Take over a running process left by a previous agent; True when it runs `config`.

        It does only when nothing leaves a doubt: no apply was cut short (no candidate
        file), the serving process is the one whose load was recorded, it loaded
        exactly `config` (the last applied spec's), and the file a restart would read
        says the same. Anything else means: re-apply (see `reapply`).
        """
        self.loaded = None
        pid = self.pid()
        if pid is None or self.paths.candidate.exists() or "-W" in cmdline(pid):
            return False  # ("-W": a master-worker HAProxy from an older agent)
        try:
            record = json.loads(self.paths.loaded.read_text())
            recorded = Loaded(int(record["pid"]), str(record["config"]))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if recorded.pid != pid or recorded.config != config or self.current_config() != config:
            return False
        self.loaded = recorded
        return True

    # -- lifecycle --

    def write_candidate(self, config: str) -> None:
        """Begin an apply: the candidate file also says, after a crash, that one was cut short."""
        atomic_write(self.paths.candidate, config, 0o600)

    def finish(self) -> None:
        """End an apply, whatever its outcome (see `write_candidate`)."""
        with contextlib.suppress(FileNotFoundError):
            self.paths.candidate.unlink()

    def validate(self, config: str) -> str | None:
        """Check `config` with `haproxy -c`; None when valid, else the error text."""
        if not self._is_candidate(config):
            self.write_candidate(config)
        proc = subprocess.run(
            [HAPROXY_BIN, "-c", "-f", str(self.paths.candidate)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            env=self._env(),
        )
        if proc.returncode == 0:
            return None
        # Name the file as the operator knows it, not the temporary candidate.
        output = (proc.stdout + proc.stderr).replace(str(self.paths.candidate), "haproxy.cfg")
        return summarize_errors(output)

    def _env(self) -> dict[str, str] | None:
        return self.sandbox.env() if self.sandbox is not None else None

    def _spawn(
        self, nsexec: NamespaceExec
    ) -> contextlib.AbstractContextManager[Callable[[], None]]:
        """The child's preexec: namespace, then cgroup and capability bounding set."""
        if self.sandbox is None:
            return contextlib.nullcontext(nsexec)
        return self.sandbox.spawn(nsexec, caps=HAPROXY_CAPS)

    def _is_candidate(self, config: str) -> bool:
        try:
            return self.paths.candidate.read_text() == config
        except FileNotFoundError:
            return False

    def _launch(self, takeover: list[int], pass_sockets: bool) -> int:
        """Start a HAProxy process from the config file; it takes over from `takeover`.

        With `pass_sockets` the new process fetches the listening sockets from the
        serving one's stats socket, so not a single connection is refused. `haproxy -D`
        returns once the new process listens (or failed to); its pid goes to a file of
        its own first, so a failed start never loses the serving pid.
        """
        with contextlib.suppress(FileNotFoundError):
            self.paths.next_pid_file.unlink()
        cmd = [HAPROXY_BIN, "-D", "-p", str(self.paths.next_pid_file), "-f", str(self.paths.config)]
        if takeover:
            if pass_sockets:
                cmd += ["-x", str(self.paths.stats_socket)]
            cmd += ["-sf", *map(str, takeover)]
        # stderr to a file, not a pipe: the daemon could hold a pipe open.
        with (
            NamespaceExec(self.namespace) as nsexec,
            self._spawn(nsexec) as preexec,
            tempfile.TemporaryFile("w+") as err,
        ):
            try:
                proc = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    preexec_fn=preexec,
                    cwd=self.paths.instance_dir,
                    timeout=START_TIMEOUT,
                    env=self._env(),
                )
            except subprocess.TimeoutExpired:
                raise HAProxyError(f"haproxy did not start within {START_TIMEOUT:.0f} s") from None
            err.seek(0)
            output = err.read()
        if proc.returncode != 0:
            raise HAProxyError(summarize_errors(output))
        try:
            pid = int(self.paths.next_pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            raise HAProxyError("haproxy started but wrote no pid") from None
        os.replace(self.paths.next_pid_file, self.paths.pid_file)
        return pid

    def start(self) -> int:
        """Start HAProxy from the config file unless it runs; the serving pid.

        Processes of the instance that still run unrecorded (a crashed agent started
        them but never wrote their pid) are told to leave.
        """
        pid = self.pid()
        if pid is not None:
            return pid
        try:
            pid = self._launch(self.processes(), pass_sockets=False)
        except HAProxyError as exc:
            self.history.count("failed_start", str(exc))
            raise
        self.history.count("start")
        self.record_loaded(pid, self.current_config() or "")
        return pid

    def reload(self, takeover: list[int] | None = None) -> int:
        """Hitless reload from the config file; the new pid, or HAProxyError (old one serves).

        `takeover` defaults to the serving process; adoption passes every process of
        the instance, so a process a crashed agent started but never recorded goes too.
        """
        serving = self.pid()
        if takeover is None:
            takeover = [serving] if serving is not None else []
        try:
            try:
                pid = self._launch(takeover, pass_sockets=serving is not None)
            except HAProxyError as exc:
                if "from the old process" not in str(exc):
                    raise
                # The serving process could not hand its sockets over (stuck, or its stats
                # socket gone): bind anew beside it (SO_REUSEPORT) rather than not at all.
                log.warning("%s: %s; reloading without socket passing", self.namespace, exc)
                pid = self._launch(takeover, pass_sockets=False)
        except HAProxyError as exc:
            self.history.count("failed_reload", str(exc))
            raise
        self.history.count("reload")
        faults.crash_point(faults.HAPROXY_CHANGES_SENT)
        self.record_loaded(pid, self.current_config() or "")
        return pid

    def stop(self, timeout: float = 5.0) -> None:
        """Hard stop of every process of the instance, escalating to SIGKILL."""
        current = self.pid()
        pids = sorted(set(self.processes()) | ({current} if current else set()))
        self.loaded = None
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.02)
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

    def write_config(self, config: str) -> None:
        if self.current_config() != config:
            atomic_write(self.paths.config, config, 0o600)

    def reapply(self, config: str) -> int:
        """Make the running HAProxy run `config` for sure: a reload taking over every process."""
        self.write_config(config)
        takeover = sorted(set(self.processes()) | ({p} if (p := self.pid()) else set()))
        if not takeover:
            return self.start()
        return self.reload(takeover)

    def restart(self, config: str) -> int:
        """Start a dead HAProxy again with `config` (the last applied spec's)."""
        self.write_config(config)
        return self.start()

    def apply(
        self,
        config: str,
        validated: bool = False,
        changed_files: Mapping[str, str] | None = None,
    ) -> ConfigOutcome:
        """Make `config` the running config; on any failure the old one keeps serving.

        `validated` says `validate(config)` just succeeded (the candidate file is in place).
        `changed_files` are the spec's files whose content changed (path -> content; None
        when one is new): changed certificates go through the runtime API when the
        configuration allows it. The caller ends the apply with `finish()`.
        """
        running = self.running()
        known = self.known_config()
        if running and known == config:
            self.write_config(config)
            if not changed_maps(changed_files):
                return ConfigOutcome("none")
            if self.replace_maps(changed_maps(changed_files)):
                return ConfigOutcome("runtime")
            try:  # the new process reads the files
                self.reload()
            except (HAProxyError, OSError) as exc:
                return ConfigOutcome("reload", str(exc))
            return ConfigOutcome("reload")
        if not (validated and self._is_candidate(config)):
            error = self.validate(config)
            if error:
                return ConfigOutcome("none", error)
        previous = self.current_config()
        blocked = unbindable(known or previous or "", config, self.namespace)
        if blocked:
            return ConfigOutcome("none", blocked)
        atomic_write(self.paths.config, config, 0o600)
        faults.crash_point(faults.HAPROXY_CONFIG_WRITTEN)
        if not running:
            try:
                self.start()
                return ConfigOutcome("start")
            except HAProxyError as exc:
                self._restore(previous)
                return ConfigOutcome("start", str(exc))
        pid = self.pid()
        commands = runtime_changes(known, config) if known is not None else None
        if commands is not None:
            tls_commands = tls_runtime_changes(changed_files)
            commands = None if tls_commands is None else commands + tls_commands
        if (
            pid is not None
            and commands is not None
            and self._run_runtime(commands)
            and self.replace_maps(changed_maps(changed_files))
        ):
            faults.crash_point(faults.HAPROXY_CHANGES_SENT)
            self.record_loaded(pid, config)
            self.history.count("runtime_update")
            return ConfigOutcome("runtime")
        try:
            self.reload()
        except (HAProxyError, OSError) as exc:
            self._restore(known if known is not None else previous)
            return ConfigOutcome("reload", str(exc))
        return ConfigOutcome("reload")

    def replace_maps(self, maps: Mapping[str, str]) -> bool:
        """Load changed map files (path -> content) into the running process's maps.

        True when every map took; False (logged) when HAProxy refused one or did not
        answer: the caller reloads, and the new process reads the files.
        """
        for path, content in sorted(maps.items()):
            try:
                count = replace_map(self.runtime, path, content)
                if Path(path).name == LIMITS_MAP:
                    refresh_limits(self.paths.protect_socket)
            except (OSError, MapUpdateError) as exc:
                log.warning("%s: map %s not replaced at runtime (%s)", self.namespace, path, exc)
                return False
            log.info("%s: map %s replaced at runtime (%d entries)", self.namespace, path, count)
        if maps:
            self.history.count("map_update")
        return True

    def _run_runtime(self, commands: list[str]) -> bool:
        for command in commands:
            what = describe_command(command)
            try:
                answer = self.runtime(command)
            except OSError as exc:
                log.warning("runtime command %r failed (%s); reloading instead", what, exc)
                return False
            if not runtime_answer_ok(answer, command):
                log.info("runtime command %r refused (%s); reloading", what, answer.strip()[:200])
                return False
        return True

    def _restore(self, old: str | None) -> None:
        """Put the last good config back so a later restart does not pick up a bad one."""
        if old is None:
            with contextlib.suppress(FileNotFoundError):
                self.paths.config.unlink()
        else:
            atomic_write(self.paths.config, old, 0o600)
