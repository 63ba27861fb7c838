"""Webhook deliveries from the outbox to a real HTTP receiver: signed, retried with
backoff, kept across a controller restart, and a failing webhook disabled.

The dispatcher is driven pass by pass here (`dispatch_due(wait=True)`), except in the
last test, where the controller's own loop delivers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from openha import events
from openha.controller import retention
from openha.controller import webhooks as dispatch
from openha.controller.reconciler import Reconciler
from openha.controller.webhooks import Dispatcher
from openha.db import make_engine, make_session_factory, transaction
from openha.domain.webhooks import verify
from openha.models import Event, LoadBalancer, Webhook, WebhookDelivery, utcnow
from openha.settings import Settings
from tests.api.factories import create_lb
from tests.conftest import Client, wait_for
from tests.webhook_receiver import SECRET, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def fast(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(
        update={"webhook_retry_base": 0.2, "webhook_retry_max": 0.4, "webhook_timeout": 2.0}
        | changes
    )


def subscribe(client: Client, url: str, path: str = "/v2/lbaas/webhooks", **body: Any) -> str:
    answer = client.post(path, {"webhook": {"url": url, "secret": SECRET, **body}})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["webhook"]["id"])


def emit(sessions: sessionmaker[Session], lb_id: str, message: str = "boom") -> int:
    with transaction(sessions) as s:
        row = events.emit(
            s,
            "loadbalancer.apply_failed",
            message,
            severity="ERROR",
            lb=s.get(LoadBalancer, lb_id),
        )
        s.flush()
        return row.id


def deliveries(client: Client, hook_id: str) -> list[dict[str, Any]]:
    answer = client.get(f"/v2/lbaas/webhooks/{hook_id}/deliveries")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["deliveries"])


def drain(d: Dispatcher, until: Any, timeout: float = 10.0) -> None:
    """Passes of the dispatcher until `until()` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "not delivered in time"
        d.dispatch_due(wait=True)
        time.sleep(0.05)


def test_a_delivery_is_signed_and_logged(
    alice: Client,
    subnet_id: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
    receiver: Receiver,
) -> None:
    lb_id = create_lb(alice, subnet_id)["id"]
    hook_id = subscribe(alice, receiver.url, kinds=["loadbalancer.apply_failed"])
    event_id = emit(session_factory, lb_id)
    d = Dispatcher(fast(settings), session_factory)
    try:
        drain(d, lambda: receiver.received)
    finally:
        d.close()
    (got,) = receiver.received
    assert got.signed
    assert got.headers["X-OpenHA-Event"] == "loadbalancer.apply_failed"
    assert got.payload["webhook_id"] == hook_id
    assert got.event["id"] == event_id and got.event["load_balancer_id"] == lb_id
    assert got.event["severity"] == "ERROR" and got.event["message"] == "boom"
    # Signed with this secret only: another key, a changed body, an old stamp all fail.
    header = got.headers["X-OpenHA-Signature"]
    assert verify(SECRET, header, got.body)
    assert not verify("another-secret-entirely", header, got.body)
    assert not verify(SECRET, header, got.body.replace(b"boom", b"bang"))
    assert not verify(SECRET, header, got.body, now=time.time() + 600)
    (logged,) = deliveries(alice, hook_id)
    assert logged["status"] == "DELIVERED" and logged["attempts"] == 1
    assert logged["response_status"] == 204 and logged["event_id"] == event_id


def test_a_receiver_that_is_down_gets_the_delivery_once_it_is_back(
    alice: Client,
    subnet_id: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
    receiver: Receiver,
) -> None:
    lb_id = create_lb(alice, subnet_id)["id"]
    hook_id = subscribe(alice, receiver.url, kinds=["loadbalancer.apply_failed"])
    receiver.stop()
    emit(session_factory, lb_id)
    d = Dispatcher(fast(settings), session_factory)
    try:
        drain(d, lambda: deliveries(alice, hook_id)[0]["attempts"] >= 2)
        (failing,) = deliveries(alice, hook_id)
        assert failing["status"] == "PENDING" and "ConnectError" in failing["last_error"]
        receiver.start()  # the same port
        drain(d, lambda: receiver.received)
        time.sleep(0.5)
        d.dispatch_due(wait=True)
    finally:
        d.close()
    assert len(receiver.received) == 1 and receiver.received[0].signed
    (done,) = deliveries(alice, hook_id)
    assert done["status"] == "DELIVERED" and done["attempts"] >= 3
    hook = alice.get(f"/v2/lbaas/webhooks/{hook_id}").json()["webhook"]
    assert hook["consecutive_failures"] == 0 and hook["enabled"]


