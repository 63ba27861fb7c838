"""The API's control-plane metrics: queue, lag, hosts, log delivery, controllers, latency."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from openha.controller.reconciler import Reconciler
from openha.db import transaction
from openha.models import Host, LoadBalancer, utcnow
from openha.settings import Settings
from tests.api.factories import create_lb
from tests.conftest import Client


def _scrape(admin: Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    resp = admin.get("/metrics")
    assert resp.status_code == 200, resp.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_queue_lag_and_controller_counters(
    admin: Client,
    alice: Client,
    subnet_id: str,
    app: Any,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    lb = create_lb(alice, subnet_id)
    assert alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}").status_code == 200
    before = _scrape(admin)
    assert _value(before, "openha_reconcile_queue_length", state="ready") == 1
    assert _value(before, "openha_reconcile_queue_length", state="backoff") == 0
    assert _value(before, "openha_reconcile_lag_seconds") >= 0
    assert _value(before, "openha_load_balancers_apply_failing") == 0
    # Latency by route template, never by raw path.
    created = ("POST", "/v2/lbaas/loadbalancers", "2xx")
    shown = ("GET", "/v2/lbaas/loadbalancers/{ident}", "2xx")
    for method, route, status in (created, shown):
        count = _value(
            before,
            "openha_api_request_duration_seconds_count",
            method=method,
            route=route,
            status=status,
        )
        assert count == 1
    assert not [key for key in before if lb["id"] in str(key)]

    reconciler = Reconciler(settings, session_factory, app.state.providers)
    reconciler.liveness.beat()  # alive: it may claim
    assert reconciler.tick() == 1
    reconciler.liveness.beat()  # publishes its counters, as every beat does
    after = _scrape(admin)
    assert _value(after, "openha_reconcile_queue_length", state="ready") == 0
    assert _value(after, "openha_reconcile_lag_seconds") == 0
    owner = reconciler.owner
    assert _value(after, "openha_reconciles_total", controller=owner, outcome="applied") == 1
    assert _value(after, "openha_reconcile_duration_seconds_count", controller=owner) == 1
    assert (
        _value(after, "openha_reconcile_duration_seconds_bucket", controller=owner, le="+Inf") == 1
    )
    assert not [key for key in after if key[0] == "openha_load_balancer_unhealthy"]
    with transaction(session_factory) as s:
        row = s.get(LoadBalancer, lb["id"])
        assert row is not None
        row.operating_status = "DEGRADED"
    degraded = {
        "project_id": lb["project_id"],
        "loadbalancer_id": lb["id"],
        "provisioning_status": "ACTIVE",
        "operating_status": "DEGRADED",
    }
    assert _value(_scrape(admin), "openha_load_balancer_unhealthy", **degraded) == 1
    # A GET of the metrics themselves was counted (the route is matched, so it is named).
    assert (
        _value(
            after,
            "openha_api_request_duration_seconds_count",
            method="GET",
            route="/metrics",
            status="2xx",
        )
        == 1
    )


def test_hosts_failover_and_log_delivery(
    admin: Client, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    delivery = {
        "rsyslogd_running": False,
        "error": None,
        "syslog": [{"target": "t1", "delivered": 7, "queued": 3, "dropped": 2}],
        "s3": [{"target": "s1", "shipped_objects": 4, "pending_segments": 1, "lag_seconds": 90.5}],
    }
    with transaction(session_factory) as s:
        s.add(Host(name="m-down", credential_hash="x1", status="DOWN", report={}))
        s.add(
            Host(
                name="m-up",
                credential_hash="x2",
                status="UP",
                last_heartbeat_at=utcnow(),
                report={"log_delivery": delivery},
            )
        )
    samples = _scrape(admin)
    with transaction(session_factory) as s:
        ids = {h.name: h.id for h in s.query(Host)}
    down = {"host_id": ids["m-down"], "host": "m-down"}
    up = {"host_id": ids["m-up"], "host": "m-up"}
    assert _value(samples, "openha_host_info", **down, status="DOWN", admin_state="ENABLED") == 1
    assert _value(samples, "openha_host_heartbeat_age_seconds", **up) < 60
    syslog = {**up, "target": "t1", "type": "syslog"}
    assert _value(samples, "openha_log_delivery_delivered_total", **syslog) == 7
    assert _value(samples, "openha_log_delivery_dropped_total", **syslog) == 2
    assert _value(samples, "openha_log_delivery_queued", **syslog) == 3
    s3 = {**up, "target": "s1", "type": "s3"}
    assert _value(samples, "openha_log_delivery_lag_seconds", **s3) == 90.5
    assert _value(samples, "openha_log_pipeline_down", **up) == 1


def test_prometheus_discovers_agents(
    http: Any, admin: Client, alice: Client, session_factory: sessionmaker[Session]
) -> None:
    with transaction(session_factory) as s:
        s.add(Host(name="sd-b", credential_hash="y1", management_url="https://10.0.0.2:9877"))
        s.add(Host(name="sd-a", credential_hash="y2", management_url="http://10.0.0.1:9877/"))
        s.add(Host(name="sd-c", credential_hash="y3", management_url="", status="DOWN"))
    assert http.get("/v2/manage/prometheus/targets").status_code == 401
    assert alice.get("/v2/manage/prometheus/targets").status_code == 403
    resp = admin.get("/v2/manage/prometheus/targets")
    assert resp.status_code == 200, resp.text
    with transaction(session_factory) as s:
        ids = {h.name: h.id for h in s.query(Host)}
    assert resp.json() == [
        {
            "targets": ["10.0.0.1:9877"],
            "labels": {
                "__scheme__": "http",
                "__metrics_path__": "/metrics",
                "host_id": ids["sd-a"],
                "host": "sd-a",
                "availability_zone": "",
            },
        },
        {
            "targets": ["10.0.0.2:9877"],
            "labels": {
                "__scheme__": "https",
                "__metrics_path__": "/metrics",
                "host_id": ids["sd-b"],
                "host": "sd-b",
                "availability_zone": "",
            },
        },
    ]


def test_failover_paused_is_the_controllers_verdict(
    admin: Client, app: Any, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """The breaker's state comes from the controllers (only they know which silent
    hosts' agents still answer), published with their liveness beat."""
    reconciler = Reconciler(settings, session_factory, app.state.providers)
    reconciler.liveness.beat()
    assert _value(_scrape(admin), "openha_failover_paused") == 0
    reconciler._note_pause("automatic failover paused: 2 of 3 hosts are down")
    reconciler.liveness.beat()
    assert _value(_scrape(admin), "openha_failover_paused") == 1
    reconciler._note_pause(None)
    reconciler.liveness.beat()
    assert _value(_scrape(admin), "openha_failover_paused") == 0


def test_unmatched_paths_share_one_series(admin: Client, alice: Client) -> None:
    for n in range(3):
        assert alice.get(f"/no/such/path/{n}").status_code == 404
    samples = _scrape(admin)
    routes = {
        dict(labels)["route"]
        for name, labels in samples
        if name == "openha_api_request_duration_seconds_count"
    }
    assert not [route for route in routes if "/no/such" in route]
    assert (
        _value(
            samples,
            "openha_api_request_duration_seconds_count",
            method="GET",
            route="unmatched",
            status="4xx",
        )
        == 3
    )
