"""Host limits the agent raises at start: never lowered, failures only logged."""

from __future__ import annotations

from pathlib import Path

from openha.agent.hostlimits import (
    neighbour_thresholds,
    raise_inotify_instances,
    raise_neighbour_table,
    raise_netdev_backlog,
)


def test_neighbour_table_is_raised_never_lowered(tmp_path: Path) -> None:
    v4, v6, missing = tmp_path / "v4", tmp_path / "v6", tmp_path / "none"
    for base, values in ((v4, (128, 512, 1024)), (v6, (128, 100_000, 200_000))):
        base.mkdir()
        for n, value in enumerate(values, start=1):
            (base / f"gc_thresh{n}").write_text(f"{value}\n")
    changed = raise_neighbour_table(65536, (v4, v6, missing))
    assert neighbour_thresholds(65536) == {
        "gc_thresh1": 8192,
        "gc_thresh2": 32768,
        "gc_thresh3": 65536,
    }
    assert [int((v4 / f"gc_thresh{n}").read_text()) for n in (1, 2, 3)] == [8192, 32768, 65536]
    # What the operator set higher stays.
    assert [int((v6 / f"gc_thresh{n}").read_text()) for n in (1, 2, 3)] == [8192, 100_000, 200_000]
    assert len(changed) == 4
    assert raise_neighbour_table(65536, (v4, v6)) == []  # idempotent


def test_netdev_backlog_is_raised_never_lowered(tmp_path: Path) -> None:
    backlog = tmp_path / "netdev_max_backlog"
    backlog.write_text("1000\n")
    assert raise_netdev_backlog(16384, backlog) == f"{backlog}: 1000 -> 16384"
    assert int(backlog.read_text()) == 16384
    assert raise_netdev_backlog(16384, backlog) is None  # idempotent
    backlog.write_text("50000\n")
    assert raise_netdev_backlog(16384, backlog) is None
    assert int(backlog.read_text()) == 50000
    assert raise_netdev_backlog(16384, tmp_path / "missing") is None


def test_inotify_instances_are_raised_never_lowered(tmp_path: Path) -> None:
    limit = tmp_path / "max_user_instances"
    limit.write_text("128\n")
    assert raise_inotify_instances(8192, limit) == f"{limit}: 128 -> 8192"
    assert raise_inotify_instances(8192, limit) is None  # idempotent
    limit.write_text("65536\n")
    assert raise_inotify_instances(8192, limit) is None
    assert int(limit.read_text()) == 65536
