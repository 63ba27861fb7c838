"""Request latency by route template: a plain ASGI middleware feeding one histogram.

Labelled by method, the route's path template (`/v2/lbaas/members/{member_id}`, not
the raw path: ids would make a series per object) and the status class, so the
number of series is bounded by the routes. Paths that match no route count as
`unmatched`.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Most API calls are a few milliseconds; a create that waits on SQLite's lock, or a
# log query going to agents, takes up to seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def request_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "openha_api_request_duration_seconds",
        "API request latency by route template",
        ["method", "route", "status"],
        buckets=BUCKETS,
        registry=registry,
    )


class RequestMetrics:
    """Observes every HTTP request into `app.state.request_histogram` (set by `bind`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes everything ends as a 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            histogram: Histogram | None = (
                getattr(scope["app"].state, "request_histogram", None) if "app" in scope else None
            )
            if histogram is not None:
                histogram.labels(scope["method"], _template(scope), f"{status // 100}xx").observe(
                    time.perf_counter() - started
                )


def _template(scope: Scope) -> str:
    """The matched route's path with its parameters as `{name}`.

    Built from the path and the parameters the router extracted (FastAPI keeps the
    routes of included routers apart, so no one route object holds the full path):
    every other segment of a matched path is a literal of its route, so the label
    takes as many values as there are routes.
    """
    if scope.get("route") is None:
        return "unmatched"
    names = {str(value): name for name, value in (scope.get("path_params") or {}).items()}
    segments = str(scope.get("path", "")).split("/")
    return "/".join(f"{{{names[seg]}}}" if seg in names else seg for seg in segments)
