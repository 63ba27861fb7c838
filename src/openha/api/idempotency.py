"""`Idempotency-Key` on creates: a retried POST answers what the first one did.

Following the IETF draft "The Idempotency-Key HTTP Header Field": a create sent
with the header is recorded with its answer, per project and per route, for a day.

- The same key and body again: the recorded answer (status and body), and nothing
  is created a second time.
- The same key with another body: 422.
- The same key while the first request is still running: 409 (PostgreSQL, where
  requests run side by side; on SQLite writers queue, so the second one waits
  and then gets the recorded answer).

The key row is written in the create's own transaction (`commit`): it exists
exactly when the objects it answers for do, so a create whose answer was lost
to a crash or restart is replayed, never made twice, and a failed one may be
retried. Expired keys are removed as keys are used (no separate sweeper needed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import Response
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from openha.api.context import RequestContext, get_context, get_session
from openha.api.errors import APIError, BadRequest, Conflict
from openha.models import IdempotencyKey, utcnow

HEADER = "Idempotency-Key"
KEPT_FOR = timedelta(days=1)
MAX_KEY_LENGTH = 255


class Replay(Exception):
    """The recorded answer of an earlier request with the same key and body."""

    def __init__(self, status_code: int, content: str) -> None:
        super().__init__(status_code)
        self.status_code = status_code
        self.content = content


class KeyReused(APIError):
    status_code = 422
    faultcode = "Client"


@dataclass(frozen=True)
class Guard:
    """A keyed create in progress: `commit` records its answer with its objects."""

    project_id: str
    route: str
    key: str
    digest: str
    status_code: int


async def body_digest(request: Request) -> str:
    """The request body's fingerprint: its JSON, whatever the spacing or key order."""
    raw = await request.body()  # already read and kept by the route: no I/O here
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return hashlib.sha256(raw).hexdigest()
    return hashlib.sha256(canonical.encode("utf-8", "backslashreplace")).hexdigest()


def guard(
    request: Request,
    key: str | None = Header(default=None, alias=HEADER),
    digest: str = Depends(body_digest),
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> Guard | None:
    """The dependency of every create: None without the header; a replay (raised)
    when the key already answered; otherwise the key, to be recorded by `commit`."""
    if key is None:
        return None
    key = key.strip().strip('"')  # the draft's sf-string may come quoted
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise BadRequest(
            f"Invalid {HEADER}: it must be 1 to {MAX_KEY_LENGTH} printable characters."
        )
    route = request.scope["route"]
    # Per operation and parent, whichever of the API's prefixes (/v2, /v2.0, /v2/lbaas).
    params = ",".join(f"{k}={v}" for k, v in sorted(request.path_params.items()))
    found = Guard(
        project_id=ctx.project_id or "",
        route=f"{route.name}({params})"[:255],
        key=key,
        digest=digest,
        status_code=route.status_code or 200,
    )
    if session.get_bind().dialect.name == "postgresql":
        # Held until this request's transaction ends: a second request with the key
        # meanwhile is told so at once instead of queueing behind the first.
        lock_id = int.from_bytes(
            hashlib.sha256(f"{found.project_id}\0{found.route}\0{key}".encode()).digest()[:8],
            "big",
            signed=True,
        )
        if not session.scalar(select(func.pg_try_advisory_xact_lock(lock_id))):
            raise Conflict(f"A request with this {HEADER} is still being processed.")
    cutoff = utcnow() - KEPT_FOR
    session.execute(
        delete(IdempotencyKey)
        .where(IdempotencyKey.created_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    row = session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.project_id == found.project_id,
            IdempotencyKey.route == found.route,
            IdempotencyKey.key == key,
        )
    )
    if row is None:
        return found
    if row.request_digest != digest:
        raise KeyReused(
            f"This {HEADER} was used with another request body: a new request needs a new key."
        )
    raise Replay(row.status_code, row.response)


def commit(session: Session, keyed: Guard | None, answer: Any = None) -> None:
    """Commit the create, with its answer recorded under its key (if it has one)."""
    if keyed is not None:
        content = "" if answer is None else render(answer)
        session.add(
            IdempotencyKey(
                project_id=keyed.project_id,
                route=keyed.route,
                key=keyed.key,
                request_digest=keyed.digest,
                status_code=keyed.status_code,
                response=content,
            )
        )
    session.commit()


def render(answer: Any) -> str:
    """The body FastAPI sends for `answer`, byte for byte."""
    return json.dumps(
        jsonable_encoder(answer), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(Replay)
    async def _replay(_: Request, exc: Replay) -> Response:
        if not exc.content:
            return Response(status_code=exc.status_code)
        return Response(exc.content, status_code=exc.status_code, media_type="application/json")
