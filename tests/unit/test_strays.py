"""Strays (`agent.strays`): the grace period, the second look before reaping, what the
heartbeat is told, and how a process names its instance directory."""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path

from openha.agent.strays import Stray, StrayWatch, instance_dir_of

NS = Stray("namespace", "ohi-aa", "its instance directory /x is gone", (11, 12))
PROC = Stray("process", "haproxy[7]", "runs /y/instances/i/haproxy.cfg", (7,))


class World:
    """What the finder sees, what was reaped and marked."""

    def __init__(self) -> None:
        self.strays: list[Stray] = []
        self.reaped: list[str] = []
        self.marked: list[tuple[str, str]] = []
        self.asked_with: list[set[str]] = []

    def find(self, own: Collection[str]) -> list[Stray]:
        self.asked_with.append(set(own))
        return list(self.strays)

    def reap(self, stray: Stray) -> list[str]:
        self.reaped.append(stray.name)
        self.strays.remove(stray)
        return []

    def mark(self, namespace: str, owner: str) -> None:
        self.marked.append((namespace, owner))


def watch(world: World, grace: float, own: dict[str, str] | None = None) -> StrayWatch:
    return StrayWatch(
        lambda: dict(own or {}),
        grace=grace,
        interval=0.0,
        finder=world.find,
        reaper=world.reap,
        marker=world.mark,
    )


def one_pass(w: StrayWatch) -> list[Stray]:
    assert w.due()
    return w.run_pass()


def test_a_stray_is_reported_at_once_and_reaped_only_after_the_grace() -> None:
    world = World()
    w = watch(world, grace=0.3)
    assert w.due_report() is None  # before any scan: no word either way
    world.strays = [NS, PROC]
    assert one_pass(w) == []
    report = w.due_report()
    assert report is not None
    assert [(s["kind"], s["name"], s["pids"]) for s in report["current"]] == [
        ("namespace", "ohi-aa", [11, 12]),
        ("process", "haproxy[7]", [7]),
    ]
    assert report["reaped"] == [] and world.reaped == []
    first_seen = report["current"][0]["since"]
    w.reported(report)
    assert w.due_report() is None  # nothing changed: the heartbeat carries nothing
    time.sleep(0.35)
    assert [s.name for s in one_pass(w)] == ["ohi-aa", "haproxy[7]"]
    report = w.due_report()
    assert report is not None and report["current"] == []
    assert [r["name"] for r in report["reaped"]] == ["ohi-aa", "haproxy[7]"]
    assert report["reaped"][0]["since"] == first_seen  # counted from the first sight
    w.reported(report)
    assert w.due_report() is None  # told once


def test_a_stray_explained_in_time_is_not_reaped() -> None:
    world = World()
    w = watch(world, grace=0.2)
    world.strays = [NS]
    one_pass(w)
    world.strays = []  # its owner came back (an agent recreated the directory)
    time.sleep(0.25)
    one_pass(w)
    world.strays = [NS]  # seen again later: the grace starts over
    assert one_pass(w) == [] and world.reaped == []


def test_the_second_look_spares_what_was_explained_meanwhile() -> None:
    world = World()
    w = watch(world, grace=0.0)
    world.strays = [NS]
    calls = 0

    def find(own: Collection[str]) -> list[Stray]:
        nonlocal calls
        calls += 1
        return [NS] if calls == 1 else []  # explained between the scan and the reaping

    w._find = find
    assert one_pass(w) == [] and world.reaped == []


def test_own_namespaces_are_marked_once_and_never_looked_into() -> None:
    world = World()
    own = {"ohi-1": "/a/instances/1", "ohi-2": "/a/instances/2"}
    w = watch(world, grace=10, own=own)
    one_pass(w)
    one_pass(w)
    assert sorted(world.marked) == sorted(own.items())  # once per run, not per pass
    assert world.asked_with[-1] == set(own)


def test_one_pass_at_a_time_and_no_sooner_than_the_interval() -> None:
    world = World()
    w = StrayWatch(dict, grace=1, interval=60, finder=world.find, reaper=world.reap)
    assert w.due()
    assert not w.due()  # one is running
    w.run_pass()
    assert not w.due()  # the interval is not over


def test_a_process_names_its_instance_directory_by_its_config() -> None:
    assert instance_dir_of("/var/lib/openha/instances/abc/haproxy.cfg") == Path(
        "/var/lib/openha/instances/abc"
    )
    assert instance_dir_of("/tmp/oha-x/instances/i-1/keepalived.conf") == Path(
        "/tmp/oha-x/instances/i-1"
    )
    # A hand-written config anywhere else is nobody's instance: never a stray.
    assert instance_dir_of("/etc/haproxy/haproxy.cfg") is None
    assert instance_dir_of("/tmp/bench/baseline.cfg") is None
