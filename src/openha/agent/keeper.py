"""Stands in for the agent while it is away: tells keepalived when a pair's HAProxy dies.

keepalived learns that its HAProxy died only from the track file the agent writes
(`render.keepalived`): no check process runs while all is well. While the agent
runs, its exit watcher writes the file at once. So that a HAProxy dying while its
agent is away (stopped, being upgraded, crashed) still gives up the VIP, each agent
starts this small process (`replace`), which sleeps on the agent's pidfd until that
agent is gone, then watches the pairs' HAProxy processes the same way (pidfds in one
epoll, nothing polled) and writes "1" to the track file of any that dies with no
successor. It changes nothing else, and leaves when a new agent starts (which
replaces it) or when nothing it watches is left. Only the standard library,
`agent.paths` and `agent.procs` are imported: it is one more process per host, kept small.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from openha.agent.paths import InstancePaths, instance_paths
from openha.agent.procs import cmdline, pid_alive, pid_from_file

log = logging.getLogger(__name__)

PID_FILE = "keeper.pid"
MODULE = "openha.agent.keeper"
# A reload under way when the agent went: the old process may leave before the new one's
# pid is in the file. Wait this long for a successor before calling HAProxy dead.
SUCCESSOR_WAIT = 0.5


def mark_down(paths: InstancePaths) -> None:
    """Write "1" to the instance's track file: keepalived goes FAULT, the peer takes over."""
    if not paths.instance_dir.is_dir():
        return  # deleted meanwhile
    fd, tmp = tempfile.mkstemp(dir=paths.instance_dir, prefix=".haproxy.down.")
    try:
        os.write(fd, b"1\n")
        os.close(fd)
        os.chmod(tmp, 0o600)
        os.replace(tmp, paths.haproxy_down)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    log.warning("instance %s: haproxy died while the agent is away; VIP given up",
                paths.instance_dir.name)  # fmt: skip


class Keeper:
    def __init__(self, agent_dir: Path) -> None:
        self.agent_dir = agent_dir
        self.epoll = select.epoll()
        self.watching: dict[int, InstancePaths] = {}  # pidfd -> instance

    def pairs(self) -> list[InstancePaths]:
        """Instances with a keepalived (pairs) that are not being deleted."""
        out = []
        with contextlib.suppress(OSError):
            for entry in sorted((self.agent_dir / "instances").iterdir()):
                try:
                    paths = instance_paths(self.agent_dir, entry.name)
                except ValueError:
                    continue
                if paths.keepalived_config.exists() and not paths.deleting.exists():
                    out.append(paths)
        return out

    def watch(self, paths: InstancePaths, pid: int) -> bool:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        self.watching[fd] = paths
        self.epoll.register(fd, select.EPOLLIN)
        return True

    def successor(self, paths: InstancePaths) -> int | None:
        deadline = time.monotonic() + SUCCESSOR_WAIT
        while True:
            pid = pid_from_file(paths.pid_file, paths.config)  # as HAProxyInstance.pid
            if pid is not None or time.monotonic() >= deadline:
                return pid
            time.sleep(0.05)

    def follow(self, paths: InstancePaths) -> None:
        """Watch the instance's HAProxy, or mark it down when none serves."""
        pid = self.successor(paths)
        if pid is None or not self.watch(paths, pid):
            with contextlib.suppress(OSError):
                mark_down(paths)

    def run(self) -> None:
        for paths in self.pairs():
            self.follow(paths)
        while self.watching:
            for fd, _ in self.epoll.poll():
                paths = self.watching.pop(fd)
                self.epoll.unregister(fd)
                os.close(fd)
                self.follow(paths)


def wait_for_exit(pid: int) -> None:
    """Sleep until process `pid` is gone (at once if it is already)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def replace(agent_dir: Path) -> int:
    """Stop the keeper a previous agent left and start this agent's own; its pid."""
    stop(agent_dir)
    log_file = agent_dir / "keeper.log"
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", MODULE, str(agent_dir), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the agent's own stop signal must not reach it
            close_fds=True,
        )
    (agent_dir / PID_FILE).write_text(f"{proc.pid}\n")
    return proc.pid


def stop(agent_dir: Path) -> None:
    """Stop the keeper of `agent_dir`, if one runs."""
    try:
        pid = int((agent_dir / PID_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    argv = cmdline(pid)
    if MODULE not in argv or str(agent_dir) not in argv:
        return  # not ours (the pid was reused)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def main(argv: list[str]) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s openha.agent.keeper: %(message)s"
    )
    agent_dir, agent_pid = Path(argv[0]), int(argv[1])
    wait_for_exit(agent_pid)
    Keeper(agent_dir).run()


if __name__ == "__main__":
    main(sys.argv[1:])
