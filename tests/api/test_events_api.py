"""The event log's API: filters, cursor paging, follow mode, and what each project sees."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from openha import events
from openha.db import transaction
from openha.models import Event, LoadBalancer
from tests.api.factories import create_lb
from tests.conftest import PROJECT_A, PROJECT_B, Client

T0 = datetime(2026, 1, 1, 12, 0, 0)


def _lb(sessions: sessionmaker[Session], lb_id: str) -> LoadBalancer:
    with transaction(sessions) as s:
        lb = s.get(LoadBalancer, lb_id)
        assert lb is not None
        s.expunge(lb)
        return lb


def _seed(sessions: sessionmaker[Session], lb_a: str, lb_b: str) -> None:
    """Nine events: three per minute from T0, of both projects and a host."""
    a, b = _lb(sessions, lb_a), _lb(sessions, lb_b)
    with transaction(sessions) as s:
        for minute in range(3):
            rows = [
                events.emit(
                    s,
                    "member.operating_status",
                    "m1: ONLINE -> ERROR",
                    severity="ERROR",
                    lb=a,
                    resource=("member", "m1"),
                ),
                events.emit(s, "loadbalancer.recovered", "ok", lb=b),
                events.emit(s, "host.down", "h1 silent", severity="WARNING", host_id="h1"),
            ]
            for row in rows:
                row.created_at = T0 + timedelta(minutes=minute)
            s.flush()


def _ids(answer: Any) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [e["id"] for e in answer.json()["events"]]


@pytest.fixture
def seeded(
    alice: Client, bob: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> tuple[str, str]:
    lb_a = create_lb(alice, subnet_id)["id"]
    lb_b = create_lb(bob, subnet_id)["id"]
    with transaction(session_factory) as s:
        s.query(Event).delete()  # the creates' own events
    _seed(session_factory, lb_a, lb_b)
    return lb_a, lb_b


def test_filters(admin: Client, seeded: tuple[str, str]) -> None:
    lb_a, _ = seeded
    every = _ids(admin.get("/v2/manage/events"))
    assert len(every) == 9 and every == sorted(every)

    def count(**params: Any) -> int:
        return len(_ids(admin.get("/v2/manage/events", params=params)))

    assert count(load_balancer_id=lb_a) == 3
    assert count(project_id=PROJECT_B) == 3
    assert count(host_id="h1") == 3
    assert count(kind="host.down") == 3
    assert count(kind=["host.down", "loadbalancer.recovered"]) == 6
    assert count(severity="ERROR") == 3
    assert count(min_severity="WARNING") == 6
    assert count(resource_type="member", resource_id="m1") == 3
    assert count(since="2026-01-01T12:01:00") == 6
    assert count(since="2026-01-01T12:01:00Z", until="2026-01-01T12:02:00Z") == 3
    assert count(until=str(int((T0 - datetime(1970, 1, 1)).total_seconds()) + 60)) == 3
    shown = admin.get("/v2/manage/events", params={"load_balancer_id": lb_a}).json()["events"][0]
    assert shown["resource_type"] == "member" and shown["resource_id"] == "m1"
    assert shown["severity"] == "ERROR" and shown["project_id"] == PROJECT_A


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"until": "2026-13-01"},
        {"min_severity": "LOUD"},
        {"follow": "maybe"},
        {"follow_seconds": "-1"},
        {"follow_seconds": "nan"},
        {"marker": "abc"},
        {"no_such_filter": "1"},
    ],
)
def test_bad_queries_are_400(admin: Client, params: dict[str, str]) -> None:
    answer = admin.get("/v2/manage/events", params=params)
    assert answer.status_code == 400, answer.text


def test_cursor_paging(admin: Client, seeded: tuple[str, str]) -> None:
    every = _ids(admin.get("/v2/manage/events"))
    pages: list[int] = []
    answer = admin.get("/v2/manage/events", params={"limit": 4, "min_severity": "INFO"})
    while True:
        pages += _ids(answer)
        following = [ln for ln in answer.json()["events_links"] if ln["rel"] == "next"]
        if not following:
            break
        path = following[0]["href"].split("://", 1)[1].split("/", 1)[1]
        answer = admin.get("/" + path)
    assert pages == every
    newest = _ids(admin.get("/v2/manage/events", params={"sort": "id:desc", "limit": 2}))
    assert newest == every[::-1][:2]
    after = _ids(admin.get("/v2/manage/events", params={"marker": every[6]}))
    assert after == every[7:]


def test_tenants_see_their_own_events_only(
    alice: Client,
    bob: Client,
    admin: Client,
    seeded: tuple[str, str],
    session_factory: sessionmaker[Session],
) -> None:
    lb_a, _ = seeded
    mine = alice.get("/v2/lbaas/events").json()["events"]
    assert {e["load_balancer_id"] for e in mine} == {lb_a}
    assert all("host_id" not in e and "instance_id" not in e for e in mine)
    theirs = bob.get("/v2/lbaas/events").json()["events"]
    assert {e["project_id"] for e in theirs} == {PROJECT_B}
    # Asking for another project's objects finds nothing; host events are nobody's.
    assert _ids(bob.get("/v2/lbaas/events", params={"load_balancer_id": lb_a})) == []
    assert _ids(bob.get("/v2/lbaas/events", params={"project_id": PROJECT_A})) == []
    assert _ids(alice.get("/v2/lbaas/events", params={"kind": "host.down"})) == []
    # Which host runs its instances is not the project's business either.
    with transaction(session_factory) as s:
        events.emit(s, "instance.rebuilt", "on host h7", lb=s.get(LoadBalancer, lb_a))
    assert _ids(alice.get("/v2/lbaas/events", params={"kind": "instance.rebuilt"})) == []
    assert len(_ids(admin.get("/v2/lbaas/events", params={"kind": "instance.rebuilt"}))) == 1
    # Another project's event is no cursor.
    marker = mine[0]["id"]
    assert bob.get("/v2/lbaas/events", params={"marker": marker}).status_code == 400
    assert alice.get("/v2/manage/events").status_code == 403
    assert len(_ids(admin.get("/v2/lbaas/events"))) == 10


def test_a_refused_quota_is_the_projects_event(
    alice: Client, bob: Client, admin: Client, subnet_id: str
) -> None:
    assert admin.put("/v2/lbaas/quotas/" + PROJECT_A, {"quota": {"load_balancer": 0}}).is_success
    assert (
        alice.post(
            "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id}}
        ).status_code
        == 403
    )
    refused = alice.get("/v2/lbaas/events", params={"kind": "quota.refused"}).json()["events"]
    assert len(refused) == 1 and refused[0]["details"]["resource"] == "load_balancer"
    assert bob.get("/v2/lbaas/events", params={"kind": "quota.refused"}).json()["events"] == []


def test_follow_streams_new_events_only(
    alice: Client, bob: Client, seeded: tuple[str, str], session_factory: sessionmaker[Session]
) -> None:
    lb_a, lb_b = seeded
    a, b = _lb(session_factory, lb_a), _lb(session_factory, lb_b)

    def later() -> None:
        time.sleep(0.6)
        with transaction(session_factory) as s:
            events.emit(s, "loadbalancer.apply_failed", "theirs", severity="ERROR", lb=b)
            events.emit(s, "loadbalancer.apply_failed", "mine", severity="ERROR", lb=a)
            events.emit(s, "loadbalancer.recovered", "mine, quiet", lb=a)

    writer = threading.Thread(target=later)
    writer.start()
    started = time.monotonic()
    answer = alice.get(
        "/v2/lbaas/events",
        params={"follow": "true", "follow_seconds": "2", "min_severity": "ERROR"},
    )
    writer.join()
    assert time.monotonic() - started >= 1.9
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    lines = [ln for ln in answer.text.splitlines() if ln]
    streamed = [json.loads(ln) for ln in lines]
    assert [e["message"] for e in streamed] == ["mine"]
