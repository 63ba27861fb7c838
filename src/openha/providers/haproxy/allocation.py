"""Commits the haproxy provider's placement: Instance rows, addresses, VRRP router ids.

`place` works in the caller's transaction: it reads the views the pure planner
(`openha.providers.haproxy.placement`) needs, asks it for a plan and writes the
plan down — forgets the instances that leave (and their addresses), creates the
new ones with an address on the VIP subnet, gives every instance an address on
each member subnet, holds the LB's VRRP router id for a pair and records events.
A plan that cannot be made raises before anything is written, and an error
midway rolls the whole transaction back: placement is all or nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openha import events, ipam
from openha.domain import constants as c
from openha.domain.spec import LoadBalancerSpec
from openha.models import (
    AvailabilityZone,
    AvailabilityZoneProfile,
    Host,
    Instance,
    LoadBalancer,
    Port,
    Subnet,
    VrrpRouterId,
)
from openha.providers.haproxy.placement import (
    HostView,
    InstanceView,
    NoCapacity,
    Placement,
    plan,
    roles_for,
)

INSTANCE_OWNER = "openha:instance"


def place(
    session: Session, spec: LoadBalancerSpec, *, failover_paused: str | None
) -> list[Placement]:
    """Make sure every role has an instance on a healthy host; return where they are."""
    lb = session.get(LoadBalancer, spec.id)
    assert lb is not None
    hosts = {h.id: h for h in session.scalars(select(Host))}
    every = list(session.scalars(select(Instance).where(Instance.load_balancer_id == spec.id)))
    # A migration's staged and retiring instances are the operation's, not the plan's.
    rows = {i.id: i for i in every if i.migration is None}
    handoff = handoff_address(every, hosts)
    roles = roles_for(spec.topology)
    decided = plan(
        roles,
        [InstanceView(i.id, i.role, i.host_id) for i in rows.values()],
        host_views(hosts.values()),
        lambda: instance_counts(session),
        availability_zone=host_zone(session, lb),
        failover_paused=failover_paused,
        avoid_host_id=lb.failover_left_host_id,
        target_host_id=lb.failover_target_host_id,
    )
    # A new instance of an LB that had one (lost with its host, or failed over) is a rebuild.
    rebuild = bool(rows) or lb.failover_left_host_id is not None
    for view in decided.drop:
        forget(session, rows[view.id])
    placed: dict[str, Instance] = {}
    for step in decided.roles:
        if step.keep is not None:
            placed[step.role] = rows[step.keep.id]
            continue
        if step.evict is not None:
            # Its host is gone: the host removes the orphan itself when it returns.
            gone = rows[step.evict.id]
            left = hosts.get(gone.host_id or "")
            events.emit(
                session,
                "instance.rescheduled",
                f"{step.role} instance {gone.id} left host {left.name if left else '?'}",
                severity=c.SEVERITY_WARNING,
                lb=lb,
                instance_id=gone.id,
                host_id=gone.host_id,
            )
            forget(session, gone)
        assert step.start_on is not None
        placed[step.role] = start_instance(session, lb, spec, step.role, step.start_on, rebuild)
    if decided.avoid_hint_used:
        lb.failover_left_host_id = None
        lb.failover_target_host_id = None
    vrid = hold_vrid(session, lb, spec) if len(roles) > 1 else 0
    return [
        placement_of(
            session, lb, spec, placed[role], hosts[placed[role].host_id or ""], vrid, handoff
        )
        for role in roles
    ]


def handoff_address(instances: Iterable[Instance], hosts: Mapping[str, Host]) -> str:
    """The address of the instance a migration retires while its host is up: it still
    serves the connections opened with it, which the LB's other instances hand back."""
    for inst in instances:
        host = hosts.get(inst.host_id or "")
        if (
            inst.migration == c.MIGRATION_RETIRING
            and host is not None
            and host.status == c.HOST_UP
            and inst.ip_address
        ):
            return inst.ip_address
    return ""


def current(session: Session, spec: LoadBalancerSpec) -> list[Placement]:
    """Where the LB's instances are now, as `place` answers, but planning and writing
    nothing: instances without a host are left out (an operator's sync or diff)."""
    lb = session.get(LoadBalancer, spec.id)
    assert lb is not None
    rows = list(
        session.scalars(
            select(Instance)
            .where(Instance.load_balancer_id == spec.id, Instance.host_id.is_not(None))
            .order_by(Instance.role.desc())  # MASTER before BACKUP, as `roles_for`
        )
    )
    wanted = [i.host_id for i in rows]
    hosts = {h.id: h for h in session.scalars(select(Host).where(Host.id.in_(wanted)))}
    vrid = session.scalar(select(VrrpRouterId.vrid).where(VrrpRouterId.load_balancer_id == lb.id))
    return [
        placement_of(session, lb, spec, inst, hosts[inst.host_id or ""], int(vrid or 0))
        for inst in rows
    ]


