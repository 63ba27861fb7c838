"""Webhook subscriptions through the API: validation, the write-only secret, who sees
which webhook, and which events land in whose outbox."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from openha import events
from openha.db import transaction
from openha.models import LoadBalancer, Webhook, WebhookDelivery
from tests.api.factories import create_lb
from tests.conftest import PROJECT_A, Client

SECRET = "0123456789abcdef-secret"


def hook(client: Client, path: str = "/v2/lbaas/webhooks", **body: Any) -> dict[str, Any]:
    answer = client.post(path, {"webhook": {"url": "http://127.0.0.1:9/h", **body}})
    assert answer.status_code == 201, answer.text
    return dict(answer.json()["webhook"])


def count(sessions: sessionmaker[Session], model: type[Any]) -> int:
    with transaction(sessions) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_the_secret_is_write_only(alice: Client) -> None:
    given = hook(alice, secret=SECRET)
    assert "secret" not in given
    generated = hook(alice)
    assert len(generated["secret"]) >= 32  # shown once, in the create's answer
    for shown in (
        alice.get(f"/v2/lbaas/webhooks/{generated['id']}").json()["webhook"],
        *alice.get("/v2/lbaas/webhooks").json()["webhooks"],
        alice.put(f"/v2/lbaas/webhooks/{given['id']}", {"webhook": {"secret": SECRET * 2}}).json()[
            "webhook"
        ],
    ):
        assert "secret" not in shown


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.com/x"},
        {"url": "file:///etc/passwd"},
        {"url": "http:///nohost"},
        {"url": "http://exa mple.com/"},
        {"url": "http://user:pw@example.com/"},
        {"url": "http://example.com:99999/"},
        {"url": "http://example.com/" + "a" * 2100},
        {"url": "http://example.com/", "kinds": ["member.operating_status", "bad kind"]},
        {"url": "http://example.com/", "kinds": "member.*"},
        {"url": "http://example.com/", "min_severity": "LOUD"},
        {"url": "http://example.com/", "secret": "short"},
        {"url": "http://example.com/", "colour": "red"},
        {"name": "no url"},
    ],
)
def test_bad_webhooks_are_400_and_change_nothing(
    alice: Client, body: dict[str, Any], session_factory: sessionmaker[Session]
) -> None:
    answer = alice.post("/v2/lbaas/webhooks", {"webhook": body})
    assert answer.status_code == 400, answer.text
    assert count(session_factory, Webhook) == 0


def test_update_validates_and_re_enabling_clears_failures(
    alice: Client, session_factory: sessionmaker[Session]
) -> None:
    made = hook(alice, kinds=["member.*"], min_severity="WARNING")
    path = f"/v2/lbaas/webhooks/{made['id']}"
    assert alice.put(path, {"webhook": {"url": "gopher://x"}}).status_code == 400
    assert alice.put(path, {"webhook": {"url": None}}).status_code == 400
    with transaction(session_factory) as s:
        row = s.get(Webhook, made["id"])
        assert row is not None
        row.enabled, row.consecutive_failures, row.disabled_reason = False, 20, "20 failures"
    changed = alice.put(path, {"webhook": {"enabled": True, "kinds": []}}).json()["webhook"]
    assert changed["enabled"] and changed["consecutive_failures"] == 0
    assert changed["disabled_reason"] is None and changed["kinds"] == []
    assert changed["min_severity"] == "WARNING" and changed["url"] == made["url"]


def test_tenants_see_and_touch_only_their_own_webhooks(
    alice: Client, alice_reader: Client, bob: Client, admin: Client, subnet_id: str
) -> None:
    mine = hook(alice)
    operators = hook(admin, "/v2/manage/webhooks")
    assert operators["all_projects"] and not mine["all_projects"]
    assert [h["id"] for h in alice.get("/v2/lbaas/webhooks").json()["webhooks"]] == [mine["id"]]
    assert bob.get("/v2/lbaas/webhooks").json()["webhooks"] == []
    for method in ("get", "delete"):
        assert getattr(bob, method)(f"/v2/lbaas/webhooks/{mine['id']}").status_code == 404
    assert bob.get(f"/v2/lbaas/webhooks/{mine['id']}/deliveries").status_code == 404
    assert alice.get(f"/v2/lbaas/webhooks/{operators['id']}").status_code == 404
    put = bob.put(f"/v2/lbaas/webhooks/{mine['id']}", {"webhook": {"enabled": False}})
    assert put.status_code == 404
    # A subscription to another project's load balancer is refused (Octavia's 403 for
    # another project's object).
    lb_a = create_lb(alice, subnet_id)["id"]
    refused = bob.post(
        "/v2/lbaas/webhooks", {"webhook": {"url": "http://x/", "load_balancer_id": lb_a}}
    )
    assert refused.status_code == 403
    assert (
        alice_reader.post("/v2/lbaas/webhooks", {"webhook": {"url": "http://x/"}}).status_code
        == 403
    )
    assert alice.get("/v2/manage/webhooks").status_code == 403
    listed = {h["id"] for h in admin.get("/v2/manage/webhooks").json()["webhooks"]}
    assert listed == {mine["id"], operators["id"]}
    assert alice.delete(f"/v2/lbaas/webhooks/{mine['id']}").status_code == 204


def test_each_event_lands_in_the_outbox_of_the_webhooks_hearing_it(
    alice: Client,
    bob: Client,
    admin: Client,
    subnet_id: str,
    session_factory: sessionmaker[Session],
) -> None:
    lb_a = create_lb(alice, subnet_id)["id"]
    lb_b = create_lb(bob, subnet_id)["id"]
    everything = hook(admin, "/v2/manage/webhooks")["id"]
    a_all = hook(alice)["id"]
    a_members = hook(alice, kinds=["member.*"])["id"]
    a_errors_of_lb = hook(alice, min_severity="ERROR", load_balancer_id=lb_a)["id"]
    a_off = hook(alice, enabled=False)["id"]
    b_all = hook(bob)["id"]
    with transaction(session_factory) as s:
        s.query(WebhookDelivery).delete()
        a, b = s.get(LoadBalancer, lb_a), s.get(LoadBalancer, lb_b)
        events.emit(s, "member.operating_status", "x", severity="ERROR", lb=a)
        events.emit(s, "loadbalancer.recovered", "y", lb=a)
        events.emit(s, "loadbalancer.recovered", "z", lb=b)
        events.emit(s, "host.down", "h", severity="ERROR", host_id="h1")
    with transaction(session_factory) as s:
        heard: dict[str, set[str]] = {}
        for delivery in s.scalars(select(WebhookDelivery)):
            heard.setdefault(delivery.webhook_id, set()).add(delivery.event.message)
    assert heard == {
        everything: {"x", "y", "z", "h"},
        a_all: {"x", "y"},
        a_members: {"x"},
        a_errors_of_lb: {"x"},
        b_all: {"z"},
    }
    assert a_off not in heard
    deliveries = alice.get(f"/v2/lbaas/webhooks/{a_all}/deliveries").json()["deliveries"]
    assert sorted(d["event_kind"] for d in deliveries) == [
        "loadbalancer.recovered",
        "member.operating_status",
    ]
    assert {d["status"] for d in deliveries} == {"PENDING"}
    # Deleting a webhook takes its outbox with it.
    assert alice.delete(f"/v2/lbaas/webhooks/{a_all}").status_code == 204
    with transaction(session_factory) as s:
        left = s.scalar(select(func.count()).where(WebhookDelivery.webhook_id == a_all))
    assert left == 0
    assert PROJECT_A in {
        h["project_id"] for h in admin.get("/v2/manage/webhooks").json()["webhooks"]
    }


def test_a_keyed_retry_creates_one_webhook(
    alice: Client, session_factory: sessionmaker[Session]
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "hook-1"}
    body = {"webhook": {"url": "https://hooks.example.com/a"}}
    first = alice.http.post("/v2/lbaas/webhooks", json=body, headers=headers)
    again = alice.http.post("/v2/lbaas/webhooks", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert count(session_factory, Webhook) == 1
