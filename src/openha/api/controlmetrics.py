"""Control-plane metrics read from the database at scrape time.

The work queue, how far the data plane lags behind, failing applies, the failover
circuit breaker, each host's liveness and log delivery, the webhook outbox (its
depth and how old its oldest delivery is), and the counters every controller
publishes with its liveness beat (`openha.controller.stats`: reconciles and webhook
delivery attempts, by outcome, with their durations). Labels
are bounded by the fleet: host ids and names, delivery targets, controller ids
of processes alive now; never a load balancer, a route parameter or free text.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from openha import liveness
from openha.db import transaction
from openha.domain import constants as c
from openha.models import (
    Host,
    LoadBalancer,
    Service,
    Webhook,
    WebhookDelivery,
    due_for_reconcile,
    utcnow,
    utcnow_precise,
)
from openha.settings import Settings


class ControlPlaneCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        with transaction(self.sessions) as s:
            now = utcnow()
            yield from self._queue(s, now)
            yield from _webhook_outbox(s)
            hosts = list(
                s.execute(
                    select(
                        Host.id,
                        Host.name,
                        Host.status,
                        Host.admin_state,
                        Host.last_heartbeat_at,
                        Host.report,
                    )
                )
            )
            yield from self._hosts(hosts, now)
            yield from _log_delivery(hosts)
            services = s.execute(
                select(Service.id, Service.metrics).where(
                    Service.kind == liveness.KIND_CONTROLLER,
                    Service.last_seen_at
                    >= now - timedelta(seconds=self.settings.service_dead_after),
                )
            )
            yield from _controllers(list(services))

    def _queue(self, s: Session, now: Any) -> Iterator[Metric]:
        queue = GaugeMetricFamily(
            "openha_reconcile_queue_length",
            "Load balancers the controller must look at: ready now, or waiting out a backoff",
            labels=["state"],
        )
        backoff = LoadBalancer.next_attempt_at > now
        ready, waiting = s.execute(
            select(
                func.count().filter(~backoff | LoadBalancer.next_attempt_at.is_(None)),
                func.count().filter(backoff),
            ).where(due_for_reconcile())
        ).one()
        queue.add_metric(["ready"], ready)
        queue.add_metric(["backoff"], waiting)
        yield queue
        oldest = s.scalar(
            select(func.min(func.coalesce(LoadBalancer.updated_at, LoadBalancer.created_at))).where(
                LoadBalancer.desired_generation > LoadBalancer.applied_generation
            )
        )
        yield GaugeMetricFamily(
            "openha_reconcile_lag_seconds",
            "Age of the oldest change not yet applied to the data plane (since its LB was "
            "last written), 0 when every LB is applied",
            value=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        )
        yield GaugeMetricFamily(
            "openha_load_balancers_apply_failing",
            "Load balancers whose last apply failed (retried with backoff)",
            value=s.scalar(select(func.count()).where(LoadBalancer.last_error.is_not(None))) or 0,
        )

    def _hosts(self, hosts: list[Any], now: Any) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "openha_host_info",
            "A host with its status and admin state (value 1)",
            labels=["host_id", "host", "status", "admin_state"],
        )
        age = GaugeMetricFamily(
            "openha_host_heartbeat_age_seconds",
            "Seconds since the host's agent last heartbeated",
            labels=["host_id", "host"],
        )
        for host_id, name, status, admin_state, last, _ in hosts:
            info.add_metric([host_id, name, status, admin_state], 1)
            if last is not None:
                age.add_metric([host_id, name], max(0.0, (now - last).total_seconds()))
        yield info
        yield age


def _webhook_outbox(s: Session) -> Iterator[Metric]:
    """Deliveries waiting in the outbox for enabled webhooks (a disabled one's wait for
    an operator, not for the controller): due now, or waiting out a backoff or an
    attempt under way; and the age of the oldest."""
    now = utcnow_precise()
    due = WebhookDelivery.next_attempt_at <= now
    ready, waiting, oldest = s.execute(
        select(
            func.count().filter(due),
            func.count().filter(~due),
            func.min(WebhookDelivery.created_at),
        )
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.status == c.DELIVERY_PENDING, Webhook.enabled)
    ).one()
    queue = GaugeMetricFamily(
        "openha_webhook_queue_length",
        "Webhook deliveries not delivered yet: due now, or waiting (backoff, attempt under way)",
        labels=["state"],
    )
    queue.add_metric(["ready"], ready)
    queue.add_metric(["waiting"], waiting)
    yield queue
    yield GaugeMetricFamily(
        "openha_webhook_queue_lag_seconds",
        "Age of the oldest webhook delivery not delivered yet, 0 when none waits",
        value=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
    )


def _log_delivery(hosts: list[Any]) -> Iterator[Metric]:
    """Each host's log delivery, as its agent last reported it (`LogPipeline.delivery`)."""
    labels = ["host_id", "host", "target", "type"]
    delivered = CounterMetricFamily(
        "openha_log_delivery_delivered", "Log lines or objects delivered", labels=labels
    )
    dropped = CounterMetricFamily(
        "openha_log_delivery_dropped", "Log lines or closed files dropped", labels=labels
    )
    queued = GaugeMetricFamily(
        "openha_log_delivery_queued", "Lines or closed files waiting for delivery", labels=labels
    )
    lag = GaugeMetricFamily(
        "openha_log_delivery_lag_seconds",
        "Age of the oldest file waiting for an object store",
        labels=labels,
    )
    broken = GaugeMetricFamily(
        "openha_log_pipeline_down",
        "1 when the host's log pipeline reports an error or its rsyslogd is not running",
        labels=["host_id", "host"],
    )
    for host_id, name, _, _, _, report in hosts:
        view = (report or {}).get("log_delivery")
        if not isinstance(view, dict):
            continue
        down = bool(view.get("error")) or not view.get("rsyslogd_running", True)
        broken.add_metric([host_id, name], 1 if down else 0)
        for t in view.get("syslog") or []:
            key = [host_id, name, str(t.get("target")), "syslog"]
            delivered.add_metric(key, _num(t.get("delivered")))
            dropped.add_metric(key, _num(t.get("dropped")))
            queued.add_metric(key, _num(t.get("queued")))
        for t in view.get("s3") or []:
            key = [host_id, name, str(t.get("target")), "s3"]
            delivered.add_metric(key, _num(t.get("shipped_objects")))
            queued.add_metric(key, _num(t.get("pending_segments")))
            lag.add_metric(key, _num(t.get("lag_seconds")))
    yield from (delivered, dropped, queued, lag, broken)


