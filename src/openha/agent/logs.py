"""HAProxy log collection: a syslog datagram socket per instance, bounded files per LB.

Each instance's config sends its logs to `<instance dir>/log.sock` (a unix datagram
socket the agent binds), so the socket itself says which instance a line belongs to:
no parsing of tags needed, and one tenant cannot forge another's lines. Records are
stored as JSON lines tagged with LB id, project id and listener id (HAProxy's frontend
name is the listener id) in `<instance dir>/logs/haproxy.log`, rotated at a size limit
with a fixed number of old files, so disk use per instance is bounded. Lines that
arrive while the agent is down are lost (HAProxy never blocks on logging), which is
the right trade for a data plane.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from openha.agent.protocol import LogRecord

log = logging.getLogger(__name__)

MAX_MESSAGE = 8192
LOG_FILE = "haproxy.log"
_PRI = re.compile(r"^<(\d{1,3})>")
_RFC3164_TS = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")
_SECTION = re.compile(r"^\s*(?:frontend|listen)\s+(\S+)", re.MULTILINE)
# HAProxy's own word that a server or a backend changed state ("Server <pool>/<member>
# is DOWN, reason: ...", "... is UP", "... was DOWN and now enters maintenance",
# "backend <pool> has no server available!"): the heartbeat reads that instance's
# state at once instead of waiting for its turn in the slow sweep.
_STATE_CHANGE = re.compile(r"^(?:Backup )?Server \S+/\S+ (?:is|was) |^backend \S+ has no server")


def parse_syslog(line: str) -> tuple[int | None, str]:
    """Split a RFC 3164 or RFC 5424 line into (priority, message)."""
    line = line.rstrip("\r\n\0")
    pri = None
    m = _PRI.match(line)
    if m:
        pri = int(m.group(1))
        line = line[m.end() :]
    if line.startswith("1 "):
        # RFC 5424: VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG
        parts = line.split(" ", 6)
        if len(parts) == 7:
            rest = parts[6]
            if rest.startswith("- "):
                return pri, rest[2:]
            if rest.startswith("["):
                end = rest.find("] ")
                return pri, rest[end + 2 :] if end >= 0 else rest
            return pri, rest
        return pri, line
    m = _RFC3164_TS.match(line)
    if m:
        line = line[m.end() :]
        # [HOSTNAME] TAG[PID]: MSG; the tag cannot contain ": ".
        head, sep, msg = line.partition(": ")
        if sep and len(head.split()) <= 2:
            return pri, msg
    return pri, line


def frontends_of(config: str) -> set[str]:
    """Names of the frontend/listen sections of an HAProxy config (= listener ids)."""
    return set(_SECTION.findall(config))


def listener_of(message: str, frontends: set[str]) -> str | None:
    """The frontend a log line is about; HAProxy's default formats put it third."""
    tokens = message.split()
    candidates = tokens[2:3] + tokens
    for token in candidates:
        name = token.rstrip("~")  # '~' marks an SSL frontend in httplog
        if name in frontends:
            return name
    return None


