"""`Idempotency-Key` on every create (issue 13 item 7): a retry replays the first answer
and creates nothing more; another body with the key is a 422; keys are per project and
per route, and kept for a day. The PostgreSQL race (a retry while the first request is
still running is a 409) is in test_change_races.py's style, at the end."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from openha.models import IdempotencyKey, LoadBalancer, Member, utcnow
from tests.api.factories import create_lb, create_listener, create_member, create_pool
from tests.api.test_change_races import Stack, lb_locked, stack, wait_queued  # noqa: F401
from tests.conftest import Client


def post(client: Client, path: str, body: dict[str, Any], key: str) -> Any:
    headers = {**client.headers, "Idempotency-Key": key}
    return client.http.request("POST", path, json=body, headers=headers)


def count(session_factory: sessionmaker[Session], model: Any) -> int:
    with session_factory() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_retry_replays_the_first_answer(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    body = {"loadbalancer": {"vip_subnet_id": subnet_id, "name": "web"}}
    first = post(alice, "/v2/lbaas/loadbalancers", body, "k-1")
    assert first.status_code == 201, first.text
    # The retry reaches another prefix and spells the same JSON differently.
    retry = alice.http.request(
        "POST",
        "/v2.0/lbaas/loadbalancers",
        content=f'{{ "loadbalancer" : {{"name": "web", "vip_subnet_id": "{subnet_id}"}} }}',
        headers={**alice.headers, "Idempotency-Key": "k-1", "Content-Type": "application/json"},
    )
    assert (retry.status_code, retry.content) == (201, first.content)
    assert retry.headers["content-type"] == "application/json"
    assert count(session_factory, LoadBalancer) == 1

    other = post(
        alice, "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id}}, "k-1"
    )
    assert other.status_code == 422, other.text
    assert "Idempotency-Key" in other.json()["faultstring"]
    assert count(session_factory, LoadBalancer) == 1

    fresh = post(alice, "/v2/lbaas/loadbalancers", body, "k-2")
    assert fresh.status_code == 201 and fresh.json() != first.json()
    plain = alice.post("/v2/lbaas/loadbalancers", body)
    assert plain.status_code == 201
    assert count(session_factory, LoadBalancer) == 3


def test_keys_are_per_project(
    alice: Client, bob: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    body = {"loadbalancer": {"vip_subnet_id": subnet_id}}
    mine = post(alice, "/v2/lbaas/loadbalancers", body, "shared-key")
    theirs = post(bob, "/v2/lbaas/loadbalancers", body, "shared-key")
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["loadbalancer"]["id"] != theirs.json()["loadbalancer"]["id"]
    assert theirs.json()["loadbalancer"]["project_id"] != mine.json()["loadbalancer"]["project_id"]


def test_refused_creates_are_not_recorded(alice: Client, subnet_id: str) -> None:
    bad = post(alice, "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": "nope"}}, "k")
    assert bad.status_code == 400
    good = post(
        alice, "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id}}, "k"
    )
    assert good.status_code == 201, good.text


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
def test_malformed_keys(alice: Client, subnet_id: str, key: str) -> None:
    resp = post(
        alice, "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id}}, key
    )
    assert resp.status_code == 400, resp.text


def test_keys_expire_after_a_day(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    body = {"loadbalancer": {"vip_subnet_id": subnet_id}}
    first = post(alice, "/v2/lbaas/loadbalancers", body, "old")
    with session_factory() as s:
        s.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(days=1, seconds=5)))
        s.commit()
    again = post(alice, "/v2/lbaas/loadbalancers", body, "old")
    assert again.status_code == 201
    assert again.json()["loadbalancer"]["id"] != first.json()["loadbalancer"]["id"]
    with session_factory() as s:
        # The expired key went; the new one is recorded in its place.
        assert s.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


def _tree(alice: Client, subnet_id: str) -> dict[str, str]:
    lb = create_lb(alice, subnet_id)["id"]
    listener = create_listener(alice, lb)["id"]
    pool = create_pool(alice, listener_id=listener)["id"]
    policy = alice.post(
        "/v2/lbaas/l7policies", {"l7policy": {"listener_id": listener, "action": "REJECT"}}
    ).json()["l7policy"]["id"]
    return {"lb": lb, "listener": listener, "pool": pool, "policy": policy}


# Each create route: its path, its body, and how to count what it made.
CREATES: dict[str, Callable[[dict[str, str], str], tuple[str, dict[str, Any]]]] = {
    "loadbalancer (full graph)": lambda t, subnet: (
        "/v2/lbaas/loadbalancers",
        {
            "loadbalancer": {
                "vip_subnet_id": subnet,
                "listeners": [
                    {
                        "protocol": "HTTP",
                        "protocol_port": 80,
                        "default_pool": {
                            "name": "p",
                            "protocol": "HTTP",
                            "lb_algorithm": "ROUND_ROBIN",
                        },
                    }
                ],
            }
        },
    ),
    "listener": lambda t, _: (
        "/v2/lbaas/listeners",
        {"listener": {"loadbalancer_id": t["lb"], "protocol": "TCP", "protocol_port": 81}},
    ),
    "pool": lambda t, _: (
        "/v2/lbaas/pools",
        {"pool": {"loadbalancer_id": t["lb"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}},
    ),
    "member": lambda t, _: (
        f"/v2/lbaas/pools/{t['pool']}/members",
        {"member": {"address": "192.0.2.20", "protocol_port": 80}},
    ),
    "healthmonitor": lambda t, _: (
        "/v2/lbaas/healthmonitors",
        {
            "healthmonitor": {
                "pool_id": t["pool"],
                "type": "TCP",
                "delay": 5,
                "timeout": 3,
                "max_retries": 3,
            }
        },
    ),
    "l7policy": lambda t, _: (
        "/v2/lbaas/l7policies",
        {"l7policy": {"listener_id": t["listener"], "action": "REJECT"}},
    ),
    "l7rule": lambda t, _: (
        f"/v2/lbaas/l7policies/{t['policy']}/rules",
        {"rule": {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/x"}},
    ),
}


def _everything(admin: Client) -> int:
    paths = ["loadbalancers", "listeners", "pools", "healthmonitors", "l7policies"]
    total = sum(len(admin.get(f"/v2/lbaas/{p}").json()[p]) for p in paths)
    for policy in admin.get("/v2/lbaas/l7policies").json()["l7policies"]:
        total += len(policy["rules"])
    for pool in admin.get("/v2/lbaas/pools").json()["pools"]:
        total += len(pool["members"])
    return total


@pytest.mark.parametrize("route", list(CREATES))
def test_every_create_route(alice: Client, admin: Client, subnet_id: str, route: str) -> None:
    tree = _tree(alice, subnet_id)
    path, body = CREATES[route](tree, subnet_id)
    first = post(alice, path, body, f"key-{route}")
    assert first.status_code == 201, first.text
    made = _everything(admin)
    retry = post(alice, path, body, f"key-{route}")
    assert (retry.status_code, retry.json()) == (201, first.json())
    assert _everything(admin) == made
    # The same key on another route is another key.
    other_path, other_body = CREATES["listener" if route != "listener" else "pool"](tree, subnet_id)
    assert post(alice, other_path, other_body, f"key-{route}").status_code == 201


NETWORK = {"name": "n", "provider:network_type": "flat", "provider:physical_network": "br-ext"}
# The operator's creates: (path, body, list path and key) after the parents exist.
OPERATOR_CREATES: dict[str, Callable[[dict[str, str]], tuple[str, dict[str, Any], str]]] = {
    "flavorprofile": lambda t: (
        "/v2/lbaas/flavorprofiles",
        {"flavorprofile": {"name": "p", "provider_name": "noop", "flavor_data": "{}"}},
        "flavorprofiles",
    ),
    "flavor": lambda t: (
        "/v2/lbaas/flavors",
        {"flavor": {"name": "f", "flavor_profile_id": t["flavorprofile"]}},
        "flavors",
    ),
    "availabilityzoneprofile": lambda t: (
        "/v2/lbaas/availabilityzoneprofiles",
        {
            "availability_zone_profile": {
                "name": "p",
                "provider_name": "noop",
                "availability_zone_data": "{}",
            }
        },
        "availability_zone_profiles",
    ),
    "availabilityzone": lambda t: (
        "/v2/lbaas/availabilityzones",
        {"availability_zone": {"name": "az", "availability_zone_profile_id": t["azprofile"]}},
        "availability_zones",
    ),
    "network": lambda t: ("/v2.0/networks", {"network": NETWORK}, "networks"),
    "subnet": lambda t: (
        "/v2.0/subnets",
        {"subnet": {"network_id": t["network"], "cidr": "10.77.0.0/24", "ip_version": 4}},
        "subnets",
    ),
}


def _operator_parents(admin: Client) -> dict[str, str]:
    flavor_profile = admin.post(
        "/v2/lbaas/flavorprofiles",
        {"flavorprofile": {"name": "parent", "provider_name": "noop", "flavor_data": "{}"}},
    ).json()["flavorprofile"]["id"]
    zone_profile = admin.post(
        "/v2/lbaas/availabilityzoneprofiles",
        {
            "availability_zone_profile": {
                "name": "parent",
                "provider_name": "noop",
                "availability_zone_data": "{}",
            }
        },
    ).json()["availability_zone_profile"]["id"]
    network = admin.post("/v2.0/networks", {"network": NETWORK}).json()["network"]["id"]
    return {"flavorprofile": flavor_profile, "azprofile": zone_profile, "network": network}


@pytest.mark.parametrize("route", list(OPERATOR_CREATES))
def test_every_operator_create_route(admin: Client, route: str) -> None:
    """The catalogue and network creates are creates too (issue 13: every write API)."""
    path, body, plural = OPERATOR_CREATES[route](_operator_parents(admin))
    listing = path.replace("/v2.0/", "/v2/").split("?")[0]
    first = post(admin, path, body, f"op-{route}")
    assert first.status_code == 201, first.text
    made = len(admin.get(listing).json()[plural])
    retry = post(admin, path, body, f"op-{route}")
    assert (retry.status_code, retry.content) == (201, first.content)
    assert len(admin.get(listing).json()[plural]) == made
    other = post(admin, path, {"x": 1}, f"op-{route}")
    assert other.status_code == 422, other.text


def test_the_two_catalogues_keep_their_keys_apart(admin: Client) -> None:
    """Flavors and availability zones are served by one piece of code: one key used on
    both is still two keys (a flavor's answer is never replayed for a zone)."""
    parents = _operator_parents(admin)
    for route in ("flavorprofile", "availabilityzoneprofile", "flavor", "availabilityzone"):
        path, body, _ = OPERATOR_CREATES[route](parents)
        answer = post(admin, path, body, "shared")
        assert answer.status_code == 201, (route, answer.text)
        assert answer.json().keys() == body.keys()  # its own answer, not the other's


def test_every_create_in_the_document_takes_the_header(app: Any) -> None:
    """Each POST the API describes (but the agents' own calls, idempotent by nature)
    declares Idempotency-Key: a new create route without it fails here."""
    missing = [
        path
        for path, operations in app.openapi()["paths"].items()
        if "post" in operations
        and not path.startswith("/v2/agent/")
        and "Idempotency-Key"
        not in {p["name"] for p in operations["post"].get("parameters", []) if p["in"] == "header"}
    ]
    assert missing == []


def test_batch_member_update(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    pool = create_pool(alice, create_lb(alice, subnet_id)["id"])["id"]
    create_member(alice, pool, address="192.0.2.5", protocol_port=80)
    url = f"/v2/lbaas/pools/{pool}/members"
    body = {"members": [{"address": "192.0.2.6", "protocol_port": 80}]}
    headers = {**alice.headers, "Idempotency-Key": "batch"}
    first = alice.http.request("PUT", url, json=body, headers=headers)
    assert first.status_code == 202, first.text
    members = count(session_factory, Member)
    retry = alice.http.request("PUT", url, json=body, headers=headers)
    assert (retry.status_code, retry.content) == (202, b"")
    assert count(session_factory, Member) == members
    other = alice.http.request("PUT", url, json={"members": []}, headers=headers)
    assert other.status_code == 422


def test_replay_is_the_recorded_answer(alice: Client, subnet_id: str) -> None:
    """The retry gets what the first request answered, though the object moved on."""
    lb = create_lb(alice, subnet_id)["id"]
    body = {"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80}}
    first = post(alice, "/v2/lbaas/listeners", body, "L")
    listener = first.json()["listener"]["id"]
    assert (
        alice.put(f"/v2/lbaas/listeners/{listener}", {"listener": {"name": "renamed"}}).status_code
        == 200
    )
    retry = post(alice, "/v2/lbaas/listeners", body, "L")
    assert retry.json() == first.json()


def test_concurrent_retries_on_sqlite_make_one(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    """SQLite queues writers: the second request waits and replays the first's answer."""
    body = {"loadbalancer": {"vip_subnet_id": subnet_id}}
    answers: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(post(alice, "/v2/lbaas/loadbalancers", body, "same"))
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [a.status_code for a in answers] == [201] * 4
    assert len({a.content for a in answers}) == 1
    assert count(session_factory, LoadBalancer) == 1


def test_retry_while_first_runs_is_409_on_postgresql(stack: Stack) -> None:  # noqa: F811
    """The first request holds its key while it waits for the LB lock; a retry meanwhile
    is told so (409) instead of making a second member; once the first answered, the
    retry gets that answer."""
    api = stack.api
    lb = create_lb(api, stack.subnet_id)["id"]
    pool = create_pool(api, lb)["id"]
    url = f"/v2/lbaas/pools/{pool}/members"
    body = {"member": {"address": "192.0.2.30", "protocol_port": 80}}
    answers: list[Any] = []
    first = threading.Thread(target=lambda: answers.append(post(api, url, body, "race")))
    with lb_locked(stack.engine, lb):
        first.start()
        wait_queued(stack.engine, 1)
        retry = post(api, url, body, "race")
        assert retry.status_code == 409, retry.text
        assert "still being processed" in retry.json()["faultstring"]
    first.join(30)
    assert answers[0].status_code == 201, answers[0].text
    again = post(api, url, body, "race")
    assert (again.status_code, again.content) == (201, answers[0].content)
    members = api.get(url).json()["members"]
    assert [m["id"] for m in members] == [answers[0].json()["member"]["id"]]