def _controllers(services: list[Any]) -> Iterator[Metric]:
    """The counters each live controller published with its last beat."""
    runs = CounterMetricFamily(
        "openha_reconciles", "Reconcile passes by outcome", labels=["controller", "outcome"]
    )
    seconds = HistogramMetricFamily(
        "openha_reconcile_duration_seconds",
        "How long a reconcile pass over one load balancer took",
        labels=["controller"],
    )
    deliveries = CounterMetricFamily(
        "openha_webhook_deliveries",
        "Webhook delivery attempts by outcome: delivered, retried (failed, tried again "
        "after a backoff), failed (failed for the last time)",
        labels=["controller", "outcome"],
    )
    delivery_seconds = HistogramMetricFamily(
        "openha_webhook_delivery_duration_seconds",
        "How long a webhook delivery attempt took (until the receiver answered or failed)",
        labels=["controller"],
    )
    paused = 0
    for service_id, published in services:
        if not isinstance(published, dict):
            continue
        paused |= published.get("failover_paused") is True
        for name, count in (published.get("reconciles") or {}).items():
            runs.add_metric([service_id, str(name)], _num(count))
        _histogram(seconds, service_id, published.get("reconcile_seconds"))
        for name, count in (published.get("webhook_deliveries") or {}).items():
            deliveries.add_metric([service_id, str(name)], _num(count))
        _histogram(delivery_seconds, service_id, published.get("webhook_delivery_seconds"))
    yield runs
    yield seconds
    yield deliveries
    yield delivery_seconds
    yield GaugeMetricFamily(
        "openha_failover_paused",
        "1 while a controller holds automatic failover (too many hosts down at once)",
        value=paused,
    )


def _histogram(family: HistogramMetricFamily, service_id: str, published: Any) -> None:
    """Add one controller's histogram as published (`stats.Histogram.snapshot`)."""
    histogram = published if isinstance(published, dict) else {}
    buckets = [(_le(bound), _num(n)) for bound, n in histogram.get("buckets") or []]
    count = _num(histogram.get("count"))
    family.add_metric(
        [service_id], [*buckets, ("+Inf", count)], sum_value=_num(histogram.get("sum"))
    )


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _le(bound: Any) -> str:
    return repr(float(bound)) if isinstance(bound, int | float) else "+Inf"
