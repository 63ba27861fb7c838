"""/v2/lbaas/loadbalancers/{id}/protection: the protection a tenant's load balancer has.

An OpenHA extension (Octavia has none), read-only: the profile that applies (the
operator's for this LB, else its flavor's), whether under-attack mode is on and what
the instances enforce now. Profiles themselves are the operator's
(`/v2/manage/protection-profiles`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from openha.api.context import RequestContext, get_context, get_session
from openha.api.manage.protection import lb_protection_view
from openha.api.tenant.loadbalancers import LOAD_BALANCERS

router = APIRouter(prefix="/loadbalancers", tags=["loadbalancers"])


@router.get("/{lb_id}/protection")
def loadbalancer_protection(
    lb_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    lb = LOAD_BALANCERS.find(session, ctx, lb_id)
    return {"protection": lb_protection_view(session, lb)}
