"""Moving a load balancer's instances to other hosts, make-before-break, one step per call.

The controller's "migrate" operation calls `step` again and again with the
operation's memory; each call does one thing and says so (`Step`). The instances
to move are chosen on the first call (all of them, or those on `from_host` for a
drain), the VIP holder last. Each move:

SINGLE  stage a new instance on the target (`Instance.migration` STAGED: placement
        leaves it alone), push it without the VIP, wait until HAProxy serves and
        checks the members as the old one does; then switch in one transaction (the
        new one becomes the LB's instance, the old one RETIRING) and push it: it takes
        the VIP with a gratuitous ARP.
pair    one half at a time: the old half is marked RETIRING and placement rebuilds
        its role on the target, as a failover's rebuild (`failover_target_host_id`
        is the target, as `failover_left_host_id` is the host to avoid); the VIP
        holder gives the VIP to its peer first (its keepalived's graceful stop), so
        the new BACKUP comes first and the pair is whole again before the next half.

Then the old instance is retired on its agent (VIP onto loopback, no more ARP
answers for it, HAProxy soft-stopped: its connections finish), given up to
`migrate_drain_timeout` to drain, and removed. Every step is safe to repeat.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openha import events
from openha.agent.protocol import VRRP_BACKUP, VRRP_MASTER
from openha.db import transaction
from openha.domain import constants as c
from openha.domain.operations import Step, StepError
from openha.domain.spec import LoadBalancerSpec
from openha.domain.status import member_status
from openha.models import Host, Instance, LoadBalancer
from openha.providers.haproxy import agent_client, allocation, instance_spec
from openha.providers.haproxy.agent_client import AgentError
from openha.providers.haproxy.placement import NoHostAvailable, Placement, choose_host

if TYPE_CHECKING:
    from openha.providers.haproxy.driver import HAProxyProvider


def step(
    provider: HAProxyProvider, spec: LoadBalancerSpec, params: dict[str, Any], data: dict[str, Any]
) -> Step:
    if "moves" not in data:
        return _choose_moves(provider, spec, params)
    current = data.get("current")
    if current is None:
        left = [i for i in data["moves"] if i not in data.get("moved", [])]
        if not left:
            return Step.succeeded(f"{len(data['moves'])} instance(s) moved")
        return Step.progressed("next", f"moving instance {left[0]}", current=left[0], phase="")
    phase = data.get("phase", "")
    single = spec.topology == c.TOPOLOGY_SINGLE
    settings = provider.context.settings
    if phase == "":
        if single:
            return _stage(provider, spec, params, current)
        return _retire(provider, spec, params, current, pair=True)
    if phase == "staged":
        _push_staged(provider, spec, data["new"], current)
        deadline = time.time() + settings.migrate_ready_timeout
        return Step.progressed("built", "pushed without the VIP", phase="built", deadline=deadline)
    if phase == "built":
        return _check_ready(provider, spec, current, data)
    if phase == "ready":
        return _switch(provider, spec, current, data["new"])
    if phase == "switched":
        return _retire(provider, spec, params, current, pair=False)
    if phase == "retired":
        return _wait_drained(provider, current, data)
    if phase == "drained":
        _remove(provider, current)
        return Step.progressed("removed", f"instance {current} removed", phase="removed")
    if phase == "removed":
        if not single and not _pair_whole(provider, spec):
            return Step.waiting("waiting for the pair to be whole again")
        moved = [*data.get("moved", []), current]
        return Step.progressed("moved", f"instance {current} moved", moved=moved, current=None)
    raise StepError(f"unknown migration phase {phase!r}")


def _choose_moves(
    provider: HAProxyProvider, spec: LoadBalancerSpec, params: dict[str, Any]
) -> Step:
    with transaction(provider.context.session_factory) as s:
        rows = list(_instances(s, spec.id))
        from_host = params.get("from_host")
        moves = [i for i in rows if not from_host or i.host_id == from_host]
        # The VIP holder goes last: its peer is new (and checked) by then.
        moves.sort(key=lambda i: (i.health or {}).get("vrrp_state") == VRRP_MASTER)
        ids = [i.id for i in moves]
        lb = s.get(LoadBalancer, spec.id)
        if lb is not None and ids:
            events.emit(s, "loadbalancer.migrating", f"Moving {len(ids)} instance(s)", lb=lb)
    return Step.progressed("planned", f"{len(ids)} instance(s) to move", moves=ids, moved=[])


def _instances(session: Session, lb_id: str) -> list[Instance]:
    return list(
        session.scalars(
            select(Instance).where(Instance.load_balancer_id == lb_id, Instance.migration.is_(None))
        )
    )


def _target(session: Session, lb: LoadBalancer, params: dict[str, Any], avoid: list[str]) -> Host:
    """The host a new instance goes to: the one asked for, else the scheduler's choice."""
    hosts = {h.id: h for h in session.scalars(select(Host))}
    views = allocation.host_views(hosts.values())
    zone = params.get("availability_zone") or allocation.host_zone(session, lb)
    if params.get("host"):
        views = [v for v in views if v.id == params["host"]]
    try:
        chosen = choose_host(
            views, allocation.instance_counts(session), availability_zone=zone, avoid=avoid
        )
    except NoHostAvailable as exc:
        raise StepError(str(exc)) from None
    return hosts[chosen.id]