def test_a_controller_restart_loses_nothing(
    alice: Client,
    subnet_id: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lb_id = create_lb(alice, subnet_id)["id"]
    subscribe(alice, receiver.url)
    first = emit(session_factory, lb_id, "before the restart")
    # A controller that claimed the delivery and died before sending it: once the claim
    # lapses, the next controller (a new engine, as a new process) sends it.
    monkeypatch.setattr(dispatch, "CLAIM_MARGIN", 0.0)
    quick = fast(settings, webhook_timeout=0.5)
    dead = Dispatcher(quick, session_factory)
    assert [a.delivery_id for a in dead.claim(10, [])]
    dead.close()
    second = emit(session_factory, lb_id, "while no controller ran")
    restarted = make_session_factory(make_engine(settings.database_url))
    d = Dispatcher(quick, restarted)
    try:
        drain(d, lambda: len(receiver.received) >= 2)
    finally:
        d.close()
    assert sorted(r.event["id"] for r in receiver.received) == [first, second]


def test_a_webhook_failing_again_and_again_is_disabled_with_an_event(
    alice: Client,
    admin: Client,
    subnet_id: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
    receiver: Receiver,
) -> None:
    lb_id = create_lb(alice, subnet_id)["id"]
    hook_id = subscribe(alice, receiver.url, kinds=["loadbalancer.*"])
    operators = Receiver()
    subscribe(admin, operators.url, "/v2/manage/webhooks", kinds=["webhook.disabled"])
    receiver.status = 500
    for i in range(2):
        emit(session_factory, lb_id, f"event {i}")
    d = Dispatcher(fast(settings, webhook_disable_after=2), session_factory)
    try:
        drain(d, lambda: operators.received)
        hook = alice.get(f"/v2/lbaas/webhooks/{hook_id}").json()["webhook"]
        # (Attempts under way when it was disabled still count.)
        assert not hook["enabled"] and hook["consecutive_failures"] >= 2
        assert "HTTP 500" in hook["disabled_reason"]
        (disabled,) = alice.get("/v2/lbaas/events", params={"kind": "webhook.disabled"}).json()[
            "events"
        ]
        assert disabled["resource_type"] == "webhook" and disabled["resource_id"] == hook_id
        assert operators.received[0].event["resource_id"] == hook_id
        # Disabled: nothing more is sent to it, and new events are not queued for it.
        sent = len(receiver.received)
        emit(session_factory, lb_id, "while disabled")
        time.sleep(0.5)
        d.dispatch_due(wait=True)
        assert len(receiver.received) == sent
        logged = deliveries(alice, hook_id)
        assert [x["status"] for x in logged] == ["PENDING", "PENDING"]
        # Re-enabled (the receiver fixed): what was queued goes out.
        receiver.status = 200
        assert alice.put(f"/v2/lbaas/webhooks/{hook_id}", {"webhook": {"enabled": True}}).is_success
        drain(d, lambda: {x["status"] for x in deliveries(alice, hook_id)} == {"DELIVERED"})
        assert {r.event["message"] for r in receiver.received} == {"event 0", "event 1"}
    finally:
        d.close()
        operators.stop()


def test_retention_purges_old_events_in_batches(
    alice: Client,
    subnet_id: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
    receiver: Receiver,
) -> None:
    lb_id = create_lb(alice, subnet_id)["id"]
    subscribe(alice, receiver.url)
    old = [emit(session_factory, lb_id, f"old {i}") for i in range(5)]
    new = emit(session_factory, lb_id, "new")
    with transaction(session_factory) as s:
        for row in s.scalars(select(Event).where(Event.id.in_(old))):
            row.created_at = utcnow() - timedelta(days=8)
    kept = settings.model_copy(update={"event_retention_days": 7.0, "retention_batch": 2})
    assert retention.purge_expired(kept, session_factory)["events"] == 5
    with transaction(session_factory) as s:
        assert new in set(s.scalars(select(Event.id)))
        assert not set(s.scalars(select(Event.id))) & set(old)
        left = set(s.scalars(select(WebhookDelivery.event_id)))
    assert left == {new}
    forever = settings.model_copy(update={"event_retention_days": 0.0})
    assert "events" not in retention.purge_expired(forever, session_factory)


def test_the_controller_delivers_within_moments(
    alice: Client,
    subnet_id: str,
    session_factory: sessionmaker[Session],
    receiver: Receiver,
    controller: Any,
) -> None:
    lb_id = create_lb(alice, subnet_id)["id"]
    subscribe(alice, receiver.url, kinds=["loadbalancer.apply_failed"])
    emit(session_factory, lb_id)
    # The running controller delivers on its own (no pass driven by the test). How soon
    # is the integration test's figure (within 2 s of HAProxy noticing, on a real stack);
    # here, with the whole suite beside it, only an upper bound.
    got = wait_for(lambda: receiver.received, timeout=5)
    assert got[0].signed


def test_postgresql_outbox(postgres_url: str, receiver: Receiver, settings: Settings) -> None:
    sessions = make_session_factory(make_engine(postgres_url))
    with transaction(sessions) as s:
        hook = Webhook(project_id="p", all_projects=True, url=receiver.url, secret=SECRET)
        s.add(hook)
        s.flush()
        hook_id = hook.id
        events.emit(s, "host.down", "h1", severity="ERROR", host_id="h1")
    d = Dispatcher(fast(settings), sessions)
    try:
        drain(d, lambda: receiver.received)
    finally:
        d.close()
        with transaction(sessions) as s:
            s.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook_id))
            s.execute(delete(Webhook).where(Webhook.id == hook_id))
    assert receiver.received[0].signed and receiver.received[0].event["kind"] == "host.down"


