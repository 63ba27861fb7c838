"""Operating status derivation: from what HAProxy's checks say to Octavia's statuses.

Pure functions: the HAProxy provider feeds them the member states an instance
reported in its heartbeat; the result is rolled up member → pool → listener →
load balancer the way Octavia's health manager does it.
"""

from __future__ import annotations

from collections.abc import Mapping

from openha.domain import constants as c
from openha.domain.observed import ObservedState
from openha.domain.spec import LoadBalancerSpec, PoolSpec

# HAProxy server status (the first word of `show stat`'s status column) → Octavia.
_SERVER_STATUS = {
    "UP": c.ONLINE,
    "DOWN": c.ERROR,
    "MAINT": c.OFFLINE,
    "DRAIN": c.DRAINING,
    "NOLB": c.DRAINING,
    "NO_CHECK": c.NO_MONITOR,
    "no": c.NO_MONITOR,  # "no check"
}


def status_severity(operating_status: str) -> str:
    """How loud an object's move to `operating_status` is, as an event."""
    if operating_status == c.ERROR:
        return c.SEVERITY_ERROR
    if operating_status in (c.DEGRADED, c.DRAINING, c.OFFLINE):
        return c.SEVERITY_WARNING
    return c.SEVERITY_INFO


def member_status(haproxy_status: str | None, admin_state_up: bool, monitored: bool) -> str:
    """What HAProxy says of the server, in Octavia's words; the database decides only
    while HAProxy has not reported it. So an admin-down member is OFFLINE because
    HAProxy holds it in MAINT, and one HAProxy still serves shows ONLINE: the
    status reveals a data plane that drifted from the desired state."""
    if haproxy_status is None or not haproxy_status.strip():
        # Not reported yet: the config holding it is not live.
        if not admin_state_up:
            return c.OFFLINE
        return c.NO_MONITOR if not monitored else c.OFFLINE
    word = haproxy_status.split()[0]
    if word in ("UP", "DOWN"):
        if not monitored:
            return c.NO_MONITOR
        # "UP 1/3" / "DOWN 1/2" are transitions: HAProxy still serves its previous verdict.
        return c.ONLINE if word == "UP" else c.ERROR
    return _SERVER_STATUS.get(word, c.OFFLINE)


def pool_status(pool: PoolSpec, members: Mapping[str, str]) -> str:
    if not pool.admin_state_up:
        return c.OFFLINE
    states = [members[m.id] for m in pool.members if m.admin_state_up and m.id in members]
    active = [s for s in states if s in (c.ONLINE, c.NO_MONITOR)]
    if not states:
        return c.ONLINE
    if not active:
        return c.ERROR
    if len(active) < len([s for s in states if s != c.DRAINING]):
        return c.DEGRADED
    return c.ONLINE


def derive(
    spec: LoadBalancerSpec,
    member_reports: Mapping[str, str],
    data_plane_running: bool,
) -> ObservedState:
    """Statuses for every object of `spec` from one instance's view of its servers."""
    lb_up = spec.admin_state_up
    state = ObservedState(load_balancer=c.OFFLINE)
    # Octavia: a pool no listener sends traffic to is never reported, so it is OFFLINE.
    used = {listener.default_pool_id for listener in spec.listeners} | {
        policy.redirect_pool_id for listener in spec.listeners for policy in listener.l7policies
    }
    for pool in spec.pools:
        hm = pool.health_monitor
        monitored = hm is not None and hm.admin_state_up
        for m in pool.members:
            state.members[m.id] = (
                member_status(member_reports.get(m.id), m.admin_state_up, monitored)
                if lb_up
                else c.OFFLINE
            )
        live = lb_up and pool.id in used
        state.pools[pool.id] = pool_status(pool, state.members) if live else c.OFFLINE
        if hm is not None:
            state.health_monitors[hm.id] = c.ONLINE if hm.admin_state_up and lb_up else c.OFFLINE
    worst = c.ONLINE
    for listener in spec.listeners:
        if not (listener.admin_state_up and lb_up):
            status = c.OFFLINE
        elif not data_plane_running:
            status = c.ERROR
        else:
            pool_state = state.pools.get(listener.default_pool_id or "", c.ONLINE)
            status = c.DEGRADED if pool_state in (c.ERROR, c.DEGRADED) else c.ONLINE
        state.listeners[listener.id] = status
        for policy in listener.l7policies:
            up = policy.admin_state_up and status != c.OFFLINE
            state.l7policies[policy.id] = c.ONLINE if up else c.OFFLINE
            for rule in policy.rules:
                state.l7rules[rule.id] = c.ONLINE if up and rule.admin_state_up else c.OFFLINE
        if status in (c.ERROR, c.DEGRADED) and worst == c.ONLINE:
            worst = c.DEGRADED
    if not lb_up:
        state.load_balancer = c.OFFLINE
    elif not data_plane_running:
        state.load_balancer = c.ERROR
    else:
        state.load_balancer = worst
    return state
