"""The "drain" operation kind: empty a host, a few load balancers at a time.

The API marks the host DRAINING (placement gives it nothing new) and records the
operation. Each step starts "migrate" operations (children, `from_host`: only the
instances on this host move) while fewer than `drain_concurrency` run, and counts
what is left; a load balancer whose migration failed is tried again a few times.
The host ends DRAINED once nothing runs on it.
"""

from __future__ import annotations

from sqlalchemy import func, select

from openha import events
from openha.controller import operations
from openha.controller.operations import OperationContext, OperationView
from openha.db import transaction
from openha.domain import constants as c
from openha.domain.operations import Step, StepError
from openha.models import Host, Instance, Operation

TRIES_PER_LB = 3


def step(ctx: OperationContext, op: OperationView) -> Step:
    with transaction(ctx.sessions) as s:
        host = s.get(Host, op.target_id)
        if host is None:
            raise StepError("the host was deleted")
        if host.admin_state not in (c.HOST_DRAINING, c.HOST_DRAINED):
            raise StepError(f"the host is {host.admin_state} now: drain cancelled")
        children = list(s.scalars(select(Operation).where(Operation.parent_id == op.id)))
        running = [o for o in children if o.state in c.OPERATION_OPEN]
        tries: dict[str, int] = {}
        for child in children:
            tries[child.target_id] = tries.get(child.target_id, 0) + 1
        busy = {o.target_id for o in running}
        left = sorted(
            set(
                s.scalars(
                    select(Instance.load_balancer_id).where(Instance.host_id == host.id).distinct()
                )
            )
        )
        total = max(int(op.data.get("total", 0)), len(left))
        if not left and not running:
            host.admin_state = c.HOST_DRAINED
            events.emit(s, "host.drained", f"Host {host.name} is empty", host_id=host.id)
            return Step.succeeded(f"host {host.name} drained: {total} load balancer(s) moved")
        given_up = [lb for lb in left if lb not in busy and tries.get(lb, 0) >= TRIES_PER_LB]
        if given_up and not running:
            last = next(
                (o.error for o in reversed(children) if o.target_id == given_up[0] and o.error),
                "",
            )
            raise StepError(f"load balancer {given_up[0]} could not be moved: {last}")
        room = ctx.settings.drain_concurrency - len(running)
        todo = [lb for lb in left if lb not in busy and tries.get(lb, 0) < TRIES_PER_LB]
        started = []
        for lb_id in todo[: max(room, 0)]:
            child = operations.start(
                s,
                "migrate",
                "loadbalancer",
                lb_id,
                {"from_host": host.id},
                op.requested_by,
                parent_id=op.id,
            )
            started.append(child.id)
        moved = total - len(left)
        count = s.scalar(select(func.count(Instance.id)).where(Instance.host_id == host.id)) or 0
    progress = {"total": total, "moved": moved, "instances_left": count, "running": len(running)}
    if started:
        return Step.progressed(
            "migrating", f"{len(started)} more load balancer(s) moving", **progress
        )
    return Step.waiting(f"{moved}/{total} moved, {len(running)} moving", delay=1.0, **progress)
