"""/v2/manage/events: the event log (host down, apply failed, rescheduled, recovered …)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from openha.api.context import RequestContext, get_admin_context, get_session
from openha.api.query import list_collection
from openha.api.tenant.common import iso
from openha.models import Event

router = APIRouter(prefix="/manage", tags=["manage"])


def serialize_event(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "created_at": iso(e.created_at),
        "severity": e.severity,
        "kind": e.kind,
        "project_id": e.project_id,
        "load_balancer_id": e.load_balancer_id,
        "host_id": e.host_id,
        "instance_id": e.instance_id,
        "message": e.message,
        "details": e.details,
    }


@router.get("/events")
def list_events(
    request: Request,
    session: Session = Depends(get_session),
    _: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    return list_collection(request, session, select(Event), Event, "events", serialize_event)
