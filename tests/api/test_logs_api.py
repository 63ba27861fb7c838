"""The logs routes' answers that need no data plane: refusals, scoping, delivery state."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openha.db import transaction
from openha.models import Event
from tests.api.factories import create_lb
from tests.api.test_agents_and_manage import enroll, register
from tests.conftest import Client


def test_bad_log_queries_are_400s_and_others_lbs_403s(
    admin: Client, alice: Client, bob: Client, subnet_id: str
) -> None:
    lb = create_lb(alice, subnet_id)
    url = f"/v2/lbaas/loadbalancers/{lb['id']}/logs"
    for query in (
        "kind=debug",
        "status=5x",
        "status=600",
        "client=10.0.0.300",
        "limit=0",
        "limit=ten",
        "since=yesterday",
        "until=2026-01-01T10:00:00",  # no time zone
        "follow_seconds=0",
    ):
        resp = alice.get(f"{url}?{query}")
        assert resp.status_code == 400, (query, resp.text)
    # No instance yet (noop provider): nothing to read, and nobody to ask.
    ok = alice.get(f"{url}?status=5xx&client=10.0.0.0/8&since=2026-01-01T10:00:00Z")
    assert ok.status_code == 200 and ok.json() == {"logs": [], "unreachable_hosts": []}
    assert bob.get(url).status_code == 403
    assert alice.get(f"/v2/manage/loadbalancers/{lb['id']}/logs").status_code == 403
    assert admin.get(f"/v2/manage/loadbalancers/{lb['id']}/logs").status_code == 200
    assert admin.get("/v2/manage/loadbalancers/nope/logs").status_code == 404


def delivery(dropped: int) -> dict[str, Any]:
    collector = {"target": "t1", "type": "syslog", "host": "10.0.0.9", "port": 514,
                 "queued": 3, "spool_bytes": 4096, "dropped": dropped}  # fmt: skip
    return {"rsyslogd_running": True, "disk_bytes": 1, "dropped_segments": 0,
            "syslog": [collector], "s3": []}  # fmt: skip


def test_delivery_state_is_shown_and_drops_become_events(
    http: Any, admin: Client, session_factory: sessionmaker[Session]
) -> None:
    secret = enroll(session_factory, "log-host")
    host_id = register(http, secret, "log-host")
    auth = {"Authorization": f"Bearer {secret}"}

    def beat(view: dict[str, Any] | None) -> None:
        body = {"host_id": host_id, "name": "log-host", "full": False, "log_delivery": view}
        assert http.post("/v2/agent/heartbeat", headers=auth, json=body).status_code == 200

    def dropped_events() -> list[Event]:
        with transaction(session_factory) as s:
            return list(s.scalars(select(Event).where(Event.kind == "logs.dropped")))

    beat(delivery(0))
    beat(None)  # nothing changed: the state stays
    shown = admin.get(f"/v2/manage/hosts/{host_id}").json()["host"]["log_delivery"]
    assert shown["syslog"][0]["spool_bytes"] == 4096
    assert dropped_events() == []
    beat(delivery(120))
    (event,) = dropped_events()
    assert event.severity == "WARNING" and event.details["dropped"] == 120
    assert "dropped 120 log lines" in event.message and event.host_id == host_id
    beat(delivery(120))
    assert len(dropped_events()) == 1
