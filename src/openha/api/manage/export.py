"""A load balancer's tree as the fully populated create body that rebuilds it.

The body Octavia's single-call create takes (`api.tenant.graph`): the load
balancer with its `listeners` (default pool and L7 policies with their rules,
pools referred to by name) and top-level `pools` (members, health monitor). Every
field the create schemas know is filled from the rows; ids of the tree's own
objects are left out, references that outlive it (VIP subnet, flavor, TLS
container refs) are kept. Nothing secret lives in the tree: certificates stay in
their containers. Pools are named by the graph's rule: an unnamed pool, or one
whose name another pool of the tree has too, gets "<name or pool>-<n>".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from openha.api.tenant.graph import GraphL7Policy, GraphListener, GraphPool
from openha.api.tenant.healthmonitors import HealthMonitorCreate
from openha.api.tenant.l7rules import L7RuleSingleCreate
from openha.api.tenant.loadbalancers import LoadBalancerCreate
from openha.api.tenant.members import MemberCreate
from openha.domain import constants as c
from openha.models import LoadBalancer, Pool

# Ids and references with no meaning in a body that creates a new tree.
LEFT_OUT = frozenset(
    {
        "id",
        "tenant_id",
        "loadbalancer_id",
        "listener_id",
        "pool_id",
        "default_pool_id",
        "redirect_pool_id",
        "vip_port_id",
        "vip_sg_ids",
        "additional_vips",
        # Filled by the walk below.
        "listeners",
        "pools",
        "members",
        "healthmonitor",
        "l7policies",
        "rules",
        "default_pool",
        "redirect_pool",
    }
)


def _fields(schema: type[BaseModel], row: Any, *, project: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in schema.model_fields:
        if name in LEFT_OUT or (name == "project_id" and not project):
            continue
        value = getattr(row, name, None)
        if value is not None:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _live(rows: list[Any]) -> list[Any]:
    return [r for r in rows if r.provisioning_status != c.PENDING_DELETE]


def pool_names(pools: list[Pool]) -> dict[str, str]:
    """Pool id -> the name the body gives it (unique within the tree)."""
    counts: dict[str, int] = {}
    for pool in pools:
        counts[pool.name] = counts.get(pool.name, 0) + 1
    names: dict[str, str] = {}
    for n, pool in enumerate(pools):
        unique = pool.name and counts[pool.name] == 1
        names[pool.id] = pool.name if unique else f"{pool.name or 'pool'}-{n}"
    return names


def export_tree(lb: LoadBalancer) -> dict[str, Any]:
    """`{"loadbalancer": {...}}`, the create body of `lb`'s tree (loaded rows)."""
    pools = _live(lb.pools)
    names = pool_names(pools)
    body = _fields(LoadBalancerCreate, lb, project=True)
    body["pools"] = []
    for pool in pools:
        entry = _fields(GraphPool, pool)
        entry["name"] = names[pool.id]
        entry["members"] = [_fields(MemberCreate, m) for m in _live(pool.members)]
        monitor = pool.health_monitor
        if monitor is not None and monitor.provisioning_status != c.PENDING_DELETE:
            entry["healthmonitor"] = _fields(HealthMonitorCreate, monitor)
        body["pools"].append(entry)
    body["listeners"] = []
    for listener in _live(lb.listeners):
        entry = _fields(GraphListener, listener)
        if listener.default_pool_id in names:
            entry["default_pool"] = {"name": names[listener.default_pool_id]}
        entry["l7policies"] = []
        for policy in _live(listener.l7policies):
            pentry = _fields(GraphL7Policy, policy)
            if policy.redirect_pool_id in names:
                pentry["redirect_pool"] = {"name": names[policy.redirect_pool_id]}
            pentry["rules"] = [_fields(L7RuleSingleCreate, r) for r in _live(policy.rules)]
            entry["l7policies"].append(pentry)
        body["listeners"].append(entry)
    return {"loadbalancer": body}
