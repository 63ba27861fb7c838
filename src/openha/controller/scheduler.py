"""Placement: which healthy host gets a new instance (least loaded, zone, anti-affinity)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class HostView:
    id: str
    name: str
    availability_zone: str
    capacity: int
    schedulable: bool  # up, enabled, not draining


class NoHostAvailable(Exception):
    pass


def choose_host(
    hosts: Iterable[HostView],
    load: Mapping[str, int],
    *,
    availability_zone: str | None,
    avoid: Iterable[str] = (),
) -> HostView:
    """The schedulable host in the zone with the lowest load/capacity, never one in `avoid`.

    `avoid` holds the hosts already carrying the LB's other instances, so the two
    halves of a pair never share a failure domain.
    """
    excluded = set(avoid)
    candidates = [
        h
        for h in hosts
        if h.schedulable
        and h.id not in excluded
        and (not availability_zone or h.availability_zone == availability_zone)
        and load.get(h.id, 0) < h.capacity
    ]
    if not candidates:
        zone = f" in availability zone {availability_zone}" if availability_zone else ""
        what = "another healthy host" if excluded else "a healthy host"
        raise NoHostAvailable(f"No capacity: needs {what}{zone}")
    return min(candidates, key=lambda h: (load.get(h.id, 0) / max(h.capacity, 1), h.name))
