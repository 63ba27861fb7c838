"""L7 policies: CRUD, action/redirect rules, positions, inline rules, statuses, isolation."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from openha.db import transaction
from openha.models import L7Policy, L7Rule, Listener, LoadBalancer
from tests.api.factories import create_lb, create_listener, create_pool, wait_lb_active
from tests.conftest import PROJECT_A, Client, wait_for

URL = "/v2/lbaas/l7policies"


def post_policy(client: Client, listener_id: str, **fields: Any) -> Any:
    return client.post(URL, {"l7policy": {"listener_id": listener_id, **fields}})


def create_policy(client: Client, listener_id: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("action", "REJECT")
    resp = post_policy(client, listener_id, **fields)
    assert resp.status_code == 201, resp.text
    return resp.json()["l7policy"]


def get_policy(client: Client, policy_id: str) -> dict[str, Any]:
    resp = client.get(f"{URL}/{policy_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()["l7policy"]


def put_policy(client: Client, policy_id: str, **fields: Any) -> Any:
    return client.put(f"{URL}/{policy_id}", {"l7policy": fields})


def fault(resp: Any, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["faultcode"] == "Client"
    return str(body["faultstring"])


def positions(client: Client, listener_id: str) -> list[str]:
    """Policy names of a listener in position order (positions must be 1..n)."""
    items = client.get(f"{URL}?listener_id={listener_id}&sort=position:asc").json()["l7policies"]
    live = [p for p in items if p["provisioning_status"] != "PENDING_DELETE"]
    assert [p["position"] for p in live] == list(range(1, len(live) + 1))
    return [p["name"] for p in live]


@pytest.fixture
def lb(alice: Client, subnet_id: str) -> dict[str, Any]:
    return create_lb(alice, subnet_id, name="l7")


@pytest.fixture
def listener(alice: Client, lb: dict[str, Any]) -> dict[str, Any]:
    return create_listener(alice, lb["id"], protocol="HTTP", protocol_port=80)


@pytest.fixture
def pool(alice: Client, lb: dict[str, Any]) -> dict[str, Any]:
    return create_pool(alice, lb_id=lb["id"], protocol="HTTP", name="web")


# --- create ------------------------------------------------------------------------------


def test_create_reject_with_defaults(alice: Client, listener: dict[str, Any]) -> None:
    policy = create_policy(alice, listener["id"], name="deny", tags=["t1"])
    assert policy["action"] == "REJECT"
    assert policy["listener_id"] == listener["id"]
    assert policy["project_id"] == PROJECT_A
    assert policy["position"] == 1
    assert policy["admin_state_up"] is True
    assert policy["provisioning_status"] == "PENDING_CREATE"
    assert policy["operating_status"] == "OFFLINE"
    assert policy["updated_at"] is None
    assert policy["tags"] == ["t1"]
    assert policy["rules"] == []
    for field in ("redirect_pool_id", "redirect_url", "redirect_prefix", "redirect_http_code"):
        assert policy[field] is None
    assert policy["description"] == ""
    assert get_policy(alice, policy["id"]) == policy
    # the same resource under /v2.0 (python-octaviaclient)
    assert alice.get(f"/v2.0/lbaas/l7policies/{policy['id']}").json()["l7policy"] == policy


def test_redirect_to_url_and_prefix_default_code(alice: Client, listener: dict[str, Any]) -> None:
    url = create_policy(
        alice, listener["id"], action="REDIRECT_TO_URL", redirect_url="https://example.com/x"
    )
    assert url["redirect_url"] == "https://example.com/x"
    assert url["redirect_http_code"] == 302
    prefix = create_policy(
        alice,
        listener["id"],
        action="REDIRECT_PREFIX",
        redirect_prefix="https://www.example.com",
        redirect_http_code=308,
    )
    assert prefix["redirect_prefix"] == "https://www.example.com"
    assert prefix["redirect_http_code"] == 308
    assert prefix["redirect_url"] is None


def test_redirect_to_pool(
    alice: Client, lb: dict[str, Any], listener: dict[str, Any], pool: dict[str, Any]
) -> None:
    policy = create_policy(
        alice, listener["id"], action="REDIRECT_TO_POOL", redirect_pool_id=pool["id"]
    )
    assert policy["redirect_pool_id"] == pool["id"]
    assert policy["redirect_http_code"] is None
    # the pool's protocol must suit the listener's (LISTENER_POOL_PROTOCOL_MAP)
    tcp = create_pool(alice, lb_id=lb["id"], protocol="TCP")
    msg = fault(
        post_policy(alice, listener["id"], action="REDIRECT_TO_POOL", redirect_pool_id=tcp["id"]),
        400,
    )
    assert "The pool protocol 'TCP' is invalid while the listener protocol is 'HTTP'" in msg
    proxy = create_pool(alice, lb_id=lb["id"], protocol="PROXY")
    create_policy(alice, listener["id"], action="REDIRECT_TO_POOL", redirect_pool_id=proxy["id"])


def test_redirect_pool_must_exist_on_the_same_lb(
    alice: Client, subnet_id: str, listener: dict[str, Any]
) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    msg = fault(
        post_policy(alice, listener["id"], action="REDIRECT_TO_POOL", redirect_pool_id=missing),
        404,
    )
    assert msg == f"Pool {missing} not found."
    other_lb = create_lb(alice, subnet_id)
    foreign = create_pool(alice, lb_id=other_lb["id"])
    msg = fault(
        post_policy(
            alice, listener["id"], action="REDIRECT_TO_POOL", redirect_pool_id=foreign["id"]
        ),
        404,
    )
    assert foreign["id"] in msg


CREATE_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"action": "REDIRECT_TO_URL"}, "redirect_url must not be None"),
    ({"action": "REDIRECT_TO_POOL"}, "redirect_pool_id must not be None"),
    ({"action": "REDIRECT_PREFIX"}, "redirect_prefix must not be None"),
    (
        {"action": "REJECT", "redirect_url": "http://example.com/"},
        "redirect_url cannot be used with action REJECT",
    ),
    (
        {
            "action": "REDIRECT_TO_URL",
            "redirect_url": "http://example.com/",
            "redirect_prefix": "http://example.com",
        },
        "redirect_prefix cannot be used with action REDIRECT_TO_URL",
    ),
    (
        {"action": "REJECT", "redirect_http_code": 301},
        "redirect_http_code cannot be used with action REJECT",
    ),
    (
        {"action": "REDIRECT_PREFIX", "redirect_prefix": "http://example.com/path"},
        "redirect_prefix",
    ),
    ({"action": "REDIRECT_TO_URL", "redirect_url": "ftp://example.com/"}, "redirect_url"),
    ({"action": "REDIRECT_TO_URL", "redirect_url": "http://exa mple.com/"}, "redirect_url"),
    ({"action": "REDIRECT_TO_URL", "redirect_url": "http://a.com/'x"}, "redirect_url"),
    ({"action": "REDIRECT_TO_URL", "redirect_url": "http://a.com/\nx"}, "redirect_url"),
    (
        {"action": "REDIRECT_TO_URL", "redirect_url": "http://a.com/", "redirect_http_code": 305},
        "redirect_http_code",
    ),
    ({"action": "FORWARD"}, "action"),
    ({"action": "REJECT", "position": 0}, "position"),
    ({"action": "REJECT", "position": 2147483648}, "position"),
    ({"action": "REJECT", "name": "a\x00b"}, "name"),
    ({"action": "REJECT", "tags": ["x" * 256]}, "tags"),
    ({"action": "REJECT", "bogus": 1}, "Unknown attribute"),
    ({}, "Mandatory field missing: action"),
]


def test_create_validation(alice: Client, listener: dict[str, Any]) -> None:
    for fields, expected in CREATE_ERRORS:
        msg = fault(post_policy(alice, listener["id"], **fields), 400)
        assert expected in msg, (fields, msg)
    assert alice.get(URL).json()["l7policies"] == []


def test_listener_is_required_and_must_exist(alice: Client) -> None:
    msg = fault(alice.post(URL, {"l7policy": {"action": "REJECT"}}), 400)
    assert "listener_id" in msg
    missing = "00000000-0000-0000-0000-000000000001"
    assert fault(post_policy(alice, missing, action="REJECT"), 404) == (
        f"Listener {missing} not found."
    )


def test_only_http_listeners_take_policies(alice: Client, lb: dict[str, Any]) -> None:
    for port, protocol in enumerate(("TCP", "HTTPS", "UDP"), start=8000):
        other = create_listener(alice, lb["id"], protocol=protocol, protocol_port=port)
        msg = fault(post_policy(alice, other["id"], action="REJECT"), 400)
        assert "HTTP and TERMINATED_HTTPS" in msg
        assert protocol in msg
    assert alice.get(URL).json()["l7policies"] == []


# --- positions ---------------------------------------------------------------------------


def test_positions_append_insert_move_delete(alice: Client, listener: dict[str, Any]) -> None:
    lid = listener["id"]
    a = create_policy(alice, lid, name="a")
    b = create_policy(alice, lid, name="b")
    assert (a["position"], b["position"]) == (1, 2)
    create_policy(alice, lid, name="c", position=1)  # insert at the top shifts the others
    assert positions(alice, lid) == ["c", "a", "b"]
    d = create_policy(alice, lid, name="d", position=2)
    assert d["position"] == 2
    assert positions(alice, lid) == ["c", "d", "a", "b"]
    e = create_policy(alice, lid, name="e", position=99)  # beyond the end: appended
    assert e["position"] == 5
    assert positions(alice, lid) == ["c", "d", "a", "b", "e"]

    moved = put_policy(alice, b["id"], position=1)
    assert moved.status_code == 200, moved.text
    assert moved.json()["l7policy"]["position"] == 1
    assert positions(alice, lid) == ["b", "c", "d", "a", "e"]
    assert put_policy(alice, b["id"], position=1000).json()["l7policy"]["position"] == 5
    assert positions(alice, lid) == ["c", "d", "a", "e", "b"]
    # a null position leaves it where it is
    assert put_policy(alice, b["id"], position=None).json()["l7policy"]["position"] == 5

    assert alice.delete(f"{URL}/{d['id']}").status_code == 204
    assert positions(alice, lid) == ["c", "a", "e", "b"]
    assert get_policy(alice, a["id"])["position"] == 2
    f = create_policy(alice, lid, name="f")
    assert f["position"] == 5


def test_positions_are_per_listener(alice: Client, lb: dict[str, Any]) -> None:
    one = create_listener(alice, lb["id"], protocol="HTTP", protocol_port=80)
    two = create_listener(alice, lb["id"], protocol="HTTP", protocol_port=81)
    create_policy(alice, one["id"], name="x")
    assert create_policy(alice, two["id"], name="y")["position"] == 1
    assert create_policy(alice, one["id"], name="z")["position"] == 2


# --- update: action switching -------------------------------------------------------------


def test_update_switches_actions_and_clears_fields(
    alice: Client, listener: dict[str, Any], pool: dict[str, Any]
) -> None:
    policy = create_policy(
        alice,
        listener["id"],
        action="REDIRECT_TO_URL",
        redirect_url="https://a.example.com/",
        redirect_http_code=301,
    )
    pid = policy["id"]

    # a redirect target alone selects its action (Octavia's sanitize_l7policy_api_args)
    resp = put_policy(alice, pid, redirect_pool_id=pool["id"])
    body = resp.json()["l7policy"]
    assert resp.status_code == 200, resp.text
    assert body["action"] == "REDIRECT_TO_POOL"
    assert body["redirect_pool_id"] == pool["id"]
    assert body["redirect_url"] is None
    assert body["redirect_http_code"] is None

    body = put_policy(
        alice, pid, action="REDIRECT_PREFIX", redirect_prefix="https://b.example.com"
    ).json()["l7policy"]
    assert body["action"] == "REDIRECT_PREFIX"
    assert body["redirect_pool_id"] is None
    assert body["redirect_prefix"] == "https://b.example.com"
    assert body["redirect_http_code"] == 302

    # the code of a redirect is kept while it stays a redirect
    put_policy(alice, pid, redirect_http_code=307)
    body = put_policy(alice, pid, redirect_url="https://c.example.com/p").json()["l7policy"]
    assert body["action"] == "REDIRECT_TO_URL"
    assert body["redirect_prefix"] is None
    assert body["redirect_url"] == "https://c.example.com/p"
    assert body["redirect_http_code"] == 307
    # an explicit null code goes back to the default
    assert (
        put_policy(alice, pid, redirect_http_code=None).json()["l7policy"]["redirect_http_code"]
        == 302
    )

    body = put_policy(alice, pid, action="REJECT").json()["l7policy"]
    assert body["action"] == "REJECT"
    for field in ("redirect_pool_id", "redirect_url", "redirect_prefix", "redirect_http_code"):
        assert body[field] is None

    # Terraform/gophercloud send the fields they clear as explicit nulls
    resp = put_policy(
        alice,
        pid,
        action="REDIRECT_TO_POOL",
        redirect_pool_id=pool["id"],
        redirect_url=None,
        redirect_prefix=None,
        redirect_http_code=None,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["l7policy"]["action"] == "REDIRECT_TO_POOL"
    assert get_policy(alice, pid)["redirect_pool_id"] == pool["id"]


UPDATE_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"action": "REDIRECT_TO_POOL"}, "redirect_pool_id must not be None"),
    ({"action": "REDIRECT_PREFIX"}, "redirect_prefix must not be None"),
    ({"redirect_url": None}, "redirect_url must not be None"),
    (
        {"redirect_url": "http://a.com/", "redirect_prefix": "http://a.com"},
        "Cannot specify redirect_url and redirect_prefix at the same time",
    ),
    (
        {"action": "REJECT", "redirect_url": "http://a.com/"},
        "redirect_url cannot be used with action REJECT",
    ),
    ({"action": "REJECT", "redirect_http_code": 301}, "redirect_http_code cannot be used"),
    ({"action": None}, "action"),
    ({"admin_state_up": None}, "admin_state_up"),
    ({"tags": None}, "tags"),
    ({"listener_id": "x"}, "Unknown attribute"),
    ({"redirect_url": "javascript:alert(1)"}, "redirect_url"),
]


def test_update_validation(alice: Client, listener: dict[str, Any]) -> None:
    policy = create_policy(
        alice, listener["id"], action="REDIRECT_TO_URL", redirect_url="https://a.example.com/"
    )
    for fields, expected in UPDATE_ERRORS:
        msg = fault(put_policy(alice, policy["id"], **fields), 400)
        assert expected in msg, (fields, msg)
        after = get_policy(alice, policy["id"])
        assert after["action"] == "REDIRECT_TO_URL"
        assert after["redirect_url"] == "https://a.example.com/"


def test_update_plain_fields(alice: Client, listener: dict[str, Any]) -> None:
    policy = create_policy(alice, listener["id"], name="one", description="d")
    body = put_policy(
        alice, policy["id"], name=None, description="two", admin_state_up=False, tags=["x"]
    ).json()["l7policy"]
    assert body["name"] == ""
    assert body["description"] == "two"
    assert body["admin_state_up"] is False
    assert body["tags"] == ["x"]
    assert body["action"] == "REJECT"


def test_update_pool_checks(
    alice: Client, lb: dict[str, Any], listener: dict[str, Any], pool: dict[str, Any]
) -> None:
    policy = create_policy(alice, listener["id"])
    tcp = create_pool(alice, lb_id=lb["id"], protocol="TCP")
    assert "invalid while" in fault(
        put_policy(alice, policy["id"], redirect_pool_id=tcp["id"]), 400
    )
    missing = "00000000-0000-0000-0000-000000000002"
    fault(put_policy(alice, policy["id"], redirect_pool_id=missing), 404)
    assert get_policy(alice, policy["id"])["action"] == "REJECT"


# --- inline rules, delete ---------------------------------------------------------------


def test_create_with_rules(alice: Client, listener: dict[str, Any]) -> None:
    policy = create_policy(
        alice,
        listener["id"],
        rules=[
            {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"},
            {"type": "HEADER", "compare_type": "EQUAL_TO", "key": "X-Env", "value": "prod"},
        ],
    )
    assert len(policy["rules"]) == 2
    rules = alice.get(f"{URL}/{policy['id']}/rules").json()["rules"]
    assert {r["type"] for r in rules} == {"PATH", "HEADER"}
    assert all(r["provisioning_status"] == "PENDING_CREATE" for r in rules)


def test_create_with_a_bad_rule_creates_nothing(alice: Client, listener: dict[str, Any]) -> None:
    resp = post_policy(
        alice,
        listener["id"],
        action="REJECT",
        rules=[
            {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"},
            {"type": "HEADER", "compare_type": "EQUAL_TO", "value": "prod"},
        ],
    )
    assert "requires a key" in fault(resp, 400)
    assert alice.get(URL).json()["l7policies"] == []


def test_too_many_inline_rules(alice: Client, listener: dict[str, Any]) -> None:
    rules = [{"type": "PATH", "compare_type": "EQUAL_TO", "value": f"/{i}"} for i in range(51)]
    msg = fault(post_policy(alice, listener["id"], action="REJECT", rules=rules), 409)
    assert msg.startswith("Too many rules on L7 policy")
    assert alice.get(URL).json()["l7policies"] == []
    assert len(create_policy(alice, listener["id"], rules=rules[:50])["rules"]) == 50


def test_delete_marks_rules_and_is_idempotent(alice: Client, listener: dict[str, Any]) -> None:
    policy = create_policy(
        alice, listener["id"], rules=[{"type": "PATH", "compare_type": "EQUAL_TO", "value": "/"}]
    )
    assert alice.delete(f"{URL}/{policy['id']}").status_code == 204
    assert get_policy(alice, policy["id"])["provisioning_status"] == "PENDING_DELETE"
    rules = alice.get(f"{URL}/{policy['id']}/rules").json()["rules"]
    assert [r["provisioning_status"] for r in rules] == ["PENDING_DELETE"]
    assert alice.delete(f"{URL}/{policy['id']}").status_code == 204
    assert fault(put_policy(alice, policy["id"], name="x"), 409)


# --- lists, isolation, roles, quota -----------------------------------------------------------


def test_list_filters_and_fields(alice: Client, lb: dict[str, Any]) -> None:
    one = create_listener(alice, lb["id"], protocol="HTTP", protocol_port=80)
    two = create_listener(alice, lb["id"], protocol="HTTP", protocol_port=81)
    create_policy(alice, one["id"], name="a")
    create_policy(alice, two["id"], name="b", tags=["blue"])
    body = alice.get(f"{URL}?listener_id={two['id']}&fields=id,name").json()
    assert [set(p) for p in body["l7policies"]] == [{"id", "name"}]
    assert [p["name"] for p in body["l7policies"]] == ["b"]
    assert [p["name"] for p in alice.get(f"{URL}?tags=blue").json()["l7policies"]] == ["b"]
    assert len(alice.get(f"{URL}?action=REJECT").json()["l7policies"]) == 2


def test_other_project_gets_403(
    alice: Client, bob: Client, subnet_id: str, listener: dict[str, Any], pool: dict[str, Any]
) -> None:
    policy = create_policy(alice, listener["id"])
    assert bob.get(f"{URL}/{policy['id']}").status_code == 403
    assert bob.get(URL).json()["l7policies"] == []
    assert put_policy(bob, policy["id"], name="x").status_code == 403
    assert bob.delete(f"{URL}/{policy['id']}").status_code == 403
    assert post_policy(bob, listener["id"], action="REJECT").status_code == 403
    # nor can bob point his own policy at alice's pool
    bob_lb = create_lb(bob, subnet_id)
    bob_listener = create_listener(bob, bob_lb["id"])
    resp = post_policy(
        bob, bob_listener["id"], action="REDIRECT_TO_POOL", redirect_pool_id=pool["id"]
    )
    assert resp.status_code == 403
    assert get_policy(alice, policy["id"])["name"] == ""


def test_reader_cannot_write(alice_reader: Client, alice: Client, listener: dict[str, Any]) -> None:
    assert post_policy(alice_reader, listener["id"], action="REJECT").status_code == 403
    policy = create_policy(alice, listener["id"])
    assert alice_reader.get(f"{URL}/{policy['id']}").status_code == 200
    assert put_policy(alice_reader, policy["id"], name="x").status_code == 403
    assert alice_reader.delete(f"{URL}/{policy['id']}").status_code == 403


def test_quota(admin: Client, alice: Client, listener: dict[str, Any]) -> None:
    resp = admin.put(f"/v2/lbaas/quotas/{PROJECT_A}", {"quota": {"l7policy": 1, "l7rule": 1}})
    assert resp.status_code == 202, resp.text
    create_policy(alice, listener["id"])
    assert "Quota has been met" in fault(post_policy(alice, listener["id"], action="REJECT"), 403)
    admin.put(f"/v2/lbaas/quotas/{PROJECT_A}", {"quota": {"l7policy": 5, "l7rule": 1}})
    rules = [{"type": "PATH", "compare_type": "EQUAL_TO", "value": f"/{i}"} for i in range(2)]
    fault(post_policy(alice, listener["id"], action="REJECT", rules=rules), 403)
    create_policy(alice, listener["id"], rules=rules[:1])


# --- status transitions with the controller -------------------------------------------------


def test_status_transitions(
    alice: Client, lb: dict[str, Any], listener: dict[str, Any], controller: Any
) -> None:
    wait_lb_active(alice, lb["id"])
    policy = create_policy(
        alice, listener["id"], rules=[{"type": "PATH", "compare_type": "EQUAL_TO", "value": "/x"}]
    )
    wait_lb_active(alice, lb["id"])
    body = get_policy(alice, policy["id"])
    assert body["provisioning_status"] == "ACTIVE"
    rule_id = body["rules"][0]["id"]

    resp = put_policy(alice, policy["id"], name="renamed")
    assert resp.json()["l7policy"]["provisioning_status"] == "PENDING_UPDATE"
    wait_lb_active(alice, lb["id"])
    assert get_policy(alice, policy["id"])["provisioning_status"] == "ACTIVE"
    got = alice.get(f"/v2/lbaas/listeners/{listener['id']}").json()["listener"]
    assert got["provisioning_status"] == "ACTIVE"

    assert alice.delete(f"{URL}/{policy['id']}").status_code == 204
    wait_for(lambda: alice.get(f"{URL}/{policy['id']}").status_code == 404)
    assert alice.get(f"{URL}/{policy['id']}/rules/{rule_id}").status_code == 404
    wait_lb_active(alice, lb["id"])


def test_policy_changes_put_listener_in_pending_update(
    alice: Client,
    lb: dict[str, Any],
    listener: dict[str, Any],
    session_factory: sessionmaker[Session],
) -> None:
    """Without a controller: settle the tree by hand, then watch each change's marks."""

    def settle() -> None:
        with transaction(session_factory) as s:
            for model in (LoadBalancer, Listener, L7Policy, L7Rule):
                s.execute(update(model).values(provisioning_status="ACTIVE"))

    def statuses() -> tuple[str, str]:
        lb_body = alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}").json()["loadbalancer"]
        li_body = alice.get(f"/v2/lbaas/listeners/{listener['id']}").json()["listener"]
        return lb_body["provisioning_status"], li_body["provisioning_status"]

    settle()
    policy = create_policy(alice, listener["id"])
    assert policy["provisioning_status"] == "PENDING_CREATE"
    assert statuses() == ("PENDING_UPDATE", "PENDING_UPDATE")
    settle()
    assert put_policy(alice, policy["id"], name="x").json()["l7policy"]["provisioning_status"] == (
        "PENDING_UPDATE"
    )
    assert statuses() == ("PENDING_UPDATE", "PENDING_UPDATE")
    settle()
    assert alice.delete(f"{URL}/{policy['id']}").status_code == 204
    assert statuses() == ("PENDING_UPDATE", "PENDING_UPDATE")
