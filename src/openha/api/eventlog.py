"""The event log's query: filters, cursor paging and follow mode, for both routes.

`/v2/manage/events` (operators: every event) and `/v2/lbaas/events` (an extension:
a project's events, those of its load balancers and its refused quotas) are one
`Resource` each, built here by `events_resource`; who sees what is the scope.

- Filters: `load_balancer_id`, `project_id`, `host_id`, `instance_id`, `kind`,
  `severity`, `resource_type`, `resource_id` (each repeatable: any of the values),
  `min_severity` (INFO < WARNING < ERROR), `since` / `until` (ISO 8601, naive
  meaning UTC, or unix seconds; `since` inclusive, `until` exclusive).
- Paging: the house's (`openha.api.query`): `limit`, `marker` (an event id: the
  cursor), `page_reverse`, `sort` (`sort=id:desc` for the newest first); the
  `next` link carries the filters over.
- Follow mode: `?follow=true` answers a stream of JSON lines
  (`application/x-ndjson`), one event per line, oldest first: the events after
  `marker` (or, without one, those that happen from now on) matching the filters,
  as they are committed, until the client goes away or `follow_seconds` (at most
  the `event_follow_max_seconds` setting) have passed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import ColumnElement, Select, func, select, true
from sqlalchemy.orm import Session

from openha.api import openapi
from openha.api.context import RequestContext, get_session
from openha.api.errors import BadRequest
from openha.api.resources import Resource
from openha.api.views import Timestamp, View
from openha.domain import constants as c
from openha.domain.webhooks import severity_rank
from openha.models import Event

POLL_INTERVAL = 0.25
# Ids under the cursor looked at again: on PostgreSQL a transaction may commit an
# event after one with a higher id (sequences are not commit-ordered).
LATE_WINDOW = 200
BATCH = 500
# Columns a follower filters on, as the list does (equal to any of the values).
COLUMNS = (
    "load_balancer_id",
    "project_id",
    "host_id",
    "instance_id",
    "kind",
    "severity",
    "resource_type",
    "resource_id",
)


class EventView(View):
    id: int
    created_at: Timestamp
    severity: str
    kind: str
    project_id: str | None
    load_balancer_id: str | None
    host_id: str | None
    instance_id: str | None
    resource_type: str | None
    resource_id: str | None
    message: str
    details: dict[str, Any] | None


class TenantEventView(View):
    """What a project sees of its events: not which hosts or instances were involved."""

    id: int
    created_at: Timestamp
    severity: str
    kind: str
    project_id: str | None
    load_balancer_id: str | None
    resource_type: str | None
    resource_id: str | None
    message: str
    details: dict[str, Any] | None


def parse_time(raw: str, name: str) -> datetime:
    """Naive UTC, as events are stored: from unix seconds or ISO 8601 (naive is UTC)."""
    try:
        return datetime.fromtimestamp(float(raw), UTC).replace(tzinfo=None)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 time or unix seconds.") from None
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def _since(values: list[str]) -> ColumnElement[bool]:
    return Event.created_at >= max(parse_time(v, "since") for v in values)


def _until(values: list[str]) -> ColumnElement[bool]:
    return Event.created_at < min(parse_time(v, "until") for v in values)


def _min_severity(values: list[str]) -> ColumnElement[bool]:
    for value in values:
        if value not in c.SEVERITIES:
            raise BadRequest(f"min_severity must be one of {', '.join(c.SEVERITIES)}.")
    lowest = max(severity_rank(v) for v in values)
    return Event.severity.in_([s for s in c.SEVERITIES if severity_rank(s) >= lowest])


def _follow_flag(values: list[str]) -> ColumnElement[bool]:
    for value in values:
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise BadRequest("follow must be true or false.")
    return true()


def _seconds(values: list[str]) -> ColumnElement[bool]:
    for value in values:
        try:
            ok = 0 < float(value) < float("inf")
        except ValueError:
            ok = False
        if not ok:
            raise BadRequest("follow_seconds must be a positive number.")
    return true()


FILTERS: dict[str, Callable[[list[str]], ColumnElement[bool]]] = {
    "since": _since,
    "until": _until,
    "min_severity": _min_severity,
    "follow": _follow_flag,
    "follow_seconds": _seconds,
}


def events_resource(
    path: str,
    view: type[View],
    scope: Callable[[RequestContext], Select[Any]],
    reader: Callable[..., RequestContext],
) -> Resource[Event]:
    return Resource(
        model=Event,
        path=path,
        singular="event",
        plural="events",
        label="Event",
        view=view,
        scope=scope,
        reader=reader,
        filters=FILTERS,
        has_show=False,
    )


def _following(request: Request) -> bool:
    return request.query_params.get("follow", "false").lower() in ("true", "1", "yes")


def router(resource: Resource[Event]) -> APIRouter:
    """GET <path>: a page of events, or (`follow=true`) a stream of them."""
    out = APIRouter(prefix=resource.path, tags=["events"])
    listed, _ = resource.answers
    extra = [
        openapi.query_parameter(name, description)
        for name, description in (
            ("since", "events at or after this time (ISO 8601, or unix seconds)"),
            ("until", "events before this time (ISO 8601, or unix seconds)"),
            ("min_severity", "INFO, WARNING or ERROR: this severity and above"),
            ("follow", "true: stream matching events as JSON lines as they happen"),
            ("follow_seconds", "stop following after this many seconds"),
        )
    ]

    @out.get(
        "",
        name=f"list_{resource.path.strip('/').replace('/', '_')}",
        response_model=None,
        responses={
            200: {
                "model": listed,
                "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            }
        },
        openapi_extra={"parameters": openapi.list_parameters(Event, {}) + extra},
    )
    def list_events(
        request: Request,
        session: Session = Depends(get_session),
        ctx: RequestContext = Depends(resource.reader),
    ) -> Response:
        marker = request.query_params.get("marker")
        if marker is not None and not marker.isdigit():
            raise BadRequest(f"Supplied pagination marker '{marker[:100]}' is not valid.")
        page = resource.listing(request, session, ctx)  # validates every parameter
        if not _following(request):
            return JSONResponse(page)
        return follow(request, session, resource, ctx)

    return out


def follow(
    request: Request, session: Session, resource: Resource[Event], ctx: RequestContext
) -> StreamingResponse:
    params = request.query_params
    stmt = resource.select(ctx)
    for name, clause in FILTERS.items():
        if name in params:
            stmt = stmt.where(clause(params.getlist(name)))
    for name in COLUMNS:
        if name in params:
            stmt = stmt.where(getattr(Event, name).in_(params.getlist(name)))
    marker = params.get("marker")
    cursor = int(marker) if marker else int(session.scalar(select(func.max(Event.id))) or 0)
    session.close()  # a stream may last an hour: it holds no database session
    limit = request.app.state.settings.event_follow_max_seconds
    seconds = min(float(params.get("follow_seconds", limit)), limit)
    factory = request.app.state.session_factory
    view = resource.view

    def poll(low: int, seen: frozenset[int]) -> list[dict[str, Any]]:
        with factory() as s:
            low = max(low, cursor)  # what was there before the follow began is not news
            rows = s.scalars(stmt.where(Event.id > low).order_by(Event.id).limit(BATCH))
            return [view.render_json(r) for r in rows if r.id not in seen]

    async def lines() -> AsyncIterator[bytes]:
        deadline = time.monotonic() + seconds
        top, seen = cursor, set[int]()
        while time.monotonic() < deadline:
            found = await anyio.to_thread.run_sync(poll, top - LATE_WINDOW, frozenset(seen))
            if found:
                yield b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in found)
                seen.update(e["id"] for e in found)
                top = max(top, *(e["id"] for e in found))
            seen = {i for i in seen if i > top - LATE_WINDOW}
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_INTERVAL)

    return StreamingResponse(lines(), media_type="application/x-ndjson")