class RotatingFile:
    """Append-only JSON-lines file rotated at `max_bytes`, keeping `backups` old files."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "ab")  # noqa: SIM115 - kept open for the instance's life

    def write(self, data: bytes) -> None:
        if self._fh.tell() + len(data) > self.max_bytes and self._fh.tell() > 0:
            self.rotate()
        self._fh.write(data)

    def rotate(self) -> None:
        self._fh.close()
        if self.backups > 0:
            with contextlib.suppress(FileNotFoundError):
                _numbered(self.path, self.backups).unlink()
            for i in range(self.backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(_numbered(self.path, i), _numbered(self.path, i + 1))
            os.replace(self.path, _numbered(self.path, 1))
        else:
            self.path.unlink()
        self._fh = open(self.path, "ab")  # noqa: SIM115

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def files(self) -> list[Path]:
        return log_files(self.path, self.backups)


def _numbered(path: Path, i: int) -> Path:
    return path.with_name(f"{path.name}.{i}")


def log_files(path: Path, backups: int) -> list[Path]:
    """The current file and its rotated predecessors, oldest first."""
    olds = [_numbered(path, i) for i in range(backups, 0, -1)]
    return [p for p in [*olds, path] if p.exists()]


@dataclass
class _Source:
    instance_id: str
    sock: socket.socket
    out: RotatingFile
    tags: dict[str, str]
    frontends: set[str] = field(default_factory=set)


def _read_records(files: list[Path]) -> list[LogRecord]:
    records = []
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        for raw in data.splitlines():
            with contextlib.suppress(ValueError):
                records.append(LogRecord.model_validate_json(raw))
    return records


class LogCollector:
    """Receives every instance's HAProxy logs on one thread and files them."""

    def __init__(self, max_bytes: int = 1 << 20, backups: int = 4) -> None:
        self.max_bytes = max_bytes
        self.backups = backups
        self._sel = selectors.DefaultSelector()
        self._sources: dict[str, _Source] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state_changed: set[str] = set()

    def take_state_changes(self) -> set[str]:
        """Instances whose HAProxy logged a server state change since the last call."""
        with self._lock:
            changed, self._state_changed = self._state_changed, set()
        return changed

    # -- registration --

    def add(
        self,
        instance_id: str,
        socket_path: Path,
        logs_dir: Path,
        tags: dict[str, str],
        frontends: set[str],
    ) -> None:
        """Start collecting for an instance (idempotent: updates tags when already known)."""
        with self._lock:
            src = self._sources.get(instance_id)
            if src is not None:
                src.tags, src.frontends = dict(tags), set(frontends)
                return
            socket_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                socket_path.unlink()  # a stale socket from a previous agent run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            # A larger buffer rides out bursts; HAProxy drops lines rather than block.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind(str(socket_path))
            os.chmod(socket_path, 0o600)
            sock.setblocking(False)
            out = RotatingFile(logs_dir / LOG_FILE, self.max_bytes, self.backups)
            src = _Source(instance_id, sock, out, dict(tags), set(frontends))
            self._sources[instance_id] = src
            self._sel.register(sock, selectors.EVENT_READ, src)
        self._wake()

    def remove(self, instance_id: str) -> None:
        with self._lock:
            src = self._sources.pop(instance_id, None)
            if src is None:
                return
            self._sel.unregister(src.sock)
            path = src.sock.getsockname()
            src.sock.close()
            src.out.close()
            if isinstance(path, str) and path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    # -- the loop --

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="log-collector", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for instance_id in list(self._sources):
            self.remove(instance_id)

    def _run(self) -> None:
        while not self._stop.is_set():
            events = self._sel.select(timeout=1.0)
            touched: set[str] = set()
            with self._lock:
                for key, _ in events:
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                        continue
                    src: _Source = key.data
                    if src.instance_id not in self._sources:
                        continue
                    self._drain(src)
                    touched.add(src.instance_id)
                for instance_id in touched:
                    src_ = self._sources.get(instance_id)
                    if src_ is not None:
                        src_.out.flush()

    def _drain(self, src: _Source) -> None:
        for _ in range(1000):  # bounded so one chatty instance cannot starve the others
            try:
                data = src.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("log socket of %s: %s", src.instance_id, exc)
                return
            self._store(src, data[:MAX_MESSAGE].decode(errors="replace"))

    def _store(self, src: _Source, line: str) -> None:
        _, message = parse_syslog(line)
        if _STATE_CHANGE.match(message):
            self._state_changed.add(src.instance_id)  # under self._lock (see _run)
        record = {
            "ts": round(time.time(), 6),
            "instance_id": src.instance_id,
            "load_balancer_id": src.tags.get("load_balancer_id", ""),
            "project_id": src.tags.get("project_id", ""),
            "listener_id": listener_of(message, src.frontends),
            "message": message,
        }
        try:
            src.out.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        except OSError as exc:  # a full disk must not take the agent down
            log.warning("cannot write logs of %s: %s", src.instance_id, exc)

    # -- reading --

    def _files(self, instance_id: str, logs_dir: Path | None) -> list[Path]:
        with self._lock:
            src = self._sources.get(instance_id)
            if src is not None:
                src.out.flush()
                return src.out.files()
        if logs_dir is None:
            return []
        return log_files(logs_dir / LOG_FILE, self.backups)

    def tail(self, instance_id: str, n: int, logs_dir: Path | None = None) -> list[LogRecord]:
        """The last `n` records of an instance, oldest first."""
        if n <= 0:
            return []
        records: list[LogRecord] = []
        for path in reversed(self._files(instance_id, logs_dir)):
            records = _read_records([path]) + records
            if len(records) >= n:
                break
        return records[-n:]

    def read(
        self, instance_id: str, since: float, logs_dir: Path | None = None, limit: int = 10000
    ) -> list[LogRecord]:
        """Records received at or after unix time `since`, oldest first."""
        records = [r for r in _read_records(self._files(instance_id, logs_dir)) if r.ts >= since]
        return records[-limit:]
