"""The audit trail: every write through the API is recorded, whatever its outcome.

An ASGI middleware sees each POST/PUT/PATCH/DELETE (the agents' own routes aside:
heartbeats are no change of anybody's): it hashes the body as it streams by (the
body itself is never kept, it may hold secrets), lets the request run, and once
the answer is sent records who (project, token id, roles, left in the scope by
`api.context.get_context`), what (method, path, the ids in the path and the id of
what a create made), when, and the status code, refused writes (4xx) included.

The record is one INSERT, made after the answer went out, in a worker thread: the
caller never waits for it. `GET /v2/manage/audit` reads the records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from typing import Any

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openha.api.context import CALLER, RequestContext
from openha.db import transaction
from openha.models import AuditRecord

log = logging.getLogger(__name__)

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Not audited: what agents send (heartbeats, registration) is no operator's change.
UNAUDITED_PREFIXES = ("/v2/agent/",)
# Only this much of an answer is read to find the id of what a create made.
MAX_ANSWER_BYTES = 1 << 16


class AuditTrail:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in WRITES
            or scope["path"].startswith(UNAUDITED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        digest = hashlib.sha256()
        seen_body = False
        status = 500  # an exception before any answer: the server's error answer
        answer: list[bytes] = []
        answer_size = 0

        async def hashing_receive() -> Message:
            nonlocal seen_body
            message = await receive()
            if message["type"] == "http.request" and message.get("body"):
                seen_body = True
                digest.update(message["body"])
            return message

        async def watching_send(message: Message) -> None:
            nonlocal status, answer_size
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and answer_size < MAX_ANSWER_BYTES:
                chunk = message.get("body", b"")
                answer.append(chunk)
                answer_size += len(chunk)
            await send(message)

        try:
            await self.app(scope, hashing_receive, watching_send)
        finally:
            sessions = getattr(scope["app"].state, "session_factory", None)
            if sessions is not None:
                record = _record(
                    scope,
                    status,
                    digest.hexdigest() if seen_body else None,
                    b"".join(answer) if answer_size < MAX_ANSWER_BYTES else b"",
                    (time.monotonic() - started) * 1000,
                )
                await anyio.to_thread.run_sync(_insert, sessions, record)


def _record(
    scope: Scope, status: int, body_sha256: str | None, answer: bytes, duration_ms: float
) -> AuditRecord:
    caller: RequestContext | None = scope.get(CALLER)
    path = scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        path = f"{path}?{query}"
    ids = [str(v) for v in (scope.get("path_params") or {}).values() if _is_id(v)]
    if 200 <= status < 300:
        ids += [i for i in _answer_ids(answer) if i not in ids]
    return AuditRecord(
        project_id=caller.project_id if caller else None,
        user_id=(caller.user_id or caller.token_id) if caller else None,
        roles=sorted(caller.roles) if caller else [],
        method=scope["method"],
        path=path[:2048],
        object_ids=ids,
        body_sha256=body_sha256,
        status_code=status,
        duration_ms=round(duration_ms, 3),
    )


def _is_id(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _answer_ids(answer: bytes) -> list[str]:
    """The id of the object an answer shows (`{"loadbalancer": {"id": ...}}`)."""
    if not answer:
        return []
    try:
        body = json.loads(answer)
    except ValueError:
        return []
    if not isinstance(body, dict) or len(body) != 1:
        return []
    (shown,) = body.values()
    ident = shown.get("id") if isinstance(shown, dict) else None
    return [str(ident)] if isinstance(ident, str) and _is_id(ident) else []


def _insert(sessions: Any, record: AuditRecord) -> None:
    try:
        with transaction(sessions) as s:
            s.add(record)
    except Exception:
        # The write itself happened (or was refused) already: losing its record is
        # bad, failing the caller for it would be worse.
        log.exception("cannot record %s %s in the audit trail", record.method, record.path)
