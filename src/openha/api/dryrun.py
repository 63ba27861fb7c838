"""`?dry_run=true` on the tenant API's writes: validate, show the config diff, store nothing.

A write to a load balancer's tree (POST, PUT or DELETE of a load balancer, listener,
pool, member, health monitor, L7 policy or rule) with `dry_run=true` runs exactly as
any other: same validation, same answer. But its request's session is bound to a
`DryRun` (`bind`, by `api.context.get_session`): every `Change` tells it which load
balancer it touches and what that one rendered before (`changes.Change` calls
`noted`), and the route's commit becomes: flush, render again, roll back. Nothing
is stored, nothing reaches the controller. The middleware then adds to the answer:

    "dry_run": {"diff": "<unified diff of every instance's haproxy.cfg and
                keepalived.conf>", "load_balancer_ids": [...]}

A DELETE, whose answer is an empty 204, answers 200 with that object alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openha.controller import actions
from openha.domain.configdiff import unified

SCOPE_KEY = "openha.dry_run"
_SESSION_KEY = "openha.dry_run"
# The tree's resources, under /v2, /v2.0 and /v2[.0]/lbaas.
_TREE_WRITE = re.compile(
    r"^/v2(\.0)?(/lbaas)?/(loadbalancers|listeners|pools|healthmonitors|l7policies)(/|$)"
)
_TRUE = frozenset({"true", "1", "yes"})


@dataclass
class DryRun:
    providers: Any
    before: dict[str, dict[str, str]] = field(default_factory=dict)  # LB id -> files
    after: dict[str, dict[str, str]] = field(default_factory=dict)
    committed: bool = False

    def diff(self) -> str:
        return "".join(unified(self.before[i], self.after.get(i, {})) for i in sorted(self.before))


def requested(scope: Scope) -> bool:
    """Whether this request is a tree write asking for a dry run."""
    if scope["method"] not in ("POST", "PUT", "DELETE") or not _TREE_WRITE.match(scope["path"]):
        return False
    query = scope.get("query_string", b"").decode("latin-1")
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "dry_run" and value.lower() in _TRUE:
            return True
    return False


def bind(session: Session, dry: DryRun) -> None:
    """Make `session`'s commits end the dry run instead: render, then roll back."""
    session.info[_SESSION_KEY] = dry

    def commit() -> None:
        session.flush()
        session.expire_all()  # collections loaded before the change are read anew
        for lb_id in dry.before:
            dry.after[lb_id] = actions.rendered(session, dry.providers, lb_id, place=True)
        dry.committed = True
        session.rollback()

    session.commit = commit  # type: ignore[method-assign]


def noted(session: Session, lb_id: str, *, new: bool = False) -> None:
    """A change of `lb_id` begins (its row locked): remember what it rendered so far."""
    dry: DryRun | None = session.info.get(_SESSION_KEY)
    if dry is None or lb_id in dry.before:
        return
    if new:
        dry.before[lb_id] = {}
        return
    dry.before[lb_id] = actions.rendered(session, dry.providers, lb_id, place=True)
    session.flush()
    session.expire_all()  # the change reads its rows fresh, as after `changes.lock`


class DryRunAnswers:
    """ASGI middleware: marks dry-run requests, and adds the diff to their answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not requested(scope):
            await self.app(scope, receive, send)
            return
        dry = DryRun(scope["app"].state.providers)
        scope[SCOPE_KEY] = dry
        start: Message | None = None
        chunks: list[bytes] = []

        async def holding_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await self._answer(start, b"".join(chunks), dry, send)
            else:
                await send(message)

        await self.app(scope, receive, holding_send)

    @staticmethod
    async def _answer(start: Message | None, body: bytes, dry: DryRun, send: Send) -> None:
        assert start is not None
        status = int(start["status"])
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        if dry.committed and status < 300:
            try:
                answer = json.loads(body) if body else {}
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                answer["dry_run"] = {"diff": dry.diff(), "load_balancer_ids": sorted(dry.before)}
                body = json.dumps(answer).encode()
                if status == 204:
                    status = 200
                    headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
                    headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
