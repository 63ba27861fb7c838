"""What every tenant resource shares: serializing common fields, recording a change, quotas.

A change to any object in a load balancer's tree goes through `begin_change`,
which locks the LB row first (so concurrent writers and the controller queue
instead of deadlocking), bumps its desired generation and marks it
PENDING_UPDATE. Changes made while the LB is pending are accepted and merged
into the next apply: there is no 409 "immutable" here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openha.api.context import RequestContext
from openha.api.errors import BadRequest, Conflict, Forbidden, NotFound
from openha.domain import constants as c
from openha.models import (
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    LoadBalancer,
    Member,
    Pool,
    Provisioned,
    Quota,
)
from openha.providers.base import Provider, UnsupportedOption
from openha.providers.registry import ProviderRegistry


class StrictModel(BaseModel):
    """Request bodies: unknown attributes are a 400, as in Octavia."""

    model_config = ConfigDict(extra="forbid")


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def base_fields(obj: Provisioned) -> dict[str, Any]:
    return {
        "id": obj.id,
        "project_id": obj.project_id,
        "provisioning_status": obj.provisioning_status,
        "operating_status": obj.operating_status,
        "admin_state_up": obj.admin_state_up,
        "created_at": iso(obj.created_at),
        "updated_at": iso(obj.updated_at),
        "tags": list(obj.tags or []),
    }


def lock_load_balancer(session: Session, ctx: RequestContext, lb_id: str) -> LoadBalancer:
    """Lock the LB row for this transaction; 404 when the caller cannot see it."""
    lb = session.scalar(ctx.visible(LoadBalancer).where(LoadBalancer.id == lb_id).with_for_update())
    if lb is None:
        raise NotFound.resource("Load Balancer", lb_id)
    return lb


def begin_change(session: Session, ctx: RequestContext, lb_id: str) -> LoadBalancer:
    """Record that the LB's tree changes in this transaction (see module docstring)."""
    lb = lock_load_balancer(session, ctx, lb_id)
    if lb.provisioning_status == c.PENDING_DELETE:
        raise Conflict(f"Load Balancer {lb_id} is being deleted.")
    lb.desired_generation += 1
    if lb.provisioning_status != c.PENDING_CREATE:
        lb.provisioning_status = c.PENDING_UPDATE
    # A fresh change deserves an immediate attempt, whatever the backoff said.
    lb.attempts = 0
    lb.next_attempt_at = None
    return lb


def mark_updated(obj: Provisioned) -> None:
    if obj.provisioning_status != c.PENDING_CREATE:
        obj.provisioning_status = c.PENDING_UPDATE


def mark_deleted(obj: Provisioned) -> None:
    obj.provisioning_status = c.PENDING_DELETE


def refuse_if_deleting(obj: Provisioned, label: str) -> None:
    if obj.provisioning_status == c.PENDING_DELETE:
        raise Conflict(f"{label} {obj.id} is being deleted.")


QUOTA_MODELS: dict[str, tuple[type[Provisioned], str]] = {
    "load_balancer": (LoadBalancer, "Load Balancer"),
    "listener": (Listener, "Listener"),
    "pool": (Pool, "Pool"),
    "member": (Member, "Member"),
    "health_monitor": (HealthMonitor, "Health Monitor"),
    "l7policy": (L7Policy, "L7 Policy"),
    "l7rule": (L7Rule, "L7 Rule"),
}


def quota_limit(request: Request, session: Session, project_id: str, resource: str) -> int:
    row = session.get(Quota, project_id)
    value = getattr(row, resource, None) if row is not None else None
    if value is None:
        value = getattr(request.app.state.settings, f"quota_{resource}")
    return int(value)


def check_quota(
    request: Request, session: Session, project_id: str, resource: str, adding: int = 1
) -> None:
    """403 when creating `adding` more objects would exceed the project's quota."""
    limit = quota_limit(request, session, project_id, resource)
    if limit < 0:
        return
    model, label = QUOTA_MODELS[resource]
    used = session.scalar(
        select(func.count()).select_from(model).where(model.project_id == project_id)
    )
    if (used or 0) + adding > limit:
        raise Forbidden(f"Quota has been met for resources: {label}")


def registry(request: Request) -> ProviderRegistry:
    return request.app.state.providers


def provider_of(request: Request, lb: LoadBalancer) -> Provider:
    return registry(request).get(lb.provider)


def check_option(request: Request, lb: LoadBalancer, option: str, value: Any) -> None:
    """400 when the LB's provider cannot honour an option value."""
    try:
        provider_of(request, lb).check_option(option, value)
    except UnsupportedOption as exc:
        raise BadRequest(str(exc)) from None
