"""The keeper: while the agent is away, a pair's HAProxy that dies gives up the VIP."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from openha.agent import keeper
from openha.agent.paths import instance_paths

PAIR = "00000000-0000-4000-8000-000000000001"
SINGLE = "00000000-0000-4000-8000-000000000002"


def fake_haproxy(config: Path) -> subprocess.Popen[bytes]:
    """A process whose argv names `config`, as the instance's HAProxy's does."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-f", str(config)]
    )


def wait_for(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_keeper_marks_a_dead_haproxy_down_and_follows_a_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keeper, "SUCCESSOR_WAIT", 0.3)
    pair, single = instance_paths(tmp_path, PAIR), instance_paths(tmp_path, SINGLE)
    procs = []
    for paths, is_pair in ((pair, True), (single, False)):
        paths.instance_dir.mkdir(parents=True)
        if is_pair:
            paths.keepalived_config.write_text("vrrp_instance x {}\n")
        proc = fake_haproxy(paths.config)
        procs.append(proc)
        paths.pid_file.write_text(f"{proc.pid}\n")
    try:
        kept = keeper.Keeper(tmp_path)
        thread = threading.Thread(target=kept.run, daemon=True)
        thread.start()
        wait_for(lambda: len(kept.watching) == 1)  # the pair only
        # A reload: the new process's pid is in the file when the old one leaves.
        successor = fake_haproxy(pair.config)
        procs.append(successor)
        pair.pid_file.write_text(f"{successor.pid}\n")
        procs[0].kill()
        procs[0].wait()
        wait_for(lambda: [p.pid_file for p in kept.watching.values()] == [pair.pid_file])
        time.sleep(0.5)
        assert not pair.haproxy_down.exists()
        successor.kill()
        successor.wait()
        wait_for(lambda: pair.haproxy_down.exists())
        assert pair.haproxy_down.read_text() == "1\n"
        thread.join(5)
        assert not thread.is_alive(), "the keeper stays with nothing left to watch"
        assert not single.haproxy_down.exists()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
