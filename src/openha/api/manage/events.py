"""/v2/manage/events: every event, for operators (see `openha.api.eventlog`)."""

from __future__ import annotations

from sqlalchemy import select

from openha.api import eventlog
from openha.api.context import get_admin_context
from openha.models import Event

EVENTS = eventlog.events_resource(
    "/manage/events", eventlog.EventView, lambda ctx: select(Event), get_admin_context
)
router = eventlog.router(EVENTS)
