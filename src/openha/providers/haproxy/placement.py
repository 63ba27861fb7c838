"""Placement for the haproxy provider, as a pure planner: which host runs each instance.

`plan` takes what the database says (views of the hosts, their load, the LB's
instances) and the controller's verdict on failover, and returns a `Plan`:
which instances stay, which leave a lost host, where new ones start. It reads
and writes nothing; `openha.providers.haproxy.allocation` reads the views and
commits the plan (Instance rows, addresses, VRRP router ids, events).
`Placement` is the committed result the instance spec and the driver work from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from openha.domain import constants as c


class NoHostAvailable(Exception):
    """No host can take the instance (capacity, zone, anti-affinity, paused failover)."""


class NoCapacity(NoHostAvailable):
    """Every host that could take the instance is full, down, disabled or already has one."""


@dataclass(frozen=True)
class HostView:
    id: str
    name: str
    availability_zone: str
    capacity: int
    up: bool  # heartbeating: its instances stay where they are
    schedulable: bool  # up, enabled and registered: may get new instances


@dataclass(frozen=True)
class InstanceView:
    id: str
    role: str
    host_id: str | None


@dataclass(frozen=True)
class RolePlan:
    """What happens to one role's instance: it stays, or a new one starts on `start_on`."""

    role: str
    keep: InstanceView | None = None
    # The instance on a lost host: forgotten (its host drops it once back), rebuilt elsewhere.
    evict: InstanceView | None = None
    start_on: HostView | None = None


@dataclass(frozen=True)
class Plan:
    # Instances of roles the topology no longer has (SINGLE <-> ACTIVE_STANDBY).
    drop: tuple[InstanceView, ...]
    roles: tuple[RolePlan, ...]
    # The host to avoid after a failover was taken into account (by the first new instance).
    avoid_hint_used: bool = False


@dataclass(frozen=True)
class Placement:
    """Where one instance of the LB runs, as committed: what its spec and push need."""

    instance_id: str
    role: str
    host_id: str
    host_name: str
    management_url: str
    agent_secret: str
    agent_dir: str
    ip_address: str
    applied_generation: int
    vrid: int = 0
    vrrp_secret: str = ""
    # (subnet id, instance address) on each member subnet other than the VIP's.
    member_legs: tuple[tuple[str, str], ...] = ()
    # The address of the instance a migration retires, whose connections this one
    # hands back to it (`InstanceSpec.handoff_to`); "" when there is none.
    handoff_to: str = ""


def roles_for(topology: str) -> tuple[str, ...]:
    if topology == c.TOPOLOGY_ACTIVE_STANDBY:
        return (c.ROLE_MASTER, c.ROLE_BACKUP)
    return (c.ROLE_STANDALONE,)


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
    hosts = list(hosts)
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
        why = _why_not(hosts, load, availability_zone, excluded)
        raise NoCapacity(f"No capacity: needs {what}{zone} ({why})")
    return min(candidates, key=lambda h: (load.get(h.id, 0) / max(h.capacity, 1), h.name))


def _why_not(
    hosts: Iterable[HostView],
    load: Mapping[str, int],
    availability_zone: str | None,
    excluded: set[str],
) -> str:
    """What each host of the zone lacks, counted: what an operator needs to act."""
    reasons: dict[str, int] = {}
    for h in hosts:
        if availability_zone and h.availability_zone != availability_zone:
            continue
        if h.id in excluded:
            reason = "already used by this load balancer"
        elif not h.up:
            reason = "down"
        elif not h.schedulable:
            reason = "disabled or not registered"
        else:
            reason = "full"
        reasons[reason] = reasons.get(reason, 0) + 1
    total = sum(reasons.values())
    if not total:
        return "no host"
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
    return f"{total} host{'s' if total > 1 else ''}: {parts}"


def plan(
    roles: Sequence[str],
    instances: Iterable[InstanceView],
    hosts: Iterable[HostView],
    load: Callable[[], Mapping[str, int]],
    *,
    availability_zone: str | None,
    failover_paused: str | None,
    avoid_host_id: str | None = None,
    target_host_id: str | None = None,
) -> Plan:
    """Every role gets an instance on a healthy host; raise NoHostAvailable if one cannot.

    `load` counts instances per host (this LB's included); it is called only when
    a new instance must be placed, so an apply that places nothing costs no count
    over the fleet. `failover_paused` is the controller's circuit breaker: while it
    gives a reason, an instance whose host is down is not rebuilt elsewhere.
    `avoid_host_id` is the host an instance just left by failover: the first new
    instance goes anywhere else if it can; `target_host_id` is where a migration
    wants it, taken when that host can.
    """
    by_id = {h.id: h for h in hosts}
    counted: Mapping[str, int] | None = None
    change: dict[str, int] = {}  # this plan's own moves, on top of `load`

    def current() -> dict[str, int]:
        nonlocal counted
        if counted is None:
            counted = load()
        return {h: counted.get(h, 0) + change.get(h, 0) for h in by_id}

    def unload(inst: InstanceView) -> None:
        if inst.host_id:
            change[inst.host_id] = change.get(inst.host_id, 0) - 1

    by_role: dict[str, InstanceView] = {}
    drop: list[InstanceView] = []
    for inst in instances:
        if inst.role not in roles:
            drop.append(inst)
            continue
        if inst.role in by_role:
            drop.append(by_role[inst.role])
        by_role[inst.role] = inst
    for inst in drop:
        unload(inst)
    steps: list[RolePlan] = []
    avoid_hint = avoid_host_id
    target_hint = target_host_id
    hint_used = False
    for role in roles:
        current_inst = by_role.get(role)
        host = by_id.get(current_inst.host_id or "") if current_inst is not None else None
        if current_inst is not None and host is not None and host.up:
            steps.append(RolePlan(role, keep=current_inst))
            continue
        if current_inst is not None and host is not None and failover_paused:
            raise NoHostAvailable(failover_paused)
        if current_inst is not None:
            unload(current_inst)
            del by_role[role]
        others = [i.host_id for i in by_role.values() if i.host_id]
        left, avoid_hint, hint_used = avoid_hint, None, True
        wanted, target_hint = target_hint, None
        zone = availability_zone
        chosen = _on_target(by_id.get(wanted or ""), current(), zone, others)
        if chosen is None:
            try:
                chosen = choose_host(
                    by_id.values(),
                    current(),
                    availability_zone=zone,
                    avoid=[*others, *([left] if left else [])],
                )
            except NoHostAvailable:
                if not left:
                    raise
                chosen = choose_host(
                    by_id.values(), current(), availability_zone=zone, avoid=others
                )
        change[chosen.id] = change.get(chosen.id, 0) + 1
        # The new instance's host: the roles placed after it must avoid it too.
        by_role[role] = InstanceView(id="", role=role, host_id=chosen.id)
        steps.append(RolePlan(role, evict=current_inst, start_on=chosen))
    return Plan(drop=tuple(drop), roles=tuple(steps), avoid_hint_used=hint_used)


def _on_target(
    target: HostView | None, load: Mapping[str, int], zone: str | None, others: list[str]
) -> HostView | None:
    """A migration's target host, if it can take the instance; else None."""
    if target is None or target.id in others:
        return None
    try:
        return choose_host([target], load, availability_zone=zone)
    except NoHostAvailable:
        return None
