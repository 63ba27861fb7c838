"""A load balancer's access and admin log lines, read from the agents of its hosts.

Shared by the operator route (`/v2/manage/loadbalancers/{id}/logs`) and the tenant
one (`/v2/lbaas/loadbalancers/{id}/logs`, an extension: Octavia has none); who may
see which load balancer is decided before this module is called. Lines live on
the hosts (see `openha.agent.logstore`); every host holding an instance of the LB is
asked, and the answers are merged by time, so both halves of a pair read as one.
Each record gets `host` (where it was written) and `project`.

Follow mode streams JSON lines (`application/x-ndjson`): the last `limit` lines,
then every new line as the agents' cursors reveal it (polled every 0.2 s), until
the client goes away or `follow_seconds` have passed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio.to_thread
from fastapi import Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openha.agent.logstore import LogQuery
from openha.api.errors import BadRequest
from openha.models import Host, Instance, LoadBalancer
from openha.providers.haproxy import agent_client
from openha.providers.haproxy.agent_client import AgentAddress, AgentError
from openha.settings import Settings

POLL_INTERVAL = 0.2
MAX_FOLLOW_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Source:
    host_name: str
    agent: AgentAddress


@dataclass(frozen=True)
class LogParams:
    kind: str
    since: float | None
    until: float | None
    status: str | None
    client: str | None
    limit: int
    follow: bool
    follow_seconds: float

    def agent_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"kind": self.kind, "limit": self.limit}
        for key in ("since", "until", "status", "client"):
            value = getattr(self, key)
            if value is not None:
                params[key] = value
        return params


def _time(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be a unix time or an ISO 8601 date and time.") from None
    if when.tzinfo is None:
        raise BadRequest(f"{name} must say its time zone (e.g. 2026-01-01T10:00:00Z).")
    return when.timestamp()


def log_params(
    kind: str = Query("access", description="access (a line per request) or admin"),
    since: str | None = Query(None, description="unix time or ISO 8601: lines at or after"),
    until: str | None = Query(None, description="unix time or ISO 8601: lines at or before"),
    status: str | None = Query(None, description="an HTTP status (503) or class (5xx)"),
    client: str | None = Query(None, description="a client address or CIDR"),
    limit: str = Query("100", description="at most this many lines (1-10000), the newest"),
    follow: bool = Query(False, description="then stream new lines as JSON lines"),
    follow_seconds: str = Query(
        str(MAX_FOLLOW_SECONDS), description="stop following after this many seconds"
    ),
) -> LogParams:
    try:
        lim = int(limit)
        seconds = float(follow_seconds)
    except ValueError:
        raise BadRequest("limit and follow_seconds must be numbers.") from None
    if not 0 < seconds <= MAX_FOLLOW_SECONDS:
        raise BadRequest(f"follow_seconds must be between 0 and {MAX_FOLLOW_SECONDS}.")
    params = LogParams(
        kind, _time(since, "since"), _time(until, "until"), status, client, lim, follow, seconds
    )
    try:
        LogQuery(kind, params.since, params.until, status, client, lim)
    except ValueError as exc:
        raise BadRequest(f"{exc}.") from None
    return params


def sources(session: Session, settings: Settings, lb_id: str) -> list[Source]:
    """The hosts holding an instance of the load balancer, and how to reach their agents."""
    rows = session.execute(
        select(Host)
        .join(Instance, Instance.host_id == Host.id)
        .where(Instance.load_balancer_id == lb_id)
        .distinct()
    ).scalars()
    return [
        Source(h.name, agent_client.address(settings, h.management_url, h.agent_secret))
        for h in rows
        if h.management_url
    ]


def _decorate(records: list[dict[str, Any]], host: str, project: str) -> list[dict[str, Any]]:
    for record in records:
        record["host"] = host
        record.setdefault("project", project)
    return records


def _by_time(record: dict[str, Any]) -> float:
    ts = record.get("ts")
    return float(ts) if isinstance(ts, int | float) else 0.0


def _ask(
    srcs: list[Source], lb_id: str, params: list[dict[str, Any]]
) -> list[dict[str, Any] | None]:
    """Every source's answer (None for one that could not answer), asked in parallel."""

    def one(i: int) -> dict[str, Any] | None:
        try:
            return agent_client.get_logs(srcs[i].agent, lb_id, params[i])
        except AgentError:
            return None

    if len(srcs) <= 1:
        return [one(i) for i in range(len(srcs))]
    with ThreadPoolExecutor(max_workers=len(srcs)) as pool:
        return list(pool.map(one, range(len(srcs))))


def read(lb: LoadBalancer, srcs: list[Source], params: LogParams) -> dict[str, Any]:
    answers = _ask(srcs, lb.id, [params.agent_params()] * len(srcs))
    merged: list[dict[str, Any]] = []
    unreachable = []
    for src, answer in zip(srcs, answers, strict=True):
        if answer is None:
            unreachable.append(src.host_name)
            continue
        merged += _decorate(list(answer.get("records", [])), src.host_name, lb.project_id)
    merged.sort(key=_by_time)
    return {"logs": merged[-params.limit :], "unreachable_hosts": unreachable}


def follow(
    request: Request,
    lb: LoadBalancer,
    session_factory: sessionmaker[Session],
    settings: Settings,
    params: LogParams,
) -> StreamingResponse:
    lb_id, project = lb.id, lb.project_id

    def placement() -> list[Source]:
        with session_factory() as s:
            return sources(s, settings, lb_id)

    async def lines() -> AsyncIterator[bytes]:
        deadline = time.monotonic() + params.follow_seconds
        srcs = await anyio.to_thread.run_sync(placement)
        cursors: dict[str, str | None] = {}
        first = True
        looked = time.monotonic()
        while time.monotonic() < deadline:
            if time.monotonic() - looked > 5:
                # A failover may have moved an instance: follow where it runs now.
                srcs = await anyio.to_thread.run_sync(placement)
                looked = time.monotonic()
            asks = []
            for src in srcs:
                p = params.agent_params()
                cursor = cursors.get(src.host_name)
                if cursor is not None:
                    p["after"] = cursor
                asks.append(p)
            answers = await anyio.to_thread.run_sync(_ask, srcs, lb_id, asks)
            batch: list[dict[str, Any]] = []
            for src, answer in zip(srcs, answers, strict=True):
                if answer is None:
                    continue
                cursors[src.host_name] = str(answer.get("cursor", "0:0"))
                batch += _decorate(list(answer.get("records", [])), src.host_name, project)
            batch.sort(key=_by_time)
            if first:
                batch = batch[-params.limit :]
                first = False
            if batch:
                yield b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in batch)
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_INTERVAL)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def respond(request: Request, lb: LoadBalancer, session: Session, params: LogParams) -> Any:
    """The answer of both routes: a JSON document, or a stream when following."""
    settings: Settings = request.app.state.settings
    if params.follow:
        session.close()  # a stream may last hours: it holds no database session
        return follow(request, lb, request.app.state.session_factory, settings, params)
    return read(lb, sources(session, settings, lb.id), params)
