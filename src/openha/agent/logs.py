"""HAProxy's admin events, heard at once: a datagram socket per instance, no traffic.

Each instance's config sends its lines of level notice and above (servers up and
down, backends without servers, reloads; never a request's line, which HAProxy
logs at info) to `<instance dir>/log.sock`, a unix datagram socket the agent binds,
so the socket itself says which instance spoke. A line saying a server or backend
changed state makes the next heartbeat read that instance's state at once
(`take_state_changes`). Nothing is stored here: every line, these included, also
goes to the host's rsyslogd, which files them (see `openha.agent.logpipe`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_MESSAGE = 8192
_PRI = re.compile(r"^<(\d{1,3})>")
_RFC3164_TS = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")
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


@dataclass
class _Source:
    instance_id: str
    sock: socket.socket


class LogCollector:
    """Receives every instance's HAProxy admin events on one thread."""

    def __init__(self) -> None:
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

    def add(self, instance_id: str, socket_path: Path) -> None:
        """Start listening for an instance (idempotent)."""
        with self._lock:
            if instance_id in self._sources:
                return
            socket_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                socket_path.unlink()  # a stale socket from a previous agent run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(socket_path))
            os.chmod(socket_path, 0o600)
            sock.setblocking(False)
            src = _Source(instance_id, sock)
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
            with self._lock:
                for key, _ in events:
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                        continue
                    src: _Source = key.data
                    if src.instance_id in self._sources:
                        self._drain(src)

    def _drain(self, src: _Source) -> None:
        for _ in range(1000):  # bounded so one chatty instance cannot starve the others
            try:
                data = src.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("log socket of %s: %s", src.instance_id, exc)
                return
            _, message = parse_syslog(data[:MAX_MESSAGE].decode(errors="replace"))
            if _STATE_CHANGE.match(message):
                self._state_changed.add(src.instance_id)  # under self._lock (see _run)