def _stage(
    provider: HAProxyProvider, spec: LoadBalancerSpec, params: dict[str, Any], old_id: str
) -> Step:
    with transaction(provider.context.session_factory) as s:
        lb = s.get(LoadBalancer, spec.id)
        old = s.get(Instance, old_id)
        if lb is None or old is None:
            raise StepError("the instance to move is gone (deleted or failed over meanwhile)")
        host = _target(s, lb, params, [old.host_id or ""])
        views = {v.id: v for v in allocation.host_views([host])}
        new = allocation.start_instance(
            s, lb, spec, old.role, views[host.id], migration=c.MIGRATION_STAGED
        )
        new_id, name = new.id, host.name
    return Step.progressed(
        "staged", f"instance {new_id} on host {name}", phase="staged", new=new_id
    )


def _placement(
    provider: HAProxyProvider, spec: LoadBalancerSpec, inst_id: str, old_id: str
) -> Placement:
    """Where the staged `inst_id` runs; it hands connections unknown to it to `old_id`."""
    with transaction(provider.context.session_factory) as s:
        lb = s.get(LoadBalancer, spec.id)
        inst = s.get(Instance, inst_id)
        if lb is None or inst is None or inst.host_id is None:
            raise StepError(f"instance {inst_id} is gone")
        host = s.get(Host, inst.host_id)
        assert host is not None
        old = s.get(Instance, old_id)
        handoff = (old.ip_address or "") if old is not None else ""
        return allocation.placement_of(s, lb, spec, inst, host, handoff_to=handoff)


def _push_staged(
    provider: HAProxyProvider, spec: LoadBalancerSpec, new_id: str, old_id: str
) -> None:
    # The hand-off is in place from the start: conntrack then knows every connection
    # the new instance ever had, and the switch only adds the VIP.
    placement = _placement(provider, spec, new_id, old_id)
    built = instance_spec.build(spec, placement, [placement], provider.context.settings)
    # Not the VIP yet: HAProxy binds it anyway (non-local bind) and checks the members.
    staged = built.model_copy(update={"vip_managed_by_keepalived": True})
    error = provider._push(placement, staged)
    if error:
        raise AgentError(error)


def _status(provider: HAProxyProvider, inst_id: str) -> dict[str, Any] | None:
    with transaction(provider.context.session_factory) as s:
        inst = s.get(Instance, inst_id)
        host = s.get(Host, inst.host_id) if inst is not None and inst.host_id else None
        agent, up = provider._host_agent(host)
    if agent is None or not up:
        return None
    return agent_client.get_instance(agent, inst_id)


def _check_ready(
    provider: HAProxyProvider, spec: LoadBalancerSpec, old_id: str, data: dict[str, Any]
) -> Step:
    new = _status(provider, data["new"]) or {}
    old = _status(provider, old_id) or {}
    up = {m for m, state in (old.get("members") or {}).items() if _up(state)}
    seen = new.get("members") or {}
    lagging = sorted(m for m in up if not _up(seen.get(m)))
    if new.get("haproxy_running") and not lagging:
        return Step.progressed("ready", "HAProxy serves and sees the members up", phase="ready")
    if time.time() > float(data.get("deadline") or 0):
        _remove(provider, data["new"])
        raise StepError(
            f"new instance not ready in time (haproxy running: {bool(new.get('haproxy_running'))},"
            f" members not up yet: {len(lagging)}); it was removed, nothing else changed"
        )
    return Step.waiting(f"new instance not ready: {len(lagging)} member(s) not up yet")


def _up(word: str | None) -> bool:
    """HAProxy serves the member after its checks (what the old instance does too)."""
    return member_status(word, admin_state_up=True, monitored=True) == c.ONLINE


def _switch(provider: HAProxyProvider, spec: LoadBalancerSpec, old_id: str, new_id: str) -> Step:
    with transaction(provider.context.session_factory) as s:
        old, new = s.get(Instance, old_id), s.get(Instance, new_id)
        if new is None:
            raise StepError("the new instance is gone")
        new.migration = None
        if old is not None:
            old.migration = c.MIGRATION_RETIRING
    # Its full spec now: it takes the VIP (a gratuitous ARP tells the neighbours).
    result = provider.apply(spec, failover_paused=None)
    if result.error:
        raise AgentError(result.error)
    if not result.done:
        return Step.waiting("the new instance's host is busy")
    return Step.progressed("switched", f"instance {new_id} holds the VIP", phase="switched")


