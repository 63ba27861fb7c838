"""Webhooks, the pure part: which events a subscription hears, how payloads are signed.

Signature (`X-OpenHA-Signature: t=<unix seconds>,v1=<hex>`): HMAC-SHA256 keyed with the
webhook's secret over `"<t>." + body` (the raw request body bytes), as Stripe signs.
A receiver recomputes it over the body it got, compares in constant time, and refuses
a timestamp further than its tolerance from its clock (default 300 s), so a captured
request cannot be replayed later. Every attempt is signed afresh. `verify` is the
reference implementation (and what the tests' receiver runs).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from openha.domain import constants as c

SIGNATURE_HEADER = "X-OpenHA-Signature"
EVENT_HEADER = "X-OpenHA-Event"
DELIVERY_HEADER = "X-OpenHA-Delivery"
DEFAULT_TOLERANCE = 300.0
MAX_KINDS = 50
_RANK = {s: i for i, s in enumerate(c.SEVERITIES)}
# Events about the fleet's machinery (which host an instance runs on): operators' only,
# even when they concern a project's load balancer.
OPERATOR_ONLY = "instance."


def severity_rank(severity: str) -> int:
    return _RANK.get(severity, 0)


def kind_matches(patterns: Sequence[str], kind: str) -> bool:
    """An empty list hears every kind; "member.*" every kind under "member."."""
    if not patterns:
        return True
    for pattern in patterns:
        if pattern == kind or (pattern.endswith(".*") and kind.startswith(pattern[:-1])):
            return True
    return False


def hears(
    *,
    kinds: Sequence[str],
    min_severity: str,
    load_balancer_id: str | None,
    project_id: str,
    all_projects: bool,
    event_kind: str,
    event_severity: str,
    event_project_id: str | None,
    event_load_balancer_id: str | None,
) -> bool:
    """Whether a webhook with these filters hears this event."""
    if not all_projects and (
        event_project_id != project_id or event_kind.startswith(OPERATOR_ONLY)
    ):
        return False
    if load_balancer_id is not None and event_load_balancer_id != load_balancer_id:
        return False
    if severity_rank(event_severity) < severity_rank(min_severity):
        return False
    return kind_matches(kinds, event_kind)


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header's value for `body` sent at `timestamp` (now by default)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True when `header` signs `body` with `secret` at a time within `tolerance` of now."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook's target, or None."""
    if len(url) > 2048:
        return "url is longer than 2048 characters."
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        return "url must not hold spaces or control characters."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "url is not a valid URL."
    if parts.scheme not in ("http", "https"):
        return "url must be an http:// or https:// URL."
    if not parts.hostname:
        return "url must name a host."
    if parts.username or parts.password:
        return "url must not carry credentials: the signature authenticates deliveries."
    return None


def kinds_problem(kinds: Sequence[str]) -> str | None:
    if len(kinds) > MAX_KINDS:
        return f"kinds holds at most {MAX_KINDS} entries."
    for kind in kinds:
        body = kind[:-2] if kind.endswith(".*") else kind
        if not body or len(kind) > 64 or not all(ch.isalnum() or ch in "._" for ch in body):
            return f"kinds: '{kind[:100]}' is not an event kind (e.g. member.*, host.down)."
    return None


def backoff(attempts: int, base: float, ceiling: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling, capped."""
    return float(min(base * 2.0 ** max(attempts - 1, 0), ceiling))
