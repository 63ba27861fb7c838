"""/v2/lbaas/events: a project's own events (an extension; see `openha.api.eventlog`).

Those of its load balancers and their objects, and its refused quotas; host-wide
events (no project) are the operators'. Admins see every project's."""

from __future__ import annotations

from openha.api import eventlog
from openha.api.context import get_context
from openha.models import Event

EVENTS = eventlog.events_resource(
    "/events", eventlog.TenantEventView, lambda ctx: ctx.visible(Event), get_context
)
router = eventlog.router(EVENTS)
