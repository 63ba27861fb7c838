"""A list costs the same number of queries whatever the number of rows it returns."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from tests.api.factories import create_hm, create_lb, create_listener, create_member, create_pool
from tests.conftest import Client

LISTS = [
    "/v2/lbaas/loadbalancers",
    "/v2/lbaas/listeners",
    "/v2/lbaas/pools",
    "/v2/lbaas/healthmonitors",
    "/v2/lbaas/l7policies",
    "/v2/networks",
    "/v2/subnets",
    "/v2/ports",
    "/v2/manage/hosts",
    "/v2/manage/instances",
    "/v2/octavia/amphorae",
]


def add_tree(admin: Client, subnet_id: str) -> None:
    lb = create_lb(admin, subnet_id)["id"]
    listener = create_listener(admin, lb)["id"]
    pool = create_pool(admin, listener_id=listener)["id"]
    create_member(admin, pool)
    create_hm(admin, pool)
    policy = admin.post(
        "/v2/lbaas/l7policies",
        {
            "l7policy": {
                "listener_id": listener,
                "action": "REDIRECT_TO_POOL",
                "redirect_pool_id": pool,
            }
        },
    )
    assert policy.status_code == 201, policy.text
    rule = admin.post(
        f"/v2/lbaas/l7policies/{policy.json()['l7policy']['id']}/rules",
        {"rule": {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"}},
    )
    assert rule.status_code == 201, rule.text


@pytest.fixture
def queries(session_factory: sessionmaker[Session]) -> Any:
    """A counter of the statements the API sends to the database."""
    engine = session_factory.kw["bind"]
    count = [0]

    def counted(*_: Any) -> None:
        count[0] += 1

    event.listen(engine, "before_cursor_execute", counted)
    yield count
    event.remove(engine, "before_cursor_execute", counted)


def test_lists_cost_a_constant_number_of_queries(
    admin: Client, subnet_id: str, queries: list[int]
) -> None:
    def cost() -> dict[str, int]:
        out = {}
        for path in LISTS:
            queries[0] = 0
            assert admin.get(path).status_code == 200
            out[path] = queries[0]
        return out

    add_tree(admin, subnet_id)
    one = cost()
    for _ in range(3):
        add_tree(admin, subnet_id)
    assert cost() == one
