"""/v2/manage/events: the event log (host down, apply failed, rescheduled, recovered …)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from openha.api.context import get_admin_context
from openha.api.resources import Resource
from openha.api.views import Timestamp, View
from openha.models import Event


class EventView(View):
    id: int
    created_at: Timestamp
    severity: str
    kind: str
    project_id: str | None
    load_balancer_id: str | None
    host_id: str | None
    instance_id: str | None
    message: str
    details: dict[str, Any] | None


EVENTS: Resource[Event] = Resource(
    model=Event,
    path="/manage/events",
    unknown_filters="ignore",
    singular="event",
    plural="events",
    label="Event",
    view=EventView,
    scope=lambda ctx: select(Event),
    reader=get_admin_context,
    has_show=False,
)
router = EVENTS.router()
