"""The agent's exit watcher: pidfds in one epoll report a process exit at once."""

from __future__ import annotations

import queue
import subprocess
import time

from openha.agent.watch import ExitWatcher


def test_exit_is_reported_at_once_and_only_for_watched_processes() -> None:
    exited: queue.Queue[tuple[str, float]] = queue.Queue()
    watcher = ExitWatcher(lambda key: exited.put((key, time.monotonic())))
    watcher.start()
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    try:
        assert watcher.watch("a", procs[0].pid)
        assert watcher.watch("b", procs[1].pid)
        assert watcher.watch("c", procs[2].pid)
        assert watcher.watched("a") == procs[0].pid
        watcher.unwatch("b")
        procs[1].kill()
        procs[0].kill()
        killed = time.monotonic()
        key, when = exited.get(timeout=5)
        assert key == "a" and when - killed < 0.5
        assert watcher.watched("a") is None  # reported once, then forgotten
        # Re-pointing a key at another process drops the old one silently.
        replacement = subprocess.Popen(["sleep", "60"])
        procs.append(replacement)
        assert watcher.watch("c", replacement.pid)
        procs[2].kill()
        time.sleep(0.3)
        assert exited.empty()
        replacement.kill()
        assert exited.get(timeout=5)[0] == "c"
        for proc in procs:
            proc.wait()
        assert not watcher.watch("d", procs[1].pid)  # gone already (and reaped)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        watcher.stop()
