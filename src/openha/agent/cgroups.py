"""Resource walls: one cgroup per instance, on cgroup v2 or the v1 controllers.

The host says which it has (`detect`, from /proc/mounts): the unified hierarchy
(v2) with the cpu, memory and pids controllers, or the per-controller v1 mounts
(cpu, cpuacct, memory, pids), possibly beside a v2 `unified` mount that holds no
controller (a "hybrid" host, like systemd's legacy layout). Both are handled here
with the same calls: `InstanceCgroup.create` makes the group and writes its
limits, `attach` moves a process in (the agent calls it in the child between fork
and exec, so HAProxy and everything it forks start inside), `usage` reads what it
uses, `remove` deletes the group once its processes are gone.

A limit that cannot be written is never dropped silently: `create` returns each
problem as text, and the agent reports it (instance status, event, diagnostics).

Where groups live: `<parent>/openha/<agent key>/<instance id>`, the parent being
`Settings.sandbox_cgroup_parent` when set; otherwise, on v1, the agent's own group
in each hierarchy (so a host supervisor's limits on the agent still cover its load
balancers) and, on v2, the root (a v2 group that holds processes cannot give
controllers to children, and the agent's own group holds the agent). Groups are
recorded in the instance directory, so `openha purge` finds them without the agent.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")
V2_CONTROLLERS = ("cpu", "memory", "pids")
# The CPU quota's period. The kernel's default (100 ms) lets a busy instance under a
# quota of half a core run 50 ms, then stall 50 ms: every request that meets the stall
# waits for it (B's p99 in bench/isolation.py was ~35 ms alone under its quota). A
# 20 ms period bounds a stall to 10 ms for the same share of the CPU.
CFS_PERIOD_US = 20_000
# v2's default cpu.weight is 100 and v1's default cpu.shares 1024: weights scale alike.
V1_SHARES_PER_WEIGHT = 1024 / 100


@dataclass(frozen=True)
class Limits:
    """What an instance may use: a CPU weight, optional CPU quota (cores), memory, tasks."""

    cpu_weight: int = 100  # 1..10000, relative to other instances (v2 semantics)
    cpu_max: float | None = None  # cores; None: no quota
    memory_max_mb: int | None = None  # None: no limit
    pids_max: int | None = None  # tasks (threads count); None: no limit

    def as_dict(self) -> dict[str, int | float | None]:
        return {
            "cpu_weight": self.cpu_weight,
            "cpu_max": self.cpu_max,
            "memory_max_mb": self.memory_max_mb,
            "pids_max": self.pids_max,
        }


@dataclass
class Usage:
    """What an instance's group uses now (None: not readable on this host)."""

    cpu_seconds: float | None = None
    memory_bytes: int | None = None
    memory_max_bytes: int | None = None
    pids: int | None = None
    pids_max: int | None = None
    oom_kills: int | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Hierarchy:
    """The host's cgroup layout: which version, and where each controller is mounted."""

    mode: str  # "v2" | "v1" | "none"
    detail: str
    # v2: {"unified": mount}; v1: controller -> mount (co-mounted ones share a path).
    mounts: dict[str, Path] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        return {"mode": self.mode, "detail": self.detail, "mounts": sorted(
            {str(p) for p in self.mounts.values()})}  # fmt: skip


def parse_mounts(text: str) -> Hierarchy:
    """The layout /proc/mounts (as `text`) describes."""
    v1: dict[str, Path] = {}
    v2: list[Path] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        where, fstype, options = Path(parts[1]), parts[2], parts[3].split(",")
        if fstype == "cgroup2":
            v2.append(where)
        elif fstype == "cgroup":
            for option in options:
                if option in V1_CONTROLLERS:
                    v1.setdefault(option, where)
    for mount in v2:
        available = _read(mount / "cgroup.controllers").split()
        if all(c in available for c in V2_CONTROLLERS):
            return Hierarchy("v2", f"cgroup v2 at {mount}", {"unified": mount})
    if v1:
        missing = [c for c in V1_CONTROLLERS if c not in v1]
        detail = "cgroup v1 controllers " + ", ".join(sorted(v1))
        if v2:
            detail += f" (v2 mounted at {v2[0]} without these controllers)"
        if missing:
            detail += f"; missing: {', '.join(missing)}"
        return Hierarchy("v1", detail, v1)
    return Hierarchy("none", "no usable cgroup hierarchy", {})


