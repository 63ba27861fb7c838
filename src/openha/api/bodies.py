"""Request-body checks every route shares, made before any route parses a body.

JSON may spell a lone UTF-16 surrogate (`"\\ud800"`): Python's parser turns it into a
string no database, config file or reply can encode. Such bodies are refused here
with a 400, whatever the route, instead of failing somewhere deeper.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openha.api.errors import fault

# A body that spells no surrogate escape cannot hold one: the common case costs a search.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def has_invalid_text(value: Any) -> bool:
    """Whether any string in `value` (keys included) is not valid Unicode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(has_invalid_text(k) or has_invalid_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_invalid_text(v) for v in value)
    return False


class UnicodeBodies:
    """ASGI middleware: a JSON body with text that is not valid Unicode is a 400."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _SURROGATE_ESCAPE.search(body) and _invalid(body):
            response = fault(
                400, "Invalid input: text must be valid Unicode (a lone surrogate is not)."
            )
            await response(scope, receive, send)
            return
        pending = iter(messages)

        async def replay() -> Message:
            message = next(pending, None)
            return message if message is not None else await receive()

        await self.app(scope, replay, send)


def _invalid(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except ValueError:
        return False  # not JSON: the route refuses it as it refuses any malformed body
    return has_invalid_text(parsed)
