"""Writes racing on one load balancer's tree, on PostgreSQL.

Every write locks the load balancer row first and only then reads the objects it
changes, so a request queued behind another sees what that one committed: an update
of an object deleted meanwhile is refused (409), a create under a parent deleted
meanwhile too, and an object the controller removed meanwhile is a 404.

The interleaving is forced, not hoped for: the test holds the LB row lock in a
transaction of its own, starts the requests one after the other and waits until
PostgreSQL shows each one queued behind that lock, then lets them go. Row lock
waiters are served in queue order, so the first request always commits before the
second one proceeds. (SQLite needs no such test: BEGIN IMMEDIATE serializes whole
requests.)
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, select, text, update

from openha.api.app import create_app
from openha.credentials import create_token
from openha.db import make_engine, make_session_factory, transaction
from openha.domain import constants as c
from openha.models import (
    TREE_MODELS,
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    LoadBalancer,
    Member,
    Pool,
)
from openha.settings import Settings
from tests.api.factories import create_hm, create_lb, create_listener, create_member, create_pool
from tests.conftest import Client, add_shared_subnet, wait_for


@dataclass
class Stack:
    api: Client
    engine: Engine
    subnet_id: str


@pytest.fixture
def stack(postgres_url: str, tmp_path: Path) -> Iterator[Stack]:
    settings = Settings(state_dir=tmp_path, database_url=postgres_url, default_provider="noop")
    engine = make_engine(postgres_url)
    sessions = make_session_factory(engine)
    with transaction(sessions) as s:
        token = create_token(s, f"race-{uuid.uuid4().hex[:8]}", ["member"])
    subnet_id = add_shared_subnet(sessions)
    try:
        with TestClient(create_app(settings, sessions)) as http:
            yield Stack(Client(http, token), engine, subnet_id)
    finally:
        engine.dispose()


@dataclass
class Tree:
    lb: str
    listener: str
    pool: str
    member: str
    healthmonitor: str
    l7policy: str
    l7rule: str
    bare_pool: str  # a second pool, without a health monitor


def build_tree(stack: Stack) -> Tree:
    """A whole tree, then ACTIVE everywhere as if the controller had applied it."""
    api = stack.api
    lb = create_lb(api, stack.subnet_id)["id"]
    listener = create_listener(api, lb)["id"]
    pool = create_pool(api, listener_id=listener)["id"]
    member = create_member(api, pool)["id"]
    hm = create_hm(api, pool)["id"]
    bare_pool = create_pool(api, lb_id=lb)["id"]
    policy = api.post(
        "/v2/lbaas/l7policies", {"l7policy": {"listener_id": listener, "action": "REJECT"}}
    )
    assert policy.status_code == 201, policy.text
    policy_id = policy.json()["l7policy"]["id"]
    rule = api.post(
        f"/v2/lbaas/l7policies/{policy_id}/rules",
        {"rule": {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"}},
    )
    assert rule.status_code == 201, rule.text
    with stack.engine.begin() as conn:
        conn.execute(
            update(LoadBalancer)
            .where(LoadBalancer.id == lb)
            .values(
                provisioning_status=c.ACTIVE,
                applied_generation=LoadBalancer.desired_generation,
            )
        )
        for model in TREE_MODELS:
            conn.execute(
                update(model)
                .where(model.load_balancer_id == lb)
                .values(provisioning_status=c.ACTIVE)
            )
    return Tree(lb, listener, pool, member, hm, policy_id, rule.json()["rule"]["id"], bare_pool)


def status_of(stack: Stack, model: Any, ident: str) -> str | None:
    with stack.engine.connect() as conn:
        return conn.scalar(select(model.provisioning_status).where(model.id == ident))


def wait_queued(engine: Engine, count: int) -> None:
    """Wait until `count` backends wait for a lock (pg_locks is read live, not from a snapshot)."""

    def enough() -> bool:
        with engine.connect() as conn:
            waiting = conn.scalar(
                text("SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted")
            )
        return int(waiting or 0) >= count

    wait_for(enough, timeout=20, interval=0.02)


@contextmanager
def lb_locked(engine: Engine, lb_id: str) -> Iterator[Any]:
    """Hold the LB row lock, as a concurrent writer (or the controller) would."""
    with engine.begin() as conn:
        conn.execute(select(LoadBalancer.id).where(LoadBalancer.id == lb_id).with_for_update())
        yield conn


def in_order(stack: Stack, lb_id: str, *requests: Callable[[], Any]) -> list[Any]:
    """Run the requests so that each one reaches the LB lock after the previous one."""
    answers: list[Any] = [None] * len(requests)

    def run(i: int) -> None:
        answers[i] = requests[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    with lb_locked(stack.engine, lb_id):
        for i, thread in enumerate(threads):
            thread.start()
            wait_queued(stack.engine, i + 1)
    for thread in threads:
        thread.join(30)
    return answers


# What an update of each kind of object looks like, and where it lives.
UPDATES: dict[str, tuple[Callable[[Tree], str], str, dict[str, Any]]] = {
    "listener": (lambda t: f"/v2/lbaas/listeners/{t.listener}", "listener", {"name": "x"}),
    "pool": (lambda t: f"/v2/lbaas/pools/{t.pool}", "pool", {"name": "x"}),
    "member": (lambda t: f"/v2/lbaas/pools/{t.pool}/members/{t.member}", "member", {"weight": 5}),
    "healthmonitor": (
        lambda t: f"/v2/lbaas/healthmonitors/{t.healthmonitor}",
        "healthmonitor",
        {"delay": 7},
    ),
    "l7policy": (lambda t: f"/v2/lbaas/l7policies/{t.l7policy}", "l7policy", {"name": "x"}),
    "l7rule": (
        lambda t: f"/v2/lbaas/l7policies/{t.l7policy}/rules/{t.l7rule}",
        "rule",
        {"value": "/x"},
    ),
}
MODELS: dict[str, Any] = {
    "listener": Listener,
    "pool": Pool,
    "member": Member,
    "healthmonitor": HealthMonitor,
    "l7policy": L7Policy,
    "l7rule": L7Rule,
}


@pytest.mark.parametrize("kind", list(UPDATES))
def test_an_update_queued_behind_a_delete_is_refused(stack: Stack, kind: str) -> None:
    """The DELETE answered 204: the PUT queued behind it must not bring the object back."""
    tree = build_tree(stack)
    path_of, envelope, body = UPDATES[kind]
    path = path_of(tree)
    deleted, updated = in_order(
        stack,
        tree.lb,
        lambda: stack.api.delete(path),
        lambda: stack.api.put(path, {envelope: body}),
    )
    assert deleted.status_code == 204, deleted.text
    assert updated.status_code == 409, updated.text
    assert status_of(stack, MODELS[kind], getattr(tree, kind)) == c.PENDING_DELETE


def test_a_member_created_behind_its_pool_delete_is_refused(stack: Stack) -> None:
    tree = build_tree(stack)
    deleted, created = in_order(
        stack,
        tree.lb,
        lambda: stack.api.delete(f"/v2/lbaas/pools/{tree.pool}"),
        lambda: stack.api.post(
            f"/v2/lbaas/pools/{tree.pool}/members",
            {"member": {"address": "192.0.2.77", "protocol_port": 80}},
        ),
    )
    assert deleted.status_code == 204, deleted.text
    assert created.status_code == 409, created.text
    assert status_of(stack, Pool, tree.pool) == c.PENDING_DELETE
    with stack.engine.connect() as conn:
        assert conn.scalar(select(Member.id).where(Member.address == "192.0.2.77")) is None


def test_a_health_monitor_created_behind_its_pool_delete_is_refused(stack: Stack) -> None:
    tree = build_tree(stack)
    deleted, created = in_order(
        stack,
        tree.lb,
        lambda: stack.api.delete(f"/v2/lbaas/pools/{tree.bare_pool}"),
        lambda: stack.api.post(
            "/v2/lbaas/healthmonitors",
            {
                "healthmonitor": {
                    "pool_id": tree.bare_pool,
                    "type": "TCP",
                    "delay": 5,
                    "timeout": 3,
                    "max_retries": 3,
                }
            },
        ),
    )
    assert deleted.status_code == 204, deleted.text
    assert created.status_code == 409, created.text
    assert status_of(stack, Pool, tree.bare_pool) == c.PENDING_DELETE


def test_a_default_pool_created_behind_its_listener_delete_is_refused(stack: Stack) -> None:
    tree = build_tree(stack)
    other = create_listener(stack.api, tree.lb, protocol_port=8080)["id"]
    with stack.engine.begin() as conn:
        conn.execute(
            update(Listener).where(Listener.id == other).values(provisioning_status=c.ACTIVE)
        )
    deleted, created = in_order(
        stack,
        tree.lb,
        lambda: stack.api.delete(f"/v2/lbaas/listeners/{other}"),
        lambda: stack.api.post(
            "/v2/lbaas/pools",
            {"pool": {"listener_id": other, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}},
        ),
    )
    assert deleted.status_code == 204, deleted.text
    assert created.status_code == 409, created.text
    assert status_of(stack, Listener, other) == c.PENDING_DELETE


def test_an_update_of_an_object_removed_meanwhile_is_a_404(stack: Stack) -> None:
    """The controller removed the member (its delete was applied) while the PUT waited."""
    tree = build_tree(stack)
    answers: list[Any] = []
    path = f"/v2/lbaas/pools/{tree.pool}/members/{tree.member}"

    def put() -> None:
        try:
            answers.append(stack.api.put(path, {"member": {"weight": 9}}))
        except Exception as exc:  # the old code path died with StaleDataError here
            answers.append(exc)

    waiter = threading.Thread(target=put)
    with lb_locked(stack.engine, tree.lb) as conn:
        waiter.start()
        wait_queued(stack.engine, 1)
        conn.execute(delete(Member).where(Member.id == tree.member))
    waiter.join(30)
    assert getattr(answers[0], "status_code", answers[0]) == 404, answers[0]