def _claims_are_disjoint(sessions: sessionmaker[Session], settings: Settings, url: str) -> None:
    with transaction(sessions) as s:
        hook = Webhook(project_id="p", all_projects=True, url=url, secret=SECRET)
        s.add(hook)
        s.flush()
        hook_id = hook.id
        for i in range(20):
            events.emit(s, "host.down", f"h{i}", host_id=f"h{i}")
    two = [Dispatcher(settings, sessions) for _ in range(2)]
    claimed: list[list[int]] = [[], []]
    try:

        def claim(i: int) -> None:
            claimed[i] = [a.delivery_id for a in two[i].claim(15, [])]

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for d in two:
            d.close()
        with transaction(sessions) as s:
            s.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook_id))
            s.execute(delete(Webhook).where(Webhook.id == hook_id))
    assert not set(claimed[0]) & set(claimed[1])
    assert len(claimed[0]) + len(claimed[1]) == 20


def test_two_controllers_never_claim_one_delivery(
    settings: Settings, session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    _claims_are_disjoint(session_factory, settings, receiver.url)


def test_two_controllers_never_claim_one_delivery_on_postgresql(
    postgres_url: str, settings: Settings, receiver: Receiver
) -> None:
    _claims_are_disjoint(make_session_factory(make_engine(postgres_url)), settings, receiver.url)


def test_delivery_metrics_count_outcomes_latency_and_the_queue(
    admin: Client,
    alice: Client,
    subnet_id: str,
    app: Any,
    settings: Settings,
    session_factory: sessionmaker[Session],
    receiver: Receiver,
) -> None:
    """One delivered, one retried then given up on: the controller's counters and
    latency histogram (published with its beat), and the outbox's depth and lag."""
    tight = fast(settings, webhook_max_attempts=2)
    lb_id = create_lb(alice, subnet_id)["id"]
    hook_id = subscribe(alice, receiver.url, kinds=["loadbalancer.apply_failed"])
    controller = Reconciler(tight, session_factory, app.state.providers)
    d = Dispatcher(tight, session_factory, controller.stats.deliveries)
    emit(session_factory, lb_id)
    queued = scrape(admin)
    assert queued[("openha_webhook_queue_length", (("state", "ready"),))] == 1
    assert queued[("openha_webhook_queue_lag_seconds", ())] >= 0
    try:
        drain(d, lambda: receiver.received)
        receiver.stop()
        emit(session_factory, lb_id, "again")
        drain(d, lambda: any(x["status"] == "FAILED" for x in deliveries(alice, hook_id)))
    finally:
        d.close()
    controller.liveness.beat()  # publishes its counters, as every beat does
    after = scrape(admin)
    owner = (("controller", controller.owner),)
    for outcome in ("delivered", "retried", "failed"):
        key = ("openha_webhook_deliveries_total", (*owner, ("outcome", outcome)))
        assert after[key] == 1, (outcome, after.get(key))
    assert after[("openha_webhook_delivery_duration_seconds_count", owner)] == 3
    inf = ("openha_webhook_delivery_duration_seconds_bucket", (*owner, ("le", "+Inf")))
    assert after[inf] == 3
    assert after[("openha_webhook_delivery_duration_seconds_sum", owner)] > 0
    assert after[("openha_webhook_queue_length", (("state", "ready"),))] == 0
    assert after[("openha_webhook_queue_length", (("state", "waiting"),))] == 0
    assert after[("openha_webhook_queue_lag_seconds", ())] == 0


def scrape(admin: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = admin.get("/metrics")
    assert resp.status_code == 200, resp.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }
