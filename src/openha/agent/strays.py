"""Strays: data-plane leftovers on a host that no instance directory explains.

Orphans (`service.handle_heartbeat_response`) are instances an agent knows and the
API no longer wants. Strays are what no agent knows any more: an `ohi-*` namespace
whose instance directory is gone (an agent's state directory wiped or restored from
an old backup, a crash between removing a directory and its namespace), or a HAProxy
or keepalived process still running a config from a gone instance directory. Several
agents may share a host (labs, tests, a host between two deployments), so "not one
of mine" does not make a stray: each namespace names its owner (the loopback's
ifalias, set before the namespace gets its name: `netns.namespace_owner`) and each
process its config file, and either is explained while that directory exists.

`StrayWatch` scans every `stray_scan_interval`, keeps since when each stray has been
seen, reaps those unexplained for `stray_grace_seconds` (processes stopped, the
namespace removed, their emptied OpenHA cgroups removed), and hands the heartbeat
what it found and what it reaped (the API turns both into events).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from openha.agent import cgroups
from openha.agent.netns import NETNS_DIR, mark_namespace, namespace_owner, remove_namespace
from openha.agent.paths import NAMESPACE_PREFIX

log = logging.getLogger(__name__)

DATA_PLANE_COMMANDS = ("haproxy", "keepalived")
# An instance's files are under `<agent_dir>/instances/<instance_id>/` (`agent.paths`).
INSTANCES_DIR = "instances"
MAX_REPORTED = 100
STOP_TIMEOUT = 3.0


@dataclass(frozen=True)
class Stray:
    kind: str  # "namespace" | "process"
    name: str  # the namespace, or `<command>[<pid>]`
    reason: str
    pids: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    def view(self, since: str) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "reason": self.reason,
            "pids": list(self.pids),
            "since": since,
        }


def _pids_by_netns() -> dict[int, list[int]]:
    """Network namespace inode -> the pids in it: one pass over /proc for all namespaces."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                out.setdefault(os.stat(f"/proc/{entry}/ns/net").st_ino, []).append(int(entry))
    return out


def instance_dir_of(config: str) -> Path | None:
    """The instance directory a data-plane config path lies in, if it is an OpenHA one."""
    path = Path(config)
    for parent in path.parents:
        if parent.parent.name == INSTANCES_DIR:
            return parent
    return None


def _config_argument(pid: int) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for flag, value in itertools.pairwise(argv):
        if flag == b"-f":
            return value.decode(errors="replace")
    return None


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def find(own_namespaces: Collection[str]) -> list[Stray]:
    """Every stray on this host now; `own_namespaces` (the caller's instances') are
    explained without a look inside."""
    found: list[Stray] = []
    try:
        names = sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(NAMESPACE_PREFIX))
    except FileNotFoundError:
        names = []
    members: dict[int, list[int]] | None = None  # read once, and only if a stray needs it
    in_stray_namespaces: set[int] = set()
    for name in names:
        if name in own_namespaces:
            continue
        owner = namespace_owner(name)
        if owner is not None and Path(owner).is_dir():
            continue
        if members is None:
            members = _pids_by_netns()
        try:
            pids = tuple(sorted(members.get(os.stat(os.path.join(NETNS_DIR, name)).st_ino, [])))
        except FileNotFoundError:
            continue  # removed while we looked
        reason = (
            "no instance directory named (unmarked namespace)"
            if owner is None
            else f"its instance directory {owner} is gone"
        )
        found.append(Stray("namespace", name, reason, pids))
        in_stray_namespaces.update(pids)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in in_stray_namespaces:
            continue
        pid = int(entry)
        command = _command(pid)
        if command not in DATA_PLANE_COMMANDS:
            continue
        config = _config_argument(pid)
        directory = instance_dir_of(config) if config else None
        if directory is None or directory.is_dir():
            continue
        found.append(
            Stray(
                "process",
                f"{command}[{pid}]",
                f"runs {config} of a gone instance directory",
                (pid,),
            )
        )
    return found


def _openha_groups(pids: Collection[int]) -> list[cgroups.InstanceCgroup]:
    """The OpenHA cgroups (under an `openha` level) the processes are in."""
    hierarchy = cgroups.detect()
    groups: dict[tuple[tuple[str, str], ...], cgroups.InstanceCgroup] = {}
    for pid in pids:
        try:
            own = cgroups.own_groups(Path(f"/proc/{pid}/cgroup").read_text())
        except OSError:
            continue
        dirs = {
            controller: mount / path.lstrip("/")
            for controller, mount in hierarchy.mounts.items()
            if (path := own.get(controller)) and "/openha/" in f"{path}/"
        }
        if dirs:
            key = tuple(sorted((k, str(v)) for k, v in dirs.items()))
            groups[key] = cgroups.InstanceCgroup(hierarchy, dirs)
    return list(groups.values())


