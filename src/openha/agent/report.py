"""Heartbeat reports whose cost follows change, not the number of instances on the host.

A host may run a thousand instances: reading every HAProxy's stats every second
would cost more than all the rest of the agent. So a report is planned here
(`Reporter.plan`), in three tempos:

- at once, on the next heartbeat: instances whose state the agent changed (a
  generation applied or refused, deleted, confirmed or adopted, a VRRP transition written by
  keepalived's notify script) and those whose HAProxy logged a server state
  change ("Server <pool>/<member> is DOWN": `LogCollector.take_state_changes`);
  their processes and stats are read before the report is built;
- every `stats_interval` (30 s; Octavia's amphorae send theirs every 10 s): each
  instance's processes, counters and server states, a slice per heartbeat, so the
  reads are spread evenly and a missed log line is caught within that time;
- every `resync_interval`: each instance's status again, changed or not, also a
  slice per heartbeat; and everything at once on the first report after a start
  (`full`), so an API that lost or missed something converges.

Only statuses that differ from what the API acknowledged are sent; an instance
gone since is listed in `gone`. Nothing is taken as known before the API answered.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from openha.agent.haproxy import StatSummary
from openha.agent.protocol import HeartbeatReport, HeartbeatResponse, InstanceStatus


@dataclass(frozen=True)
class Probe:
    """What reading an instance's processes found: the costly part of its status."""

    pid: int | None
    stats: StatSummary | None
    vrrp_state: str | None


@dataclass
class Plan:
    full: bool
    probe: set[str] = field(default_factory=set)  # read processes and stats first
    build: set[str] = field(default_factory=set)  # statuses that may need building
    resend: set[str] = field(default_factory=set)  # sent even when unchanged


class Reporter:
    def __init__(self, *, interval: float, stats_interval: float, resync_interval: float) -> None:
        self.interval = interval
        self.stats_interval = stats_interval
        self.resync_interval = resync_interval
        self.probes: dict[str, Probe] = {}
        self._acked: dict[str, str] = {}  # instance id -> status JSON the API acknowledged
        self._marks: dict[str, Hashable] = {}  # instance id -> its mark when acknowledged
        self._touched: set[str] = set()  # HAProxy said so; kept until a report is acknowledged
        self._cursors = {"stats": 0, "resync": 0}
        self._full = True
        self._wanted: tuple[int, frozenset[str]] | None = None

    def reset(self) -> None:
        """The API forgot this host (or it registered again): tell it everything."""
        self._full = True
        self._wanted = None

    def _slice(self, ids: Sequence[str], cursor: str, period: float) -> set[str]:
        """The next share of `ids` that makes each come round once per `period`."""
        if not ids or period <= 0:
            return set()
        count = min(len(ids), math.ceil(len(ids) * self.interval / period))
        start = self._cursors[cursor] % len(ids)
        self._cursors[cursor] = start + count
        return {ids[(start + k) % len(ids)] for k in range(count)}

    def plan(self, marks: Mapping[str, Hashable], touched: set[str]) -> Plan:
        """What the next report reads and builds. `marks`: each instance's in-memory
        state (cheap to take); one that differs from the acknowledged one changed."""
        self._touched |= touched
        ids = sorted(marks)
        if self._full:
            every = set(ids)
            return Plan(full=True, probe=every, build=every, resend=every)
        changed = {i for i in ids if self._marks.get(i) != marks[i]}
        changed |= self._touched & set(marks)
        unknown = {i for i in ids if i not in self.probes}
        probe = changed | unknown | self._slice(ids, "stats", self.stats_interval)
        resend = self._slice(ids, "resync", self.resync_interval)
        return Plan(full=False, probe=probe, build=probe | resend, resend=resend)

    def probed(
        self, plan: Plan, fresh: Mapping[str, Probe], marks: Mapping[str, Hashable]
    ) -> set[str]:
        """Record what the probes found; the statuses to build: those whose probe or
        state differs from what the API has, and the resync share (an unchanged idle
        instance costs its probe, not a status)."""
        build = set(plan.build) if plan.full else set(plan.resend)
        for instance_id, probe in fresh.items():
            if (
                self.probes.get(instance_id) != probe
                or self._marks.get(instance_id) != marks.get(instance_id)
                or instance_id not in self._acked
                or instance_id in self._touched
            ):
                build.add(instance_id)
            self.probes[instance_id] = probe
        return build

    def report(
        self,
        plan: Plan,
        statuses: Sequence[InstanceStatus],
        current: Sequence[str],
        *,
        host_id: str,
        name: str,
        load_average: tuple[float, float, float],
    ) -> HeartbeatReport:
        send = [
            s
            for s in statuses
            if s.instance_id in plan.resend or self._acked.get(s.instance_id) != s.model_dump_json()
        ]
        gone = [] if plan.full else sorted(set(self._acked) - set(current))
        wanted_version = None
        if self._wanted is not None and set(current) <= self._wanted[1]:
            wanted_version = self._wanted[0]
        return HeartbeatReport(
            host_id=host_id,
            name=name,
            instances=send,
            full=plan.full,
            gone=gone,
            wanted_version=wanted_version,
            instance_count=len(current),
            load_average=load_average,
        )

    def acknowledge(
        self,
        report: HeartbeatReport,
        statuses: Sequence[InstanceStatus],
        marks: Mapping[str, Hashable],
        answer: HeartbeatResponse,
    ) -> None:
        """The API stored `report`: what it now knows is what the next one compares with."""
        if report.full:
            self._acked.clear()
            self._marks.clear()
            self._full = False
        for status in statuses:
            self._acked[status.instance_id] = status.model_dump_json()
            if status.instance_id in marks:
                self._marks[status.instance_id] = marks[status.instance_id]
            self._touched.discard(status.instance_id)
        for instance_id in report.gone:
            self._acked.pop(instance_id, None)
            self._marks.pop(instance_id, None)
        for instance_id in set(self.probes) - set(marks):
            del self.probes[instance_id]
        if answer.wanted_instance_ids is not None and answer.wanted_version is not None:
            self._wanted = (answer.wanted_version, frozenset(answer.wanted_instance_ids))


def vrrp_mark(path: os.PathLike[str] | str) -> int | None:
    """When keepalived's notify script last wrote the VRRP state (one stat, no read)."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def memory_bytes() -> int | None:
    """The host's memory (MemTotal), for the capacity the control plane derives."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def fd_limit() -> int | None:
    """The system-wide limit of open files (every HAProxy's descriptors count against it)."""
    try:
        with open("/proc/sys/fs/file-max") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
