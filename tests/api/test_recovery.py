"""Operators' repairs and records without a data plane: the audit trail, dry runs,
export, force-recover's bookkeeping, retention, and who may call them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from openha import hosts
from openha.api.app import create_app
from openha.controller import retention
from openha.controller.operations import OperationContext, OperationRunner
from openha.controller.opkinds import KINDS
from openha.db import transaction
from openha.domain import constants as c
from openha.models import (
    AuditRecord,
    Event,
    Instance,
    Listener,
    LoadBalancer,
    Member,
    Operation,
    utcnow,
)
from openha.settings import Settings
from tests.api.factories import create_lb, create_listener
from tests.api.fakeagents import FakeAgent
from tests.conftest import PROJECT_A, PROJECT_B, Client, wait_for

FULL_TREE: dict[str, Any] = {
    "name": "shop",
    "description": "the shop",
    "tags": ["prod"],
    "listeners": [
        {
            "name": "web",
            "protocol": "HTTP",
            "protocol_port": 80,
            "connection_limit": 100,
            "insert_headers": {"X-Forwarded-For": "true"},
            "default_pool": {"name": "app"},
            "l7policies": [
                {
                    "name": "static",
                    "action": "REDIRECT_TO_POOL",
                    "position": 1,
                    "redirect_pool": {"name": "static"},
                    "rules": [{"type": "PATH", "compare_type": "STARTS_WITH", "value": "/static"}],
                },
                {
                    "action": "REJECT",
                    "position": 2,
                    "rules": [
                        {
                            "type": "HEADER",
                            "compare_type": "EQUAL_TO",
                            "key": "X-Bad",
                            "value": "1",
                            "invert": False,
                        }
                    ],
                },
            ],
        }
    ],
    "pools": [
        {
            "name": "app",
            "protocol": "HTTP",
            "lb_algorithm": "LEAST_CONNECTIONS",
            "session_persistence": {"type": "HTTP_COOKIE"},
            "members": [
                {"address": "198.51.100.30", "protocol_port": 8080, "weight": 3},
                {"address": "198.51.100.31", "protocol_port": 8080, "backup": True},
            ],
            "healthmonitor": {
                "type": "HTTP",
                "delay": 5,
                "timeout": 3,
                "max_retries": 2,
                "url_path": "/health",
                "expected_codes": "200-204",
            },
        },
        {"name": "static", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
    ],
}


def audit(admin: Client, **params: Any) -> list[dict[str, Any]]:
    resp = admin.get("/v2/manage/audit", params=params)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["audit_records"])


def test_the_audit_trail_records_tenant_and_admin_writes_and_refusals(
    alice: Client, admin: Client, bob: Client, subnet_id: str
) -> None:
    sent = json.dumps({"loadbalancer": {"vip_subnet_id": subnet_id, "name": "audited"}}).encode()
    headers = {**alice.headers, "Content-Type": "application/json"}
    created = alice.http.post("/v2/lbaas/loadbalancers", content=sent, headers=headers)
    assert created.status_code == 201
    lb_id = created.json()["loadbalancer"]["id"]
    refused = alice.post("/v2/lbaas/listeners", {"listener": {"loadbalancer_id": lb_id}})
    assert refused.status_code == 400
    other = bob.put(f"/v2/lbaas/loadbalancers/{lb_id}", {"loadbalancer": {"name": "mine"}})
    assert other.status_code == 403  # another project's object (Octavia's answer)
    quota = admin.put(f"/v2/lbaas/quotas/{PROJECT_A}", {"quota": {"load_balancer": 7}})
    assert quota.status_code == 202, quota.text

    records = audit(admin)
    assert [(r["method"], r["status_code"]) for r in records] == [
        ("POST", 201),
        ("POST", 400),
        ("PUT", 403),
        ("PUT", 202),
    ]
    create = records[0]
    assert create["project_id"] == PROJECT_A and create["roles"] == ["member"]
    assert create["user_id"] and create["path"] == "/v2/lbaas/loadbalancers"
    assert create["object_ids"] == [lb_id]
    # A digest of the body as sent, never the body.
    assert create["body_sha256"] == hashlib.sha256(sent).hexdigest()
    assert "audited" not in json.dumps(records)
    assert records[3]["roles"] == ["admin"] and records[3]["user_id"] != create["user_id"]

    # Filters: object, project, method, status (code or class), time; and paging.
    assert [r["status_code"] for r in audit(admin, object_id=lb_id)] == [201, 403]
    assert [r["status_code"] for r in audit(admin, status="4xx")] == [400, 403]
    assert [r["status_code"] for r in audit(admin, method="PUT", project_id=PROJECT_B)] == [403]
    assert audit(admin, since=(utcnow() + timedelta(minutes=1)).isoformat()) == []
    assert len(audit(admin, until=(utcnow() + timedelta(minutes=1)).isoformat() + "Z")) == 4
    page = admin.get("/v2/manage/audit", params={"limit": 2}).json()
    nxt = [link for link in page["audit_records_links"] if link["rel"] == "next"]
    assert len(page["audit_records"]) == 2 and nxt
    assert admin.get("/v2/manage/audit", params={"status": "abc"}).status_code == 400

    # Reads are not recorded, nor are agents' heartbeats; tenants cannot read the trail.
    assert alice.get("/v2/manage/audit").status_code == 403
    assert len(audit(admin)) == 4


def test_tenants_cannot_reach_the_operators_actions(
    alice: Client, admin: Client, subnet_id: str
) -> None:
    lb_id = create_lb(alice, subnet_id)["id"]
    base = f"/v2/manage/loadbalancers/{lb_id}"
    for method, path in (
        ("POST", f"{base}/sync"),
        ("POST", f"{base}/reload"),
        ("POST", f"{base}/force-recover"),
        ("GET", f"{base}/diff"),
        ("GET", f"{base}/export"),
        ("GET", "/v2/manage/audit"),
    ):
        assert alice.request(method, path).status_code == 403, path
    assert admin.post("/v2/manage/loadbalancers/nope/sync", {}).status_code == 404
    assert admin.get("/v2/manage/loadbalancers/nope/export").status_code == 404


def tree_counts(sessions: sessionmaker[Session]) -> tuple[int, ...]:
    with transaction(sessions) as s:
        counts = [
            int(s.scalar(select(func.count()).select_from(m)) or 0)
            for m in (LoadBalancer, Listener, Member)
        ]
        generations = int(s.scalar(select(func.sum(LoadBalancer.desired_generation))) or 0)
        return (*counts, generations)


def test_a_dry_run_answers_as_the_write_would_and_stores_nothing(
    alice: Client, admin: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    lb_id = create_lb(alice, subnet_id)["id"]
    before = tree_counts(session_factory)
    body = {"listener": {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": 80}}
    resp = alice.post("/v2/lbaas/listeners?dry_run=true", body)
    assert resp.status_code == 201, resp.text
    answer = resp.json()
    assert answer["listener"]["protocol_port"] == 80
    assert answer["dry_run"]["load_balancer_ids"] == [lb_id]
    assert answer["dry_run"]["diff"] == ""  # the noop provider renders nothing
    whole = {"loadbalancer": {"vip_subnet_id": subnet_id, **FULL_TREE}}
    resp = alice.post("/v2/lbaas/loadbalancers?dry_run=true", whole)
    assert resp.status_code == 201, resp.text
    assert len(resp.json()["loadbalancer"]["listeners"]) == 1
    gone = alice.delete(f"/v2/lbaas/loadbalancers/{lb_id}?cascade=true&dry_run=true")
    assert gone.status_code == 200 and "dry_run" in gone.json()
    # Bad input is refused as without a dry run.
    bad = alice.post("/v2/lbaas/listeners?dry_run=true", {"listener": {"loadbalancer_id": lb_id}})
    assert bad.status_code == 400 and "dry_run" not in bad.json()
    assert tree_counts(session_factory) == before
    assert (
        alice.get(f"/v2/lbaas/loadbalancers/{lb_id}").json()["loadbalancer"]["provisioning_status"]
        == c.PENDING_CREATE
    )
    # Recorded in the audit trail, with the dry run in the path.
    paths = [r["path"] for r in audit(admin, method="POST")]
    assert "/v2/lbaas/listeners?dry_run=true" in paths


@pytest.fixture
def on_haproxy(
    settings: Settings, session_factory: sessionmaker[Session], tokens: dict[str, str]
) -> Iterator[tuple[Client, Client, FakeAgent]]:
    """An API on the haproxy provider with one host (a fake agent) and no controller."""
    app = create_app(settings.model_copy(update={"default_provider": "haproxy"}), session_factory)
    agent = FakeAgent()
    with TestClient(app) as http:
        with transaction(session_factory) as s:
            secret = hosts.enroll(s, "dry-host")
        reg = http.post(
            "/v2/agent/register",
            headers={"Authorization": f"Bearer {secret}"},
            json={
                "name": "dry-host",
                "management_url": agent.url,
                "agent_secret": "s",
                "agent_dir": "/tmp/oha-dry",
            },
        )
        assert reg.status_code == 200, reg.text
        yield Client(http, tokens["a"]), Client(http, tokens["admin"]), agent
    agent.close()


def test_a_dry_run_shows_the_haproxy_config_diff(
    on_haproxy: tuple[Client, Client, FakeAgent],
    subnet_id: str,
    session_factory: sessionmaker[Session],
) -> None:
    alice, _admin, agent = on_haproxy
    lb_id = create_lb(alice, subnet_id)["id"]
    listener = create_listener(alice, lb_id, protocol_port=8080)
    before = tree_counts(session_factory)
    body = {
        "pool": {"listener_id": listener["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    }
    resp = alice.post("/v2/lbaas/pools?dry_run=true", body)
    assert resp.status_code == 201, resp.text
    diff = resp.json()["dry_run"]["diff"]
    assert "haproxy.cfg" in diff
    assert any(line.startswith("+backend") for line in diff.splitlines()), diff
    assert tree_counts(session_factory) == before
    assert agent.applied == []  # nothing pushed
    with transaction(session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 0  # nothing placed


def test_export_gives_the_create_body_that_rebuilds_the_tree(
    alice: Client, admin: Client, subnet_id: str, controller: Any
) -> None:
    body = {"loadbalancer": {"vip_subnet_id": subnet_id, **FULL_TREE}}
    created = alice.post("/v2/lbaas/loadbalancers", body)
    assert created.status_code == 201, created.text
    lb_id = created.json()["loadbalancer"]["id"]
    exported = admin.get(f"/v2/manage/loadbalancers/{lb_id}/export").json()
    tree = exported["loadbalancer"]
    assert "id" not in tree and tree["project_id"] == PROJECT_A
    assert tree["vip_subnet_id"] == subnet_id
    assert {p["name"] for p in tree["pools"]} == {"app", "static"}
    assert tree["listeners"][0]["default_pool"] == {"name": "app"}
    assert tree["listeners"][0]["l7policies"][0]["redirect_pool"] == {"name": "static"}
    assert "id" not in json.dumps(tree["listeners"][0]["l7policies"][0]["rules"][0])

    # It is a valid create body: deleted, and made again from it, the tree is the same.
    assert alice.delete(f"/v2/lbaas/loadbalancers/{lb_id}?cascade=true").status_code == 204
    wait_for(lambda: alice.get(f"/v2/lbaas/loadbalancers/{lb_id}").status_code == 404)
    again = alice.post("/v2/lbaas/loadbalancers", exported)
    assert again.status_code == 201, again.text
    new_id = again.json()["loadbalancer"]["id"]
    assert admin.get(f"/v2/manage/loadbalancers/{new_id}/export").json() == exported


def test_force_recover_clears_an_error_and_the_controller_settles_the_lb(
    alice: Client,
    admin: Client,
    subnet_id: str,
    session_factory: sessionmaker[Session],
    controller: Any,
) -> None:
    lb_id = create_lb(alice, subnet_id)["id"]

    def status() -> str:
        return str(
            alice.get(f"/v2/lbaas/loadbalancers/{lb_id}").json()["loadbalancer"][
                "provisioning_status"
            ]
        )

    wait_for(lambda: status() == c.ACTIVE)
    with transaction(session_factory) as s:
        lb = s.get(LoadBalancer, lb_id)
        assert lb is not None
        lb.provisioning_status, lb.last_error = c.ERROR, "it broke"
        lb.next_attempt_at = utcnow() + timedelta(hours=1)  # a long backoff
    resp = admin.post(f"/v2/manage/loadbalancers/{lb_id}/force-recover", {})
    assert resp.status_code == 202, resp.text
    location = resp.headers["Location"]
    assert resp.json()["operation"]["kind"] == "force-recover"
    assert location == f"/v2/manage/operations/{resp.json()['operation']['id']}"
    op = finished(admin, location)
    assert op["state"] == "SUCCEEDED", op
    done = [s for s in op["steps"] if "ok" in s]
    assert done[0]["step"] == "clear_error" and done[0]["ok"], done
    assert "it broke" in done[0]["detail"]
    assert [s["step"] for s in op["steps"]][-1] == "done"
    wait_for(lambda: status() == c.ACTIVE)
    with transaction(session_factory) as s:
        kinds = list(s.scalars(select(Event.kind).where(Event.load_balancer_id == lb_id)))
    assert "loadbalancer.force_recovered" in kinds
    synced = admin.post(f"/v2/manage/loadbalancers/{lb_id}/sync", {})
    assert synced.status_code == 202, synced.text
    assert finished(admin, synced.headers["Location"])["state"] == "SUCCEEDED"
    listed = admin.get("/v2/manage/operations", params={"target_id": lb_id}).json()["operations"]
    assert {o["kind"] for o in listed} == {"force-recover", "sync"}
    # Each request is in the audit trail with the LB and the operation it started.
    with transaction(session_factory) as s:
        records = list(s.scalars(select(AuditRecord).where(AuditRecord.path.contains("/sync"))))
    assert [r.object_ids for r in records] == [[lb_id, synced.json()["operation"]["id"]]]
    assert admin.get(f"/v2/manage/loadbalancers/{lb_id}/diff").json()["in_sync"] is True


def test_a_repair_is_an_operation_that_outlives_its_controller(
    alice: Client, admin: Client, subnet_id: str, app: Any, settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:  # fmt: skip
    """No controller runs: the request is a PENDING operation, a repeat joins it, a
    deleted LB is refused; a controller that dies holding it leaves it to the next."""
    lb_id = create_lb(alice, subnet_id)["id"]
    first = admin.post(f"/v2/manage/loadbalancers/{lb_id}/sync", {})
    assert first.status_code == 202, first.text
    op = first.json()["operation"]
    assert (op["kind"], op["state"], op["target_id"]) == ("sync", "PENDING", lb_id)
    again = admin.post(f"/v2/manage/loadbalancers/{lb_id}/sync", {})
    assert again.status_code == 202 and again.json()["operation"]["id"] == op["id"]
    other = admin.post(f"/v2/manage/loadbalancers/{lb_id}/reload", {}).json()["operation"]
    assert other["id"] != op["id"] and other["kind"] == "reload"

    # A controller claimed the sync and died before writing anything down.
    with transaction(session_factory) as s:
        row = s.get(Operation, op["id"])
        assert row is not None
        row.lease_owner, row.lease_until = "dead-controller", utcnow() - timedelta(seconds=1)
    runner = OperationRunner(
        OperationContext(settings, session_factory, app.state.providers), KINDS, "next"
    )
    assert runner.advance_due() == 2
    for started in (op, other):
        shown = admin.get(f"/v2/manage/operations/{started['id']}").json()["operation"]
        assert shown["state"] == "SUCCEEDED", shown
        assert [s["step"] for s in shown["steps"]][-1] == "done"
        assert any(s.get("ok") for s in shown["steps"]), shown["steps"]

    with transaction(session_factory) as s:
        lb = s.get(LoadBalancer, lb_id)
        assert lb is not None
        lb.provisioning_status = c.PENDING_DELETE
    refused = admin.post(f"/v2/manage/loadbalancers/{lb_id}/force-recover", {})
    assert refused.status_code == 409, refused.text


def finished(admin: Client, location: str) -> dict[str, Any]:
    def over() -> dict[str, Any] | None:
        op = admin.get(location).json()["operation"]
        return dict(op) if op["state"] in ("SUCCEEDED", "FAILED") else None

    return dict(wait_for(over))


def test_old_audit_records_and_events_are_purged_in_batches(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    old = utcnow() - timedelta(days=100)
    with transaction(session_factory) as s:
        for n in range(7):
            s.add(AuditRecord(method="PUT", path="/x", status_code=200, created_at=old))
            s.add(Event(kind="k", created_at=old if n < 5 else utcnow()))
        s.add(AuditRecord(method="PUT", path="/new", status_code=200))
    tight = settings.model_copy(update={"retention_batch": 2, "event_retention_days": 10})
    assert retention.purge_expired(tight, session_factory) == {
        "audit_records": 7,
        "events": 5,
    }
    with transaction(session_factory) as s:
        assert list(s.scalars(select(AuditRecord.path))) == ["/new"]
        assert s.scalar(select(func.count()).select_from(Event)) == 2
    keep = settings.model_copy(update={"audit_retention_days": 0, "event_retention_days": 0})
    assert retention.purge_expired(keep, session_factory) == {}
