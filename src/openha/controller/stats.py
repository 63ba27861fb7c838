"""The controller's own counters: reconciles by outcome and how long they took.

The controller has no HTTP server: these ride its liveness beat into its
`services` row (`snapshot`, plain JSON), and the API's `/metrics` serves them per
controller. Cumulative since the process started, as Prometheus counters are.
"""

from __future__ import annotations

import bisect
import threading
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


class ReconcileStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes = dict.fromkeys(OUTCOMES, 0)
        self._buckets = [0] * len(BUCKETS)
        self._count = 0
        self._sum = 0.0
        # This controller's failover circuit breaker (set by the reconciler): it alone
        # knows which silent hosts' agents still answer.
        self.failover_paused = False

    def observe(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1
            index = bisect.bisect_left(BUCKETS, seconds)
            if index < len(BUCKETS):
                self._buckets[index] += 1
            self._count += 1
            self._sum += seconds

    def snapshot(self) -> dict[str, Any]:
        """JSON for the services row: outcomes, and cumulative histogram buckets."""
        with self._lock:
            cumulative, running = [], 0
            for bound, count in zip(BUCKETS, self._buckets, strict=True):
                running += count
                cumulative.append([bound, running])
            return {
                "failover_paused": self.failover_paused,
                "reconciles": dict(self._outcomes),
                "reconcile_seconds": {
                    "buckets": cumulative,
                    "count": self._count,
                    "sum": round(self._sum, 6),
                },
            }
