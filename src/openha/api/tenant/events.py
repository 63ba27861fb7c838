"""/v2/lbaas/events: a project's own events (an extension; see `openha.api.eventlog`).

Those of its load balancers and their objects, and its refused quotas; host-wide
events (no project) and those about instances (which host runs what) are the
operators'. Admins see every project's."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select

from openha.api import eventlog
from openha.api.context import RequestContext, get_context
from openha.domain.webhooks import OPERATOR_ONLY
from openha.models import Event


def _scope(ctx: RequestContext) -> Select[Any]:
    if ctx.is_admin:
        return ctx.visible(Event)
    return ctx.visible(Event).where(Event.kind.not_like(f"{OPERATOR_ONLY}%"))


EVENTS = eventlog.events_resource("/events", eventlog.TenantEventView, _scope, get_context)
router = eventlog.router(EVENTS)