def _pair_target(session: Session, lb: LoadBalancer, params: dict[str, Any]) -> str | None:
    """Where a pair's rebuilt half goes: the host asked for while it holds no half yet,
    else a host of the zone asked for, else wherever the scheduler puts it (a drain)."""
    held = [i.host_id or "" for i in _instances(session, lb.id)]
    if params.get("host") and params["host"] not in held:
        return str(params["host"])
    if params.get("availability_zone"):
        zone_only = {"availability_zone": params["availability_zone"]}
        return _target(session, lb, zone_only, held).id
    return None


def _retire(
    provider: HAProxyProvider,
    spec: LoadBalancerSpec,
    params: dict[str, Any],
    inst_id: str,
    *,
    pair: bool,
) -> Step:
    """Give the VIP away and drain (agent), then mark RETIRING; a pair's role is rebuilt."""
    with transaction(provider.context.session_factory) as s:
        inst = s.get(Instance, inst_id)
        lb = s.get(LoadBalancer, spec.id)
        if inst is None or lb is None:
            raise StepError("the instance to move is gone (deleted or failed over meanwhile)")
        host = s.get(Host, inst.host_id) if inst.host_id else None
        agent, up = provider._host_agent(host)
        if pair:
            lb.failover_target_host_id = _pair_target(s, lb, params)
    if agent is not None and up:  # else its host is down: no VIP, no connections to wait for
        if pair:
            _hand_back_to(provider, spec, inst_id)
        agent_client.retire_instance(agent, inst_id)
    with transaction(provider.context.session_factory) as s:
        inst = s.get(Instance, inst_id)
        lb = s.get(LoadBalancer, spec.id)
        if inst is not None:
            inst.migration = c.MIGRATION_RETIRING
        if lb is not None:
            lb.reconcile_requested = True  # a pair's role is rebuilt on the target
    deadline = time.time() + provider.context.settings.migrate_drain_timeout
    return Step.progressed(
        "retired", f"instance {inst_id} gave the VIP away and drains", phase="retired",
        deadline=deadline,
    )  # fmt: skip


def _hand_back_to(provider: HAProxyProvider, spec: LoadBalancerSpec, inst_id: str) -> None:
    """Before a pair's half gives the VIP away: its peer hands the connections it does
    not know (opened with this half) back to it. The reconcile after the retire keeps
    that (`allocation.handoff_address`) until this half is removed."""
    with transaction(provider.context.session_factory) as s:
        placements = allocation.place(s, spec, failover_paused=None)
        old = s.get(Instance, inst_id)
        address = (old.ip_address or "") if old is not None else ""
    peers = [replace(p, handoff_to=address) for p in placements if p.instance_id != inst_id]
    settings = provider.context.settings
    for peer in peers:
        error = provider._push(peer, instance_spec.build(spec, peer, placements, settings))
        if error:
            raise AgentError(error)


def _status_or_none(provider: HAProxyProvider, inst_id: str) -> dict[str, Any] | None:
    try:
        return _status(provider, inst_id)
    except AgentError:
        return None


def _wait_drained(provider: HAProxyProvider, inst_id: str, data: dict[str, Any]) -> Step:
    status = _status_or_none(provider, inst_id)
    if status is None or not status.get("haproxy_running"):
        return Step.progressed("drained", "its connections finished", phase="drained")
    if time.time() > float(data.get("deadline") or 0):
        return Step.progressed("drained", "drain timeout reached", phase="drained")
    return Step.waiting("old instance still has connections")


def _remove(provider: HAProxyProvider, inst_id: str) -> None:
    with transaction(provider.context.session_factory) as s:
        inst = s.get(Instance, inst_id)
        host = s.get(Host, inst.host_id) if inst is not None and inst.host_id else None
        agent, up = provider._host_agent(host)
    if agent is not None and up:
        agent_client.delete_instance(agent, inst_id)
    with transaction(provider.context.session_factory) as s:
        inst = s.get(Instance, inst_id)
        if inst is not None:
            lb = s.get(LoadBalancer, inst.load_balancer_id)
            if lb is not None and inst.migration == c.MIGRATION_RETIRING:
                lb.reconcile_requested = True  # its successors drop their hand-off to it
            allocation.forget(s, inst)


def _pair_whole(provider: HAProxyProvider, spec: LoadBalancerSpec) -> bool:
    """Both roles placed, applied, running, one holding the VIP and one standing by."""
    with transaction(provider.context.session_factory) as s:
        rows = list(_instances(s, spec.id))
        hosts = {h.id: h for h in s.scalars(select(Host))}
    states = sorted(str((i.health or {}).get("vrrp_state")) for i in rows)
    return (
        len(rows) == 2
        and states == [VRRP_BACKUP, VRRP_MASTER]
        and all((i.health or {}).get("haproxy_running") for i in rows)
        and all(i.applied_generation >= spec.generation for i in rows)
        and all(hosts[i.host_id].status == c.HOST_UP for i in rows if i.host_id in hosts)
    )
