"""/v2/manage/loadbalancers/{id}/…: an operator's repairs and backups of one load balancer.

- `POST …/sync`, `…/reload`, `…/force-recover`: run the action of
  `openha.controller.actions` and answer 202 with the steps it took.
- `GET …/diff`: what each instance has against what the database renders.
- `GET …/export`: the fully populated create body that rebuilds the tree.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openha.api import idempotency
from openha.api.context import RequestContext, get_admin_context, get_session
from openha.api.errors import NotFound
from openha.api.manage.export import export_tree
from openha.controller import actions
from openha.models import L7Policy, Listener, LoadBalancer, Pool

router = APIRouter(prefix="/manage/loadbalancers", tags=["manage"])
LB_LABEL = "Load Balancer"


def _run(
    request: Request, session: Session, keyed: idempotency.Guard | None, lb_id: str, name: str
) -> JSONResponse:
    # The action works in transactions of its own (and calls agents meanwhile): the
    # request's, which authenticated the caller, must not hold the database meanwhile.
    session.rollback()
    action = {
        "sync": actions.sync,
        "reload": actions.reload,
        "force-recover": actions.force_recover,
    }[name]
    try:
        steps = action(request.app.state.session_factory, request.app.state.providers, lb_id)
    except actions.NoSuchLoadBalancer:
        raise NotFound.resource(LB_LABEL, lb_id) from None
    body = {
        "action": name,
        "load_balancer_id": lb_id,
        "ok": all(step.ok for step in steps),
        "steps": [asdict(step) for step in steps],
    }
    # A retry with the same Idempotency-Key gets this report again, and acts no more.
    idempotency.commit(session, keyed, body)
    return JSONResponse(body, status_code=202)


@router.post("/{lb_id}/sync", status_code=202, response_model=None)
def sync(
    lb_id: str,
    request: Request,
    session: Session = Depends(get_session),
    _ctx: RequestContext = Depends(get_admin_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> JSONResponse:
    """Re-render and re-push the LB's config to every instance, even unchanged."""
    return _run(request, session, keyed, lb_id, "sync")


@router.post("/{lb_id}/reload", status_code=202, response_model=None)
def reload(
    lb_id: str,
    request: Request,
    session: Session = Depends(get_session),
    _ctx: RequestContext = Depends(get_admin_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> JSONResponse:
    """Hitless reload of every instance's HAProxy."""
    return _run(request, session, keyed, lb_id, "reload")


@router.post("/{lb_id}/force-recover", status_code=202, response_model=None)
def force_recover(
    lb_id: str,
    request: Request,
    session: Session = Depends(get_session),
    _ctx: RequestContext = Depends(get_admin_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> JSONResponse:
    """Clear the error, rebuild lost instances, re-push the rest, step by step."""
    return _run(request, session, keyed, lb_id, "force-recover")


@router.get("/{lb_id}/diff", response_model=None)
def diff(
    lb_id: str,
    request: Request,
    session: Session = Depends(get_session),
    _ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    """Unified diff: what each instance's agent has (a/) against the desired render (b/)."""
    session.rollback()  # as `_run`: the action reads in sessions of its own
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