def detect() -> Hierarchy:
    try:
        return parse_mounts(Path("/proc/mounts").read_text())
    except OSError as exc:
        return Hierarchy("none", f"cannot read /proc/mounts: {exc}", {})


def own_groups(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup (as `text`): controller (or "unified") -> group path."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and not controllers:
            out["unified"] = path
        for name in controllers.split(","):
            if name:
                out[name] = path
    return out


def agent_key(agent_dir: Path | str) -> str:
    """A short name for an agent's subtree: several agents may share a host."""
    return hashlib.sha256(str(Path(agent_dir).absolute()).encode()).hexdigest()[:12]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _mount_of(path: Path) -> Path | None:
    """The cgroup mount holding `path` (a recorded group, read without `detect`)."""
    best: Path | None = None
    for mount in detect().mounts.values():
        if path.is_relative_to(mount) and (best is None or len(mount.parts) > len(best.parts)):
            best = mount
    return best


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _int(text: str) -> int | None:
    text = text.strip()
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _keyed(text: str, key: str) -> int | None:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return _int(value)
    return None


class InstanceCgroup:
    """One instance's group: a directory per distinct hierarchy (one on v2)."""

    def __init__(self, hierarchy: Hierarchy, dirs: dict[str, Path]) -> None:
        self.hierarchy = hierarchy
        self.dirs = dirs  # controller (v1) or "unified" (v2) -> group directory

    @classmethod
    def for_instance(
        cls, hierarchy: Hierarchy, parent: dict[str, str], agent: str, instance_id: str
    ) -> InstanceCgroup:
        """The group of `instance_id` under `parent` (controller -> path in its hierarchy)."""
        levels = agent_levels(hierarchy, parent, agent)
        return cls(hierarchy, {name: level / instance_id for name, level in levels.items()})

    @classmethod
    def from_record(cls, record: dict[str, object]) -> InstanceCgroup:
        dirs = record.get("dirs") or {}
        assert isinstance(dirs, dict)
        mode = str(record.get("mode") or "none")
        hierarchy = Hierarchy(mode, "recorded", {})
        return cls(hierarchy, {str(k): Path(str(v)) for k, v in dirs.items()})

    def record(self) -> dict[str, object]:
        return {"mode": self.hierarchy.mode, "dirs": {k: str(v) for k, v in self.dirs.items()}}

    def distinct(self) -> list[Path]:
        seen: list[Path] = []
        for path in self.dirs.values():
            if path not in seen:
                seen.append(path)
        return seen

    def path(self) -> str:
        """The group's path within its hierarchy (the memory one's on v1: a v1 parent
        may differ per hierarchy)."""
        for name in ("unified", "memory", *self.dirs):
            if name in self.dirs and (rel := self._relative(name)) is not None:
                return rel
        return ""

    def exists(self) -> bool:
        return bool(self.dirs) and all(p.is_dir() for p in self.distinct())

    # -- making it --

    def create(self, limits: Limits) -> list[str]:
        """Make the group (idempotent) and write `limits`; the problems, as text."""
        if self.hierarchy.mode == "none":
            return [f"no cgroup hierarchy: {self.hierarchy.detail}; no resource limit applies"]
        problems: list[str] = []
        if self.hierarchy.mode == "v2":
            problems += self._enable_v2()
        for path in self.distinct():
            for attempt in range(3):
                try:
                    path.mkdir(parents=True, exist_ok=True)
                    break
                except FileNotFoundError:
                    # Another agent of the host removed the emptied `openha` level
                    # between our two mkdirs (`remove_levels`): make it again.
                    if attempt == 2:
                        problems.append(f"cannot create cgroup {path}: it keeps vanishing")
                except OSError as exc:
                    problems.append(f"cannot create cgroup {path}: {exc.strerror}")
                    break
        if problems:
            return problems
        if self.hierarchy.mode == "v2":
            return problems + self._limits_v2(limits)
        return problems + self._limits_v1(limits)

    def _enable_v2(self) -> list[str]:
        """Give cpu, memory and pids to every level down to the instance's parent."""
        group = self.dirs["unified"]
        mount = self.hierarchy.mounts["unified"]
        parts = group.relative_to(mount).parts
        levels = [mount.joinpath(*parts[:i]) for i in range(len(parts))]
        problems = []
        for level in levels:
            with contextlib.suppress(FileExistsError):
                level.mkdir(exist_ok=True)
            enabled = _read(level / "cgroup.subtree_control").split()
            wanted = [c for c in V2_CONTROLLERS if c not in enabled]
            if not wanted:
                continue
            try:
                _write(level / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
            except OSError as exc:
                problems.append(
                    f"cannot enable {', '.join(wanted)} in {level}: {exc.strerror} "
                    "(a v2 group holding processes cannot give controllers to children)"
                )
        return problems

    def _set(self, problems: list[str], what: str, path: Path, value: str) -> None:
        try:
            current = _read(path).strip()
            if current.split() != value.split():
                _write(path, value)
        except OSError as exc:
            problems.append(f"{what} {value!r} not applied ({path}): {exc.strerror}")

    def _limits_v2(self, limits: Limits) -> list[str]:
        group, problems = self.dirs["unified"], list[str]()
        self._set(problems, "cpu weight", group / "cpu.weight", str(limits.cpu_weight))
        quota = (
            f"{max(1000, round(limits.cpu_max * CFS_PERIOD_US))} {CFS_PERIOD_US}"
            if limits.cpu_max
            else f"max {CFS_PERIOD_US}"
        )
        self._set(problems, "cpu max", group / "cpu.max", quota)
        memory = str(limits.memory_max_mb << 20) if limits.memory_max_mb else "max"
        self._set(problems, "memory max", group / "memory.max", memory)
        pids = str(limits.pids_max) if limits.pids_max else "max"
        self._set(problems, "pids max", group / "pids.max", pids)
        return problems

    def _limits_v1(self, limits: Limits) -> list[str]:
        problems: list[str] = []
        cpu, memory, pids = (self.dirs.get(c) for c in ("cpu", "memory", "pids"))
        if cpu is None:
            problems.append("cpu controller not mounted: cpu weight and quota not applied")
        else:
            shares = max(2, round(limits.cpu_weight * V1_SHARES_PER_WEIGHT))
            self._set(problems, "cpu shares", cpu / "cpu.shares", str(shares))
            self._set(problems, "cpu period", cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            quota = max(1000, round(limits.cpu_max * CFS_PERIOD_US)) if limits.cpu_max else -1
            self._set(problems, "cpu quota", cpu / "cpu.cfs_quota_us", str(quota))
        if memory is None:
            if limits.memory_max_mb:
                problems.append("memory controller not mounted: memory limit not applied")
        else:
            # v1 reads "no limit" back as a huge number: write -1, compare what it means.
            value = str(limits.memory_max_mb << 20) if limits.memory_max_mb else "-1"
            current = _int(_read(memory / "memory.limit_in_bytes"))
            unlimited = current is None or current >= 1 << 62
            if not (value == "-1" and unlimited) and str(current) != value:
                try:
                    _write(memory / "memory.limit_in_bytes", value)
                except OSError as exc:
                    problems.append(f"memory max {value!r} not applied ({memory}): {exc.strerror}")
        if pids is None:
            if limits.pids_max:
                problems.append("pids controller not mounted: pids limit not applied")
        else:
            value = str(limits.pids_max) if limits.pids_max else "max"
            self._set(problems, "pids max", pids / "pids.max", value)
        return problems

    # -- processes --

    def attach(self, pid: int = 0) -> None:
        """Move process `pid` (0: the caller) into the group, in every hierarchy."""
        pid = pid or os.getpid()
        for path in self.distinct():
            _write(path / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        first = next(iter(self.distinct()), None)
        if first is None:
            return []
        return [int(p) for p in _read(first / "cgroup.procs").split() if p.isdigit()]

    def holds(self, pid: int) -> bool:
        """Whether `pid` is in the group in every hierarchy."""
        try:
            groups = own_groups(Path(f"/proc/{pid}/cgroup").read_text())
        except OSError:
            return False
        if not self.dirs:
            return False
        return all(groups.get(name) == self._relative(name) for name in self.dirs)

    def _relative(self, name: str) -> str | None:
        """The group's path inside hierarchy `name` (as /proc/<pid>/cgroup says it)."""
        mount = self.hierarchy.mounts.get(name) or _mount_of(self.dirs[name])
        if mount is None:
            return None
        return "/" + str(self.dirs[name].relative_to(mount))

    # -- reading --

    def usage(self) -> Usage:
        if self.hierarchy.mode == "v2" or "unified" in self.dirs:
            group = self.dirs["unified"]
            usec = _keyed(_read(group / "cpu.stat"), "usage_usec")
            return Usage(
                cpu_seconds=usec / 1e6 if usec is not None else None,
                memory_bytes=_int(_read(group / "memory.current")),
                memory_max_bytes=_int(_read(group / "memory.max")),
                pids=_int(_read(group / "pids.current")),
                pids_max=_int(_read(group / "pids.max")),
                oom_kills=_keyed(_read(group / "memory.events"), "oom_kill"),
            )
        usage = Usage()
        if (acct := self.dirs.get("cpuacct")) is not None:
            ns = _int(_read(acct / "cpuacct.usage"))
            usage.cpu_seconds = ns / 1e9 if ns is not None else None
        if (memory := self.dirs.get("memory")) is not None:
            usage.memory_bytes = _int(_read(memory / "memory.usage_in_bytes"))
            limit = _int(_read(memory / "memory.limit_in_bytes"))
            usage.memory_max_bytes = limit if limit is not None and limit < 1 << 62 else None
            usage.oom_kills = _keyed(_read(memory / "memory.oom_control"), "oom_kill")
        if (pids := self.dirs.get("pids")) is not None:
            usage.pids = _int(_read(pids / "pids.current"))
            usage.pids_max = _int(_read(pids / "pids.max"))
        return usage

    # -- removing it --

    def remove(self, timeout: float = 3.0) -> list[str]:
        """Delete the group (its processes must be gone); what could not be removed."""
        left: list[str] = []
        for path in self.distinct():
            deadline = time.monotonic() + timeout
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    # EBUSY while exiting processes still count as members.
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        left.append(f"{path}: {exc.strerror}")
                        break
                    time.sleep(0.02)
        return left


def agent_levels(hierarchy: Hierarchy, parent: dict[str, str], agent: str) -> dict[str, Path]:
    """An agent's level in each hierarchy: `<mount>/<parent>/openha/<agent key>`."""
    levels = {}
    for name, mount in hierarchy.mounts.items():
        base = parent.get(name, "/").strip("/")
        levels[name] = mount / "/".join(p for p in (base, "openha", agent) if p)
    return levels


# The CPU weight file of each layout, its default and its bounds.
_WEIGHTS = {
    "v1": ("cpu", "cpu.shares", 1024, 2, 262144),
    "v2": ("unified", "cpu.weight", 100, 1, 10000),
}


def balance_levels(hierarchy: Hierarchy, levels: dict[str, Path]) -> list[str]:
    """Weigh an agent's level, and the `openha` level above it, as the sum of what they
    hold; the problems, as text.

    The kernel shares CPU between siblings by weight: left at the default, the whole
    `openha` subtree would weigh as much as one process beside it (a client, a backend,
    rsyslogd), so every load balancer of the host together would get the CPU of one
    task whenever the host is busy, and an instance's own weight would mean nothing
    outside the subtree. Summed up, each instance competes with the host's other tasks
    by its own weight, as if it sat beside them.
    """
    if hierarchy.mode not in _WEIGHTS:
        return []
    name, file, default, low, high = _WEIGHTS[hierarchy.mode]
    level = levels.get(name)
    if level is None:
        return []
    problems = []
    for path in (level, level.parent):
        try:
            children = [c for c in path.iterdir() if c.is_dir()]
        except OSError:
            continue  # not made yet, or removed meanwhile
        total = sum(_int(_read(c / file)) or default for c in children) or default
        value = str(min(high, max(low, total)))
        try:
            if _read(path / file).strip() != value:
                _write(path / file, value)
        except OSError as exc:
            problems.append(f"cpu weight {value!r} not applied ({path}): {exc.strerror}")
    return problems


def remove_levels(levels: list[Path]) -> None:
    """Remove agents' `openha/<agent key>` levels and the `openha` level above, each only
    when empty: the kernel refuses to remove a group that still has a child group or a
    process (EBUSY), so a level still holding instances is left as it is."""
    for level in levels:
        for path in (level, level.parent):
            with contextlib.suppress(OSError):
                path.rmdir()


def remove_agent_levels(group: InstanceCgroup) -> None:
    """Remove the emptied `openha/<agent key>` levels above an instance's group."""
    remove_levels([path.parent for path in group.distinct()])
