"""A list costs the same number of queries whatever the number of rows it returns
(issue 8 item 6): every collection, a pool's members, a listener's pools and an LB's
status tree, counted at two sizes."""

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


def add_tree(admin: Client, subnet_id: str, lb: str | None = None, port: int = 80) -> str:
    """An LB (or a listener on `lb`) with a pool, a member, a monitor, an L7 policy
    redirecting to the pool and its rule; the pool's id."""
    lb = lb or create_lb(admin, subnet_id)["id"]
    listener = create_listener(admin, lb, protocol_port=port)["id"]
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
    return pool


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
    # One LB grows too: its status tree, its first pool's members, its first listener.
    big = create_lb(admin, subnet_id)["id"]
    first_pool = add_tree(admin, subnet_id, big, port=1000)
    listener = admin.get(f"/v2/lbaas/pools/{first_pool}").json()["pool"]["listeners"][0]["id"]
    paths = [
        *LISTS,
        f"/v2/lbaas/pools/{first_pool}/members",
        f"/v2/lbaas/pools?listener_id={listener}",
        f"/v2/lbaas/loadbalancers/{big}/status",
        f"/v2/lbaas/loadbalancers/{big}/statuses",
    ]

    ports = iter(range(1001, 2000))

    def grow(count: int) -> None:
        for _ in range(count):
            add_tree(admin, subnet_id)
            port = next(ports)
            add_tree(admin, subnet_id, big, port=port)
            create_member(admin, first_pool, protocol_port=2000 + port)

    def cost() -> dict[str, int]:
        out = {}
        for path in paths:
            queries[0] = 0
            assert admin.get(path).status_code == 200
            out[path] = queries[0]
        return out

    grow(1)
    small = cost()
    grow(4)
    assert cost() == small
    members = admin.get(f"/v2/lbaas/pools/{first_pool}/members").json()["members"]
    assert len(members) == 6