def _stop(pids: Collection[int]) -> list[int]:
    """SIGTERM, then SIGKILL what is left after `STOP_TIMEOUT`; the pids still alive."""
    alive = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if _alive(pid)]
            if alive:
                time.sleep(0.05)
        if not alive:
            break
    return alive


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie is gone for our purpose; its parent reaps it


def reap(stray: Stray) -> list[str]:
    """Remove a stray: its processes, its namespace, their emptied OpenHA cgroups; the
    problems left (empty when everything went)."""
    groups = _openha_groups(stray.pids)
    problems = [f"pid {pid} survived SIGKILL" for pid in _stop(stray.pids)]
    if stray.kind == "namespace":
        try:
            remove_namespace(stray.name)
        except OSError as exc:
            problems.append(f"namespace {stray.name}: {exc}")
    for group in groups:
        problems += group.remove()
        cgroups.remove_agent_levels(group)
    return problems


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StrayWatch:
    """Finds strays now and then, reaps those unexplained past the grace period, and
    keeps what the next heartbeat should say about them."""

    def __init__(
        self,
        own_namespaces: Callable[[], dict[str, str]],
        *,
        grace: float,
        interval: float,
        finder: Callable[[Collection[str]], list[Stray]] = find,
        reaper: Callable[[Stray], list[str]] = reap,
        marker: Callable[[str, str], None] = mark_namespace,
    ) -> None:
        self._own = own_namespaces  # namespace -> instance directory, of the caller's
        self._mark = marker
        self._marked: set[str] = set()  # own namespaces known marked in this run
        self.grace = grace
        self.interval = interval
        self._find = finder
        self._reap = reaper
        self._lock = threading.Lock()
        self._running = False
        self._last_pass: float | None = None
        self._since: dict[str, tuple[float, str]] = {}  # key -> (monotonic, wall clock)
        self._current: list[dict[str, Any]] = []
        self._reaped: list[dict[str, Any]] = []  # reaped since the last report took them
        self._reported: list[dict[str, Any]] | None = None

    def due(self) -> bool:
        """Whether a pass should start now (none runs, and the interval is over)."""
        with self._lock:
            if self._running:
                return False
            last = self._last_pass
            if last is not None and time.monotonic() - last < self.interval:
                return False
            self._running = True
            return True

    def run_pass(self) -> list[Stray]:
        """One scan (after `due()` said so): the strays reaped in it."""
        try:
            return self._pass()
        finally:
            with self._lock:
                self._running = False
                self._last_pass = time.monotonic()

    def _mark_own(self, own: dict[str, str]) -> None:
        """Mark the caller's namespaces once per run: an agent adopting instances made
        before marks existed must not have them taken for strays by another agent."""
        for namespace, owner in own.items():
            if namespace not in self._marked:
                with contextlib.suppress(OSError, NetlinkError):
                    self._mark(namespace, owner)
                self._marked.add(namespace)
        self._marked &= set(own)

    def _pass(self) -> list[Stray]:
        now = time.monotonic()
        own = self._own()
        self._mark_own(own)
        seen = self._find(own)
        since = {s.key: self._since.get(s.key) or (now, _stamp()) for s in seen}
        for stray in seen:
            if stray.key not in self._since:
                log.warning(
                    "stray %s %s (%s): removed in %.0f s unless explained by then",
                    stray.kind,
                    stray.name,
                    stray.reason,
                    self.grace,
                )
        due = [s for s in seen if now - since[s.key][0] >= self.grace]
        if due:
            # Explained since the scan (an agent marked or recreated it)? Look again.
            still = {s.key for s in self._find(self._own())}
            due = [s for s in due if s.key in still]
        reaped = []
        for stray in due:
            problems = self._reap(stray)
            log.warning(
                "stray %s %s removed (%s)%s",
                stray.kind,
                stray.name,
                stray.reason,
                f": {'; '.join(problems)}" if problems else "",
            )
            reaped.append(stray.view(since[stray.key][1]) | {"problems": problems})
            since.pop(stray.key)
        left = [s for s in seen if s.key in since]
        with self._lock:
            self._since = since
            self._current = [s.view(since[s.key][1]) for s in left][:MAX_REPORTED]
            self._reaped = (self._reaped + reaped)[-MAX_REPORTED:]
        return due

    def due_report(self) -> dict[str, Any] | None:
        """What the next heartbeat carries: None when nothing changed since the last one."""
        with self._lock:
            if self._last_pass is None:
                return None  # no scan yet: nothing to say either way
            if not self._reaped and self._current == self._reported:
                return None
            return {"current": list(self._current), "reaped": list(self._reaped)}

    def reported(self, view: dict[str, Any]) -> None:
        """The API took `view`: its reaped strays are told."""
        with self._lock:
            self._reported = view["current"]
            told = {(r["kind"], r["name"]) for r in view["reaped"]}
            self._reaped = [r for r in self._reaped if (r["kind"], r["name"]) not in told]
