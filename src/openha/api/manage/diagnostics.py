"""/v2/manage/loadbalancers/{id}/diagnostics: any load balancer, read live (admin).

`?probe=members` adds the active probe of every member. See `openha.api.diagnostics`;
tenants have their subset under `/v2/lbaas/loadbalancers/{id}/diagnostics`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from openha.api.context import RequestContext, get_admin_context, get_session
from openha.api.diagnostics import gather, probe_param
from openha.api.errors import NotFound
from openha.models import LoadBalancer

router = APIRouter(prefix="/manage/loadbalancers", tags=["manage"])


@router.get("/{lb_id}/diagnostics")
def loadbalancer_diagnostics(
    lb_id: str,
    request: Request,
    probe: str | None = Query(None, description="`members`: probe every member now"),
    session: Session = Depends(get_session),
    _ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    probing = probe_param(probe)
    lb = session.get(LoadBalancer, lb_id)
    if lb is None:
        raise NotFound.resource("Load Balancer", lb_id)
    return gather(session, request.app.state.settings, lb, probing)
