"""The agent's own rsyslogd: started, adopted, reconfigured and signalled by the agent.

One per agent, with its own configuration, pid file, work directory and socket under
`<agent_dir>/syslog/` (never the system's rsyslog). Like HAProxy, it is part of the
data plane: it keeps running when the agent stops, and a starting agent adopts it
when it runs the configuration the agent would write, else replaces it. A new
configuration is checked (`rsyslogd -N1`) before it replaces the running one; a
refused one leaves the old one running. SIGHUP makes rsyslogd reopen its files
(after the agent renamed them) and reload its lookup table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from openha.agent.haproxy import atomic_write
from openha.agent.procs import cmdline, pid_alive

log = logging.getLogger(__name__)

RSYSLOGD = "/usr/sbin/rsyslogd"
# rsyslogd runs ahead of the HAProxy processes it drains: starved of CPU on a busy
# host it would fall behind, and HAProxy drops what no longer fits its log ring. Its
# work is a fixed small cost per line, so priority cannot let it take over the host.
NICE = -10
_NICE_CMD = ("nice", "-n", str(NICE))


class SyslogdError(RuntimeError):
    """rsyslogd refused its configuration or would not start."""


class Syslogd:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.config = directory / "rsyslog.conf"
        self.pid_file = directory / "rsyslogd.pid"
        self.work_dir = directory / "work"
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None  # when this agent started it

    def pid(self) -> int | None:
        """The running rsyslogd of this agent (its pid file, checked against /proc)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if self._proc is not None and self._proc.pid == pid and self._proc.poll() is not None:
            return None  # ours, exited (and now reaped)
        if not pid_alive(pid):
            return None
        return pid if str(self.config) in cmdline(pid) else None

    def ensure(self, text: str) -> bool:
        """Run rsyslogd with configuration `text`; True when it was (re)started."""
        with self._lock:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.work_dir.mkdir(mode=0o700, exist_ok=True)
            current = self.config.read_text() if self.config.exists() else None
            pid = self.pid()
            if current == text and pid is not None:
                return False
            if current != text:
                if pid is not None:
                    # A running rsyslogd is replaced only by one that will start.
                    self._check(text)
                atomic_write(self.config, text, 0o600)
            if pid is not None:
                self._stop(pid)
            self._start()
            return True

    def hup(self) -> None:
        """Reopen every file and reload the lookup table."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    def stop(self) -> None:
        with self._lock:
            pid = self.pid()
            if pid is not None:
                self._stop(pid)

    def _check(self, text: str) -> None:
        candidate = self.dir / "rsyslog.conf.candidate"
        atomic_write(candidate, text)
        try:
            result = subprocess.run(
                [RSYSLOGD, "-N1", "-f", str(candidate)],
                capture_output=True,
                text=True,
                timeout=30,
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
        if result.returncode != 0:
            raise SyslogdError(f"rsyslogd refused its configuration: {result.stderr[-2000:]}")

    def _start(self) -> None:
        # In the foreground (-n) of a session of its own: no daemonising parent to wait
        # for (about a second), and it outlives the agent like HAProxy does.
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        with open(self.dir / "rsyslogd.stderr", "ab") as err:
            self._proc = subprocess.Popen(
                [*_NICE_CMD, RSYSLOGD, "-n", "-f", str(self.config), "-i", str(self.pid_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while self.pid() is None:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.dir / "rsyslogd.stderr").read_text(errors="replace")[-2000:]
                raise SyslogdError(f"rsyslogd did not start: {tail}")
            time.sleep(0.005)
        log.info("rsyslogd %s started", self.pid())

    def _stop(self, pid: int) -> None:
        # On SIGTERM rsyslogd saves its queues to disk (queue.saveOnShutdown) and exits.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
            return
        # Started by an earlier agent: gone once its pid file is (it removes it on exit).
        deadline = time.monotonic() + 10
        while pid_alive(pid) and self.pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        if pid_alive(pid) and self.pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
