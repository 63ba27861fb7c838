"""The controller's own counters: reconciles and webhook deliveries, and how long they took.

The controller has no HTTP server: these ride its liveness beat into its
`services` row (`snapshot`, plain JSON), and the API's `/metrics` serves them per
controller. Cumulative since the process started, as Prometheus counters are.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from typing import Any

# Seconds: a member change is a runtime command (milliseconds), a new LB plumbs a
# namespace and starts HAProxy (a second or so), a dead agent costs the call deadline.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# What a pass over one LB ended with.
APPLIED = "applied"  # its newest tree is applied
FAILED = "failed"  # the provider refused or could not apply it (retried with backoff)
REQUEUED = "requeued"  # still in progress (another look shortly)
DELETED = "deleted"
SKIPPED = "skipped"  # gone meanwhile, or waiting for the failover circuit breaker
ERROR = "error"  # an internal error (recorded as a failure too)
OUTCOMES = (APPLIED, FAILED, REQUEUED, DELETED, SKIPPED, ERROR)

# What one webhook delivery attempt ended with.
DELIVERED = "delivered"  # the receiver answered 2xx
RETRIED = "retried"  # it failed and is tried again after a backoff
GAVE_UP = "failed"  # it failed for the last time (`webhook_max_attempts`)
DELIVERY_OUTCOMES = (DELIVERED, RETRIED, GAVE_UP)


class Histogram:
    """Counts by outcome and a histogram of durations; thread-safe, JSON snapshots."""

    def __init__(self, outcomes: Sequence[str], buckets: Sequence[float] = BUCKETS) -> None:
        self._lock = threading.Lock()
        self._bounds = tuple(buckets)
        self._outcomes = dict.fromkeys(outcomes, 0)
        self._buckets = [0] * len(self._bounds)
        self._count = 0
        self._sum = 0.0

    def observe(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1
            index = bisect.bisect_left(self._bounds, seconds)
            if index < len(self._bounds):
                self._buckets[index] += 1
            self._count += 1
            self._sum += seconds

    def snapshot(self) -> tuple[dict[str, int], dict[str, Any]]:
        """(counts by outcome, {"buckets": [[bound, cumulative count]...], "count", "sum"})."""
        with self._lock:
            cumulative, running = [], 0
            for bound, count in zip(self._bounds, self._buckets, strict=True):
                running += count
                cumulative.append([bound, running])
            histogram = {"buckets": cumulative, "count": self._count, "sum": round(self._sum, 6)}
            return dict(self._outcomes), histogram


class ReconcileStats:
    def __init__(self) -> None:
        self._reconciles = Histogram(OUTCOMES)
        # Webhook delivery attempts (`openha.controller.webhooks.Dispatcher`).
        self.deliveries = Histogram(DELIVERY_OUTCOMES)
        # This controller's failover circuit breaker (set by the reconciler): it alone
        # knows which silent hosts' agents still answer.
        self.failover_paused = False

    def observe(self, outcome: str, seconds: float) -> None:
        self._reconciles.observe(outcome, seconds)

    def snapshot(self) -> dict[str, Any]:
        """JSON for the services row: outcomes, and cumulative histogram buckets."""
        reconciles, seconds = self._reconciles.snapshot()
        deliveries, delivery_seconds = self.deliveries.snapshot()
        return {
            "failover_paused": self.failover_paused,
            "reconciles": reconciles,
            "reconcile_seconds": seconds,
            "webhook_deliveries": deliveries,
            "webhook_delivery_seconds": delivery_seconds,
        }
