"""What tenant resources share besides the change path (`changes`): quotas and the
checks of options against the LB's provider."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openha import events
from openha.api.errors import BadRequest, Forbidden
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
        # The request fails: what it wrote so far goes, and the refusal alone is kept
        # (in this session: another would wait for the write lock it may hold).
        session.rollback()
        events.emit(
            session,
            "quota.refused",
            f"Quota of {limit} {label}(s) met: {adding} more refused",
            severity=c.SEVERITY_WARNING,
            project_id=project_id,
            details={"resource": resource, "limit": limit, "used": used or 0},
        )
        session.commit()
        raise Forbidden(f"Quota has been met for resources: {label}")


def registry(request: Request) -> ProviderRegistry:
    providers: ProviderRegistry = request.app.state.providers
    return providers


def provider_of(request: Request, lb: LoadBalancer) -> Provider:
    return registry(request).get(lb.provider)


def check_option(request: Request, lb: LoadBalancer, option: str, value: Any) -> None:
    """400 when the LB's provider cannot honour an option value."""
    try:
        provider_of(request, lb).check_option(option, value)
    except UnsupportedOption as exc:
        raise BadRequest(str(exc)) from None
