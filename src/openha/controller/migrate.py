"""The "migrate" operation kind: move a load balancer's instances to other hosts.

The provider owns the mechanics (`Provider.migrate_step`); this kind hands it the
LB's desired tree as it is now and the operation's memory, one step at a time.
"""

from __future__ import annotations

from openha.certstore import keys as key_managers
from openha.controller import snapshot
from openha.controller.operations import OperationContext, OperationView
from openha.db import transaction
from openha.domain import constants as c
from openha.domain.operations import Step, StepError
from openha.models import LoadBalancer


def step(ctx: OperationContext, op: OperationView) -> Step:
    with transaction(ctx.sessions) as s:
        lb = s.get(LoadBalancer, op.target_id)
        if lb is None or lb.provisioning_status == c.PENDING_DELETE:
            if op.params.get("from_host"):
                return Step.succeeded("the load balancer was deleted: nothing left to move")
            raise StepError("the load balancer was deleted")
        provider = ctx.providers.get(lb.provider)
        spec = snapshot.build(s, lb.id, key_managers.from_settings(ctx.settings))
    return provider.migrate_step(spec, op.params, op.data)
