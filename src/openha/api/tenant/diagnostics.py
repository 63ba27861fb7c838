"""/v2/lbaas/loadbalancers/{id}/diagnostics: a tenant's view of its own load balancer.

An OpenHA extension (Octavia has none): its members' health-check results as HAProxy
sees them now and, with `?probe=members`, whether the load balancer can reach each
member. Nothing about hosts, processes or configs (see `openha.api.diagnostics`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from openha.api.context import RequestContext, get_context, get_session
from openha.api.diagnostics import gather, probe_param, tenant_subset
from openha.api.tenant.loadbalancers import LOAD_BALANCERS

router = APIRouter(prefix="/loadbalancers", tags=["loadbalancers"])


@router.get("/{lb_id}/diagnostics")
def loadbalancer_diagnostics(
    lb_id: str,
    request: Request,
    probe: str | None = Query(None, description="`members`: probe every member now"),
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    probing = probe_param(probe)
    lb = LOAD_BALANCERS.find(session, ctx, lb_id)
    return tenant_subset(gather(session, request.app.state.settings, lb, probing))
