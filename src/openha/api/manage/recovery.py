"""/v2/manage/loadbalancers/{id}/…: an operator's repairs and backups of one load balancer.

- `POST …/sync`, `…/reload`, `…/force-recover`: one route each, one handler for all:
  202 with an operation (`openha.api.manage.operations`) the controller runs
  (`openha.controller.actions`); a request while the same repair of the LB is not
  over yet joins that one.
- `GET …/diff`: what each instance has against what the database renders.
- `GET …/export`: the fully populated create body that rebuilds the tree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openha.api import idempotency
from openha.api.context import RequestContext, get_admin_context, get_session
from openha.api.errors import Conflict, NotFound
from openha.api.manage import operations
from openha.api.manage.export import export_tree
from openha.controller import actions
from openha.domain import constants as c
from openha.models import L7Policy, Listener, LoadBalancer, Pool

router = APIRouter(prefix="/manage/loadbalancers", tags=["manage"])
LB_LABEL = "Load Balancer"

# The repairs, by operation kind (`openha.controller.opkinds`), and what each does.
REPAIRS = {
    "sync": "Re-render and re-push the LB's config to every instance, even unchanged.",
    "reload": "Hitless reload of every instance's HAProxy.",
    "force-recover": "Clear the error, rebuild lost instances, re-push the rest, step by step.",
}


def _repair(kind: str) -> Callable[..., JSONResponse]:
    def start_repair(
        lb_id: str,
        session: Session = Depends(get_session),
        ctx: RequestContext = Depends(get_admin_context),
        keyed: idempotency.Guard | None = Depends(idempotency.guard),
    ) -> JSONResponse:
        lb = session.get(LoadBalancer, lb_id)
        if lb is None:
            raise NotFound.resource(LB_LABEL, lb_id)
        if lb.provisioning_status == c.PENDING_DELETE:
            raise Conflict(f"Load balancer {lb_id} is being deleted.")
        op = operations.open_operation(session, kind, lb_id)
        if op is None:
            op = operations.start(session, ctx, kind, "loadbalancer", lb_id, {})
        return operations.accepted(session, ctx, op, keyed)

    start_repair.__name__ = f"{kind.replace('-', '_')}_loadbalancer"
    return start_repair


for _kind, _doc in REPAIRS.items():
    router.add_api_route(
        f"/{{lb_id}}/{_kind}",
        _repair(_kind),
        methods=["POST"],
        status_code=202,
        response_model=None,
        description=_doc,
    )


@router.get("/{lb_id}/diff", response_model=None)
def diff(
    lb_id: str,
    request: Request,
    session: Session = Depends(get_session),
    _ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    """Unified diff: what each instance's agent has (a/) against the desired render (b/)."""
    session.rollback()  # the action reads in sessions of its own
    try:
        return actions.diff(request.app.state.session_factory, request.app.state.providers, lb_id)
    except actions.NoSuchLoadBalancer:
        raise NotFound.resource(LB_LABEL, lb_id) from None


@router.get("/{lb_id}/export", response_model=None)
def export(
    lb_id: str,
    session: Session = Depends(get_session),
    _ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    """The fully populated create body of the LB's tree (no ids, no secrets)."""
    lb = session.scalar(
        select(LoadBalancer)
        .where(LoadBalancer.id == lb_id)
        .options(
            selectinload(LoadBalancer.listeners)
            .selectinload(Listener.l7policies)
            .selectinload(L7Policy.rules),
            selectinload(LoadBalancer.pools).selectinload(Pool.members),
            selectinload(LoadBalancer.pools).selectinload(Pool.health_monitor),
        )
    )
    if lb is None:
        raise NotFound.resource(LB_LABEL, lb_id)
    return export_tree(lb)
