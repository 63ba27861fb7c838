"""Webhook deliveries: the controller drains the outbox the events wrote.

`openha.events.emit` writes a pending `WebhookDelivery` for every webhook hearing an
event, in the event's own transaction. Here a loop of its own claims the due ones
(moving their `next_attempt_at` past the attempt's deadline, so a controller that
dies mid-attempt leaves them due again, and several controllers never send one
twice at once), and a pool of `webhook_workers` threads POSTs them with httpx,
signed (`openha.domain.webhooks`). Nothing here runs on the reconcile loop's
threads: a slow receiver delays only its own deliveries.

Each attempt is logged on its row (status code, error, duration). A failure is
tried again after an exponential backoff until `webhook_max_attempts`; every
failed attempt counts against its webhook, a success clears the count, and a
webhook that reaches `webhook_disable_after` consecutive failures is disabled, with
a `webhook.disabled` event. Delivery is at least once: receivers deduplicate by
`X-OpenHA-Delivery` (or the event's id).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from openha import __version__, events
from openha.controller.stats import DELIVERED, DELIVERY_OUTCOMES, GAVE_UP, RETRIED, Histogram
from openha.db import ChangeWatch, transaction
from openha.domain import constants as c
from openha.domain.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    backoff,
    sign,
)
from openha.models import Webhook, WebhookDelivery, utcnow_precise
from openha.settings import Settings

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.1
# The longest an idle dispatcher goes without a look (backoffs expire without commits).
IDLE_POLL = 0.5
# A claimed delivery is due again this long after its attempt's deadline.
CLAIM_MARGIN = 30.0
QUEUED = select(WebhookDelivery.id).where(WebhookDelivery.status == c.DELIVERY_PENDING).limit(1)


@dataclass(frozen=True)
class Attempt:
    delivery_id: int
    webhook_id: str
    url: str
    secret: str
    kind: str
    body: bytes


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        stats: Histogram | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        # Each attempt's outcome and duration (the controller publishes them).
        self.stats = stats if stats is not None else Histogram(DELIVERY_OUTCOMES)
        self._changes = ChangeWatch(sessions)
        self._inflight: set[int] = set()
        self._lock = threading.Lock()
        self._next_poll = 0.0
        self._http = httpx.Client(
            timeout=settings.webhook_timeout, trust_env=False, follow_redirects=False
        )
        self._pool = ThreadPoolExecutor(
            max_workers=settings.webhook_workers, thread_name_prefix="webhook"
        )

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.wait(POLL_INTERVAL):
                try:
                    self.dispatch_due()
                except Exception:
                    log.exception("webhook dispatch failed; retrying")
        finally:
            self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)  # attempts under way finish (within their timeout)
        self._http.close()
        self._changes.close()

    def dispatch_due(self, wait: bool = False) -> int:
        """Start attempts of the due deliveries on free workers; how many were started.
        `wait`: return once they are done (tests, tools)."""
        changed = self._changes.changed()
        if not changed and time.monotonic() < self._next_poll:
            return 0
        self._next_poll = time.monotonic() + IDLE_POLL
        if self._changes.finds_nothing(QUEUED):
            return 0
        with self._lock:
            free = self.settings.webhook_workers - len(self._inflight)
            busy = list(self._inflight)
        if free <= 0:
            return 0
        attempts = self.claim(free, busy)
        with self._lock:
            self._inflight.update(a.delivery_id for a in attempts)
        futures = [self._pool.submit(self._attempt, a) for a in attempts]
        if wait:
            for future in futures:
                future.result()
        return len(attempts)

    def claim(self, limit: int, busy: list[int]) -> list[Attempt]:
        now = utcnow_precise()
        hold = timedelta(seconds=self.settings.webhook_timeout + CLAIM_MARGIN)
        with transaction(self.sessions) as s:
            rows = list(
                s.scalars(
                    select(WebhookDelivery)
                    .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                    .where(
                        WebhookDelivery.status == c.DELIVERY_PENDING,
                        WebhookDelivery.next_attempt_at <= now,
                        WebhookDelivery.id.not_in(busy),
                        Webhook.enabled,
                    )
                    .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True, of=WebhookDelivery)
                )
            )
            attempts = []
            for row in rows:
                row.next_attempt_at = now + hold
                hook = s.get(Webhook, row.webhook_id)
                assert hook is not None
                payload = {
                    "delivery_id": row.id,
                    "webhook_id": hook.id,
                    "event": events.document(row.event),
                }
                body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
                attempts.append(
                    Attempt(row.id, hook.id, hook.url, hook.secret, row.event.kind, body)
                )
        return attempts

    def _attempt(self, attempt: Attempt) -> None:
        try:
            status, error, took = self.send(attempt)
            outcome = self.record(attempt, status, error, took)
            if outcome is not None:
                self.stats.observe(outcome, took)
        except Exception:
            log.exception("webhook delivery %s failed", attempt.delivery_id)
        finally:
            with self._lock:
                self._inflight.discard(attempt.delivery_id)

    def send(self, attempt: Attempt) -> tuple[int | None, str | None, float]:
        """POST the delivery: (status code, error or None, seconds taken)."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"OpenHA/{__version__}",
            SIGNATURE_HEADER: sign(attempt.secret, attempt.body),
            EVENT_HEADER: attempt.kind,
            DELIVERY_HEADER: str(attempt.delivery_id),
        }
        started = time.monotonic()
        try:
            # Streamed and never read: a receiver's body is none of our business.
            with self._http.stream(
                "POST", attempt.url, content=attempt.body, headers=headers
            ) as resp:
                status = resp.status_code
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:1000], time.monotonic() - started
        error = None if 200 <= status < 300 else f"HTTP {status}"
        return status, error, time.monotonic() - started

    def record(
        self, attempt: Attempt, status: int | None, error: str | None, took: float
    ) -> str | None:
        """Write the attempt down; what it ended with (`stats.DELIVERY_OUTCOMES`), None
        when the delivery was settled elsewhere meanwhile."""
        settings = self.settings
        now = utcnow_precise()
        with transaction(self.sessions) as s:
            row = s.get(WebhookDelivery, attempt.delivery_id)
            if row is None or row.status != c.DELIVERY_PENDING:
                return None  # purged, or settled by another controller meanwhile
            row.attempts += 1
            row.last_attempt_at = now
            row.response_status = status
            row.last_error = error
            row.duration_ms = int(took * 1000)
            if error is None:
                row.status = c.DELIVERY_DELIVERED
                s.execute(
                    update(Webhook)
                    .where(Webhook.id == attempt.webhook_id, Webhook.consecutive_failures != 0)
                    .values(consecutive_failures=0)
                    .execution_options(synchronize_session=False)
                )
                return DELIVERED
            outcome = RETRIED
            if row.attempts >= settings.webhook_max_attempts:
                row.status = c.DELIVERY_FAILED
                outcome = GAVE_UP
            else:
                base, ceiling = settings.webhook_retry_base, settings.webhook_retry_max
                wait = backoff(row.attempts, base, ceiling)
                row.next_attempt_at = now + timedelta(seconds=wait)
            s.execute(
                update(Webhook)
                .where(Webhook.id == attempt.webhook_id)
                .values(consecutive_failures=Webhook.consecutive_failures + 1)
                .execution_options(synchronize_session=False)
            )
            hook = s.scalar(
                select(Webhook)
                .where(Webhook.id == attempt.webhook_id)
                .execution_options(populate_existing=True)
            )
            if hook is None or not hook.enabled:
                return outcome
            if hook.consecutive_failures >= settings.webhook_disable_after:
                hook.enabled = False
                hook.disabled_reason = (
                    f"{hook.consecutive_failures} consecutive failed deliveries; last: {error}"
                )
                events.emit(
                    s,
                    "webhook.disabled",
                    f"Webhook {hook.id} disabled: {hook.disabled_reason}",
                    severity=c.SEVERITY_WARNING,
                    project_id=None if hook.all_projects else hook.project_id,
                    resource=("webhook", hook.id),
                    details={"url": hook.url, "failures": hook.consecutive_failures},
                )
            return outcome
