"""/v2/manage/loadbalancers/{id}/logs: any load balancer's access and admin lines (admin).

See `openha.api.logquery` for the parameters, the merge of a pair's halves and
the follow mode; tenants have the same for their own load balancers under
`/v2/lbaas/loadbalancers/{id}/logs`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from openha.api.context import RequestContext, get_admin_context, get_session
from openha.api.errors import NotFound
from openha.api.logquery import LogParams, log_params, respond
from openha.models import LoadBalancer

router = APIRouter(prefix="/manage/loadbalancers", tags=["manage"])


@router.get("/{lb_id}/logs", response_model=None)
def loadbalancer_logs(
    lb_id: str,
    request: Request,
    params: LogParams = Depends(log_params),
    session: Session = Depends(get_session),
    _ctx: RequestContext = Depends(get_admin_context),
) -> Any:
    lb = session.get(LoadBalancer, lb_id)
    if lb is None:
        raise NotFound.resource("Load Balancer", lb_id)
    return respond(request, lb, session, params)
