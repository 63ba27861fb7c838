"""Notice at once when a data-plane process exits, without polling: pidfds in one epoll.

The agent supervises a thousand HAProxy processes; checking each every few hundred
milliseconds would cost a core, and checking each second leaves a dead load balancer
down for up to a second before anyone looks. A pidfd (`os.pidfd_open`, Linux 5.3)
becomes readable when its process exits, whoever its parent is, so one thread
sleeping in epoll hears of every exit the moment it happens and costs nothing
meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class ExitWatcher:
    """Calls `on_exit(key)` from its own thread when the process watched under `key` exits."""

    def __init__(self, on_exit: Callable[[str], None]) -> None:
        self.on_exit = on_exit
        self._epoll = select.epoll()
        self._lock = threading.Lock()
        self._by_key: dict[str, tuple[int, int]] = {}  # key -> (pid, pidfd)
        self._by_fd: dict[int, str] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="exit-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            for key in list(self._by_key):
                self._forget(key)

    def watch(self, key: str, pid: int) -> bool:
        """Watch `pid` under `key` (replacing what `key` watched); False if it is gone."""
        with self._lock:
            current = self._by_key.get(key)
            if current is not None and current[0] == pid:
                return True
            if current is not None:
                self._forget(key)
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                return False
            self._by_key[key] = (pid, fd)
            self._by_fd[fd] = key
            self._epoll.register(fd, select.EPOLLIN)
            return True

    def unwatch(self, key: str) -> None:
        with self._lock:
            self._forget(key)

    def watched(self, key: str) -> int | None:
        """The pid watched under `key`, if any."""
        with self._lock:
            entry = self._by_key.get(key)
        return entry[0] if entry else None

    def _forget(self, key: str) -> None:
        entry = self._by_key.pop(key, None)
        if entry is None:
            return
        fd = entry[1]
        self._by_fd.pop(fd, None)
        with contextlib.suppress(OSError):
            self._epoll.unregister(fd)
        os.close(fd)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._epoll.poll(1.0)
            except InterruptedError:
                continue
            exited = []
            with self._lock:
                for fd, _ in events:
                    if fd == self._wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 64)
                        continue
                    key = self._by_fd.get(fd)
                    if key is not None:
                        self._forget(key)
                        exited.append(key)
            for key in exited:
                try:
                    self.on_exit(key)
                except Exception:
                    log.exception("exit handler for %s failed", key)
