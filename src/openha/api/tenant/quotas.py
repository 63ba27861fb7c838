"""/v2/lbaas/quotas: per-project limits on each kind of object, as Octavia serves them.

A row holds only the limits an admin set; a null column (or no row) means the
deployment default from settings (`quota_*`), and -1 means unlimited. Octavia
speaks two spellings for two resources (`loadbalancer`/`load_balancer`,
`healthmonitor`/`health_monitor`): both are accepted and both are returned,
with the effective value (a default filled in, never null), and `tenant_id`
beside `project_id` as on every Octavia object. A reset (DELETE) keeps the row
with every limit back to the default, as Octavia's QuotasRepository.delete
does: the project stays listed, and a second reset answers 202 again.
Enforcement lives in `common.check_quota`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field, StrictInt
from sqlalchemy import select
from sqlalchemy.orm import Session

from openha.api import openapi
from openha.api.context import RequestContext, get_admin_context, get_context, get_session
from openha.api.errors import NotFound
from openha.api.query import list_collection, requested_fields, select_fields
from openha.api.types import StrictModel
from openha.domain import constants as c
from openha.models import Quota

router = APIRouter(prefix="/quotas", tags=["quotas"])

# Octavia's limits: -1 (unlimited) up to two billion.
MIN_QUOTA = -1
MAX_QUOTA = 2_000_000_000
# Octavia's other spelling -> our column. On input it wins when both are sent, as in Octavia.
ALIASES = {"loadbalancer": "load_balancer", "healthmonitor": "health_monitor"}

QuotaValue = Annotated[StrictInt, Field(ge=MIN_QUOTA, le=MAX_QUOTA)]


class QuotaUpdate(StrictModel):
    # None resets that one limit to the deployment default.
    load_balancer: QuotaValue | None = None
    loadbalancer: QuotaValue | None = None
    listener: QuotaValue | None = None
    pool: QuotaValue | None = None
    member: QuotaValue | None = None
    health_monitor: QuotaValue | None = None
    healthmonitor: QuotaValue | None = None
    l7policy: QuotaValue | None = None
    l7rule: QuotaValue | None = None


class QuotaUpdateBody(StrictModel):
    quota: QuotaUpdate


# Octavia answers GET /quotas/defaults as it would for a project named "defaults".
DEFAULTS_PROJECT = "defaults"


def _render(values: Mapping[str, int], project_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {"project_id": project_id}
    for resource in c.QUOTA_RESOURCES:
        out[resource] = values[resource]
    for alias, column in ALIASES.items():
        out[alias] = values[column]
    out["tenant_id"] = project_id
    return out


def _defaults(request: Request) -> dict[str, int]:
    settings = request.app.state.settings
    return {r: int(getattr(settings, f"quota_{r}")) for r in c.QUOTA_RESOURCES}


def _effective(request: Request, row: Quota | None) -> dict[str, int]:
    values = _defaults(request)
    if row is not None:
        for resource in c.QUOTA_RESOURCES:
            value = getattr(row, resource)
            if value is not None:
                values[resource] = value
    return values


def _authorize_project(ctx: RequestContext, project_id: str) -> None:
    if project_id != ctx.project_id:
        ctx.authorize(project_id)


@router.get("", openapi_extra={"parameters": openapi.list_parameters(Quota)})
def list_quotas(
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    requested = request.query_params.get("project_id")
    if requested:
        _authorize_project(ctx, requested)
    return list_collection(
        request,
        session,
        ctx.visible(Quota),
        Quota,
        "quotas",
        lambda row: _render(_effective(request, row), row.project_id),
    )


# Declared before /{project_id} so that "defaults" is not taken for a project.
@router.get("/defaults")
def show_defaults(request: Request, ctx: RequestContext = Depends(get_context)) -> dict[str, Any]:
    body = _render(_defaults(request), DEFAULTS_PROJECT)
    return {"quota": select_fields(body, requested_fields(request))}


@router.get("/{project_id}")
def show_quota(
    project_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    _authorize_project(ctx, project_id)
    body = _render(_effective(request, session.get(Quota, project_id)), project_id)
    return {"quota": select_fields(body, requested_fields(request))}


@router.get("/{project_id}/default")
def show_project_defaults(
    project_id: str, request: Request, ctx: RequestContext = Depends(get_context)
) -> dict[str, Any]:
    _authorize_project(ctx, project_id)
    body = _render(_defaults(request), project_id)
    return {"quota": select_fields(body, requested_fields(request))}


@router.put("/{project_id}", status_code=202)
def update_quota(
    project_id: str,
    payload: QuotaUpdateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    changes = payload.quota.model_dump(exclude_unset=True)
    for alias, column in ALIASES.items():
        if alias in changes:
            changes[column] = changes.pop(alias)
    row = session.scalar(select(Quota).where(Quota.project_id == project_id).with_for_update())
    if row is None:
        row = Quota(project_id=project_id)
        session.add(row)
    for resource, value in changes.items():
        setattr(row, resource, value)
    session.commit()
    return {"quota": _render(_effective(request, row), project_id)}


@router.delete("/{project_id}", status_code=202, response_class=Response)
def reset_quota(
    project_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> Response:
    row = session.scalar(select(Quota).where(Quota.project_id == project_id).with_for_update())
    if row is None:
        raise NotFound.resource("Quotas", project_id)
    for resource in c.QUOTA_RESOURCES:
        setattr(row, resource, None)
    session.commit()
    return Response(status_code=202)