def placement_of(
    session: Session,
    lb: LoadBalancer,
    spec: LoadBalancerSpec,
    inst: Instance,
    host: Host,
    vrid: int = 0,
    handoff_to: str = "",
) -> Placement:
    """Where `inst` runs, as its spec and push need it (its member legs ensured)."""
    return Placement(
        instance_id=inst.id,
        role=inst.role,
        host_id=host.id,
        host_name=host.name,
        management_url=host.management_url,
        agent_secret=host.agent_secret,
        agent_dir=str((host.report or {}).get("agent_dir", "")),
        ip_address=inst.ip_address or "",
        applied_generation=inst.applied_generation,
        vrid=vrid,
        # VRRPv2's PASS travels in clear text: it only guards against cross-talk
        # between pairs, so a value derived from the LB id is as good as any.
        vrrp_secret=hashlib.sha256(lb.id.encode()).hexdigest()[:8],
        member_legs=_member_legs(session, lb, inst, spec),
        handoff_to=handoff_to,
    )


def start_instance(
    session: Session,
    lb: LoadBalancer,
    spec: LoadBalancerSpec,
    role: str,
    host: HostView,
    rebuild: bool = False,
    *,
    migration: str | None = None,
) -> Instance:
    """A new instance of `role` on `host`, with its address on the VIP subnet."""
    inst = Instance(
        load_balancer_id=lb.id,
        host_id=host.id,
        role=role,
        status=c.INSTANCE_ALLOCATED,
        migration=migration,
    )
    session.add(inst)
    session.flush()
    subnet = session.get(Subnet, spec.vip_subnet.id)
    assert subnet is not None
    port = ipam.allocate(
        session,
        subnet,
        project_id=lb.project_id,
        device_owner=INSTANCE_OWNER,
        device_id=inst.id,
        name=f"openha-instance-{inst.id}",
    )
    inst.port_id, inst.ip_address = port.id, port.ip_address
    events.emit(
        session,
        "instance.rebuilt" if rebuild else "instance.scheduled",
        f"{role} instance {'rebuilt ' if rebuild else ''}on host {host.name}",
        lb=lb,
        instance_id=inst.id,
        host_id=host.id,
    )
    return inst


def _member_legs(
    session: Session, lb: LoadBalancer, inst: Instance, spec: LoadBalancerSpec
) -> tuple[tuple[str, str], ...]:
    """An address for the instance on every member subnet; drop the ones not needed."""
    wanted = [sub.id for sub in spec.member_subnets]
    ports = {
        p.subnet_id: p
        for p in session.scalars(select(Port).where(Port.device_id == inst.id))
        if p.subnet_id != spec.vip_subnet.id
    }
    for subnet_id, port in ports.items():
        if subnet_id not in wanted:
            session.delete(port)
    legs = []
    for subnet_id in wanted:
        leg = ports.get(subnet_id)
        if leg is None:
            subnet = session.get(Subnet, subnet_id)
            assert subnet is not None
            leg = ipam.allocate(
                session,
                subnet,
                project_id=lb.project_id,
                device_owner=INSTANCE_OWNER,
                device_id=inst.id,
                name=f"openha-instance-{inst.id}",
            )
        legs.append((subnet_id, leg.ip_address))
    return tuple(legs)


def hold_vrid(session: Session, lb: LoadBalancer, spec: LoadBalancerSpec) -> int:
    """This LB's VRRP router id on its VIP network, allocated once (1-255 per segment)."""
    network_id = spec.vip_subnet.network_id
    held = session.scalar(select(VrrpRouterId).where(VrrpRouterId.load_balancer_id == lb.id))
    if held is not None:
        return int(held.vrid)
    used = set(
        session.scalars(select(VrrpRouterId.vrid).where(VrrpRouterId.network_id == network_id))
    )
    free = next((v for v in range(1, 256) if v not in used), None)
    if free is None:
        raise NoCapacity(
            f"All 255 VRRP router ids are in use on network {network_id}: "
            "no more ACTIVE_STANDBY load balancers fit on this segment"
        )
    session.add(VrrpRouterId(network_id=network_id, vrid=free, load_balancer_id=lb.id))
    session.flush()
    return free


def forget(session: Session, inst: Instance) -> None:
    """Remove an instance's row and free its addresses (its host drops the orphan itself)."""
    ipam.release_device(session, inst.id)
    session.delete(inst)
    session.flush()


def host_zone(session: Session, lb: LoadBalancer) -> str | None:
    """The host zone an LB's instances must run in: its AZ profile's `host_zone`, or the
    AZ's own name (agents report their zone with OPENHA_AVAILABILITY_ZONE)."""
    if not lb.availability_zone:
        return None
    zone = session.get(AvailabilityZone, lb.availability_zone)
    profile = (
        session.get(AvailabilityZoneProfile, zone.availability_zone_profile_id) if zone else None
    )
    data = json.loads(profile.availability_zone_data or "{}") if profile else {}
    return str(data.get("host_zone") or lb.availability_zone)


def instance_counts(session: Session) -> dict[str, int]:
    """Instances per host, over the whole fleet."""
    rows = session.execute(select(Instance.host_id, func.count()).group_by(Instance.host_id))
    return {host_id: count for host_id, count in rows if host_id}


def host_views(hosts: Iterable[Host]) -> list[HostView]:
    return [
        HostView(
            id=h.id,
            name=h.name,
            availability_zone=h.availability_zone,
            capacity=h.effective_capacity,
            up=h.status == c.HOST_UP,
            # An agent that never registered (no URL, no directory) cannot take work.
            schedulable=h.status == c.HOST_UP
            and h.admin_state == c.HOST_ENABLED
            and bool(h.management_url and (h.report or {}).get("agent_dir")),
        )
        for h in hosts
    ]
