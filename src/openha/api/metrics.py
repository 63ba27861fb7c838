"""/metrics: Prometheus exposition of what the database knows, computed at scrape time.

Besides the object counts here: the control plane's queue, lag, hosts, log delivery
and controllers' counters (`controlmetrics`), and this process's request latencies
(`requestmetrics`).

A custom collector reads counts and counters straight from the source of
truth, so every API process answers the same numbers and nothing drifts.
The numbers name every project's load balancers: a scraper shows an admin
token (`X-Auth-Token`) or the scrape credential (`Authorization: Bearer`,
the `metrics_token` setting).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request, Response, Security
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from openha.api import openapi
from openha.api.context import get_context
from openha.api.controlmetrics import ControlPlaneCollector
from openha.api.errors import Unauthorized
from openha.api.openapi import SCRAPE_BEARER, TOKEN
from openha.api.requestmetrics import request_histogram
from openha.db import transaction
from openha.domain import constants as c
from openha.models import CertificateExpiry, Host, Instance, ListenerStats, LoadBalancer, utcnow

router = APIRouter(tags=["metrics"])


class DatabaseCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        with transaction(self.sessions) as s:
            lbs = GaugeMetricFamily(
                "openha_load_balancers",
                "Load balancers by status",
                labels=["provider", "provisioning_status", "operating_status"],
            )
            for provider, prov, oper, n in s.execute(
                select(
                    LoadBalancer.provider,
                    LoadBalancer.provisioning_status,
                    LoadBalancer.operating_status,
                    func.count(),
                ).group_by(
                    LoadBalancer.provider,
                    LoadBalancer.provisioning_status,
                    LoadBalancer.operating_status,
                )
            ):
                lbs.add_metric([provider, prov, oper], n)
            yield lbs

            # One series per LB that needs attention only: a healthy fleet adds none.
            unhealthy = GaugeMetricFamily(
                "openha_load_balancer_unhealthy",
                "A load balancer in ERROR (either status) or DEGRADED (value 1)",
                labels=["project_id", "loadbalancer_id", "provisioning_status", "operating_status"],
            )
            for lb_id, project_id, prov, oper in s.execute(
                select(
                    LoadBalancer.id,
                    LoadBalancer.project_id,
                    LoadBalancer.provisioning_status,
                    LoadBalancer.operating_status,
                ).where(
                    or_(
                        LoadBalancer.provisioning_status == c.ERROR,
                        LoadBalancer.operating_status.in_((c.ERROR, c.DEGRADED)),
                    )
                )
            ):
                unhealthy.add_metric([project_id, lb_id, prov, oper], 1)
            yield unhealthy

            hosts = GaugeMetricFamily(
                "openha_hosts", "Hosts by status", labels=["status", "admin_state"]
            )
            for status, admin, n in s.execute(
                select(Host.status, Host.admin_state, func.count()).group_by(
                    Host.status, Host.admin_state
                )
            ):
                hosts.add_metric([status, admin], n)
            yield hosts

            instances = GaugeMetricFamily(
                "openha_instances", "Data plane instances", labels=["role", "status"]
            )
            for role, status, n in s.execute(
                select(Instance.role, Instance.status, func.count()).group_by(
                    Instance.role, Instance.status
                )
            ):
                instances.add_metric([role, status], n)
            yield instances

            labels = ["project_id", "loadbalancer_id", "listener_id"]
            families = {
                "bytes_in": CounterMetricFamily(
                    "openha_listener_bytes_in", "Bytes received from clients", labels=labels
                ),
                "bytes_out": CounterMetricFamily(
                    "openha_listener_bytes_out", "Bytes sent to clients", labels=labels
                ),
                "total_connections": CounterMetricFamily(
                    "openha_listener_connections", "Connections accepted", labels=labels
                ),
                "request_errors": CounterMetricFamily(
                    "openha_listener_request_errors", "Request errors", labels=labels
                ),
            }
            active = GaugeMetricFamily(
                "openha_listener_active_connections", "Connections open now", labels=labels
            )
            rows = s.execute(
                select(ListenerStats, LoadBalancer.project_id).join(
                    LoadBalancer, LoadBalancer.id == ListenerStats.load_balancer_id
                )
            )
            for stats, project_id in rows:
                key = [project_id, stats.load_balancer_id, stats.listener_id]
                for attr, family in families.items():
                    family.add_metric(key, getattr(stats, attr))
                active.add_metric(key, stats.active_connections)
            yield from families.values()
            yield active

            expiry = GaugeMetricFamily(
                "openha_listener_certificate_expiry_days",
                "Days until the listener's earliest certificate expires (negative: expired)",
                labels=labels,
            )
            now = utcnow()
            for row in s.scalars(select(CertificateExpiry)):
                days = (row.not_after - now).total_seconds() / 86400
                expiry.add_metric([row.project_id, row.load_balancer_id, row.listener_id], days)
            yield expiry


def scraper(
    request: Request,
    _token: str | None = Security(TOKEN),
    _bearer: Any = Security(SCRAPE_BEARER),
) -> None:
    """The scrape credential, else an admin like every operator route (401/403)."""
    expected: str = request.app.state.settings.metrics_token
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and secret:
        if expected and hmac.compare_digest(secret.encode(), expected.encode()):
            return
        raise Unauthorized("The scrape credential is invalid.")
    # A session of its own, closed before the collector's: on SQLite every session
    # holds the write lock, and the collector would wait for this one.
    sessions: sessionmaker[Session] = request.app.state.session_factory
    with sessions() as session:
        get_context(request, session)  # the route's rule: openha:manage


@router.get(
    "/metrics",
    dependencies=[Depends(scraper)],
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        401: openapi.ERRORS[401],
        403: openapi.ERRORS[403],
    },
)
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install(app: object, sessions: sessionmaker[Session]) -> None:
    state = app.state  # type: ignore[attr-defined]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(sessions))
    registry.register(ControlPlaneCollector(sessions, state.settings))
    state.request_histogram = request_histogram(registry)
    state.metrics_registry = registry
