"""L7 rules: CRUD, Octavia's consistency rules, value grammars, the 50-rule limit, isolation."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from openha.db import transaction
from openha.models import L7Policy, L7Rule, Listener, LoadBalancer
from tests.api.factories import create_lb, create_listener, wait_lb_active
from tests.conftest import PROJECT_A, Client

POLICIES = "/v2/lbaas/l7policies"


def rules_url(policy_id: str) -> str:
    return f"{POLICIES}/{policy_id}/rules"


def post_rule(client: Client, policy_id: str, **fields: Any) -> Any:
    return client.post(rules_url(policy_id), {"rule": fields})


def create_rule(client: Client, policy_id: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("type", "PATH")
    fields.setdefault("compare_type", "STARTS_WITH")
    fields.setdefault("value", "/api")
    resp = post_rule(client, policy_id, **fields)
    assert resp.status_code == 201, resp.text
    return resp.json()["rule"]


def put_rule(client: Client, policy_id: str, rule_id: str, **fields: Any) -> Any:
    return client.put(f"{rules_url(policy_id)}/{rule_id}", {"rule": fields})


def get_rule(client: Client, policy_id: str, rule_id: str) -> dict[str, Any]:
    resp = client.get(f"{rules_url(policy_id)}/{rule_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()["rule"]


def fault(resp: Any, status: int) -> str:
    assert resp.status_code == status, resp.text
    return str(resp.json()["faultstring"])


@pytest.fixture
def lb(alice: Client, subnet_id: str) -> dict[str, Any]:
    return create_lb(alice, subnet_id)


@pytest.fixture
def listener(alice: Client, lb: dict[str, Any]) -> dict[str, Any]:
    return create_listener(alice, lb["id"], protocol="HTTP", protocol_port=80)


@pytest.fixture
def policy(alice: Client, listener: dict[str, Any]) -> dict[str, Any]:
    resp = alice.post(POLICIES, {"l7policy": {"listener_id": listener["id"], "action": "REJECT"}})
    assert resp.status_code == 201, resp.text
    return resp.json()["l7policy"]


def test_crud(alice: Client, policy: dict[str, Any]) -> None:
    pid = policy["id"]
    rule = create_rule(alice, pid, tags=["a"])
    assert rule["type"] == "PATH"
    assert rule["compare_type"] == "STARTS_WITH"
    assert rule["value"] == "/api"
    assert rule["key"] is None
    assert rule["invert"] is False
    assert rule["admin_state_up"] is True
    assert rule["project_id"] == PROJECT_A
    assert rule["provisioning_status"] == "PENDING_CREATE"
    assert rule["operating_status"] == "OFFLINE"
    assert rule["updated_at"] is None
    assert rule["tags"] == ["a"]
    assert get_rule(alice, pid, rule["id"]) == rule
    assert alice.get(f"{POLICIES}/{pid}").json()["l7policy"]["rules"] == [{"id": rule["id"]}]

    listed = alice.get(f"{rules_url(pid)}?fields=id,value").json()
    assert listed["rules"] == [{"id": rule["id"], "value": "/api"}]
    assert listed["rules_links"] == []

    resp = put_rule(alice, pid, rule["id"], invert=True, value="/v2", admin_state_up=False)
    assert resp.status_code == 200, resp.text
    body = resp.json()["rule"]
    assert (body["invert"], body["value"], body["admin_state_up"]) == (True, "/v2", False)
    # Octavia resets a null invert to False
    assert put_rule(alice, pid, rule["id"], invert=None).json()["rule"]["invert"] is False

    assert alice.delete(f"{rules_url(pid)}/{rule['id']}").status_code == 204
    assert get_rule(alice, pid, rule["id"])["provisioning_status"] == "PENDING_DELETE"
    assert alice.delete(f"{rules_url(pid)}/{rule['id']}").status_code == 204
    assert fault(put_rule(alice, pid, rule["id"], value="/x"), 409)


VALID = [
    ("HOST_NAME", "EQUAL_TO", None, "www.example.com"),
    ("HOST_NAME", "EQUAL_TO", None, "*.example.com"),
    ("HOST_NAME", "ENDS_WITH", None, ".example.com"),
    ("HOST_NAME", "STARTS_WITH", None, "api."),
    ("HOST_NAME", "REGEX", None, r"^(www|api)\.example\.com$"),
    ("PATH", "EQUAL_TO", None, "/index.html"),
    ("PATH", "STARTS_WITH", None, "/api/v1"),
    ("PATH", "CONTAINS", None, "v1/"),
    ("PATH", "ENDS_WITH", None, ".json"),
    ("PATH", "REGEX", None, r"^/img/.*\.png$"),
    ("FILE_TYPE", "EQUAL_TO", None, "jpg"),
    ("FILE_TYPE", "EQUAL_TO", None, ".tar.gz"),
    ("FILE_TYPE", "REGEX", None, r"\.(jpg|png)$"),
    ("HEADER", "EQUAL_TO", "X-Env", "prod"),
    ("HEADER", "CONTAINS", "User-Agent", "Mozilla/5.0"),
    ("HEADER", "EQUAL_TO", "X-Quoted", '"two words"'),
    ("COOKIE", "EQUAL_TO", "session", "abc123"),
    ("COOKIE", "REGEX", "session", "^a.*"),
    ("SSL_CONN_HAS_CERT", "EQUAL_TO", None, "True"),
    ("SSL_VERIFY_RESULT", "EQUAL_TO", None, "0"),
    ("SSL_DN_FIELD", "EQUAL_TO", "CN", "client.example.com"),
    ("SSL_DN_FIELD", "REGEX", "OU", "^eng"),
    # What Octavia's grammars take besides (validate.l7rule_data): the header value
    # grammar for host names, paths and file types, apostrophes and commas in names.
    ("HOST_NAME", "EQUAL_TO", None, "www.example.com:8080"),
    ("HOST_NAME", "EQUAL_TO", None, "a..b"),
    ("PATH", "EQUAL_TO", None, "no-slash"),
    ("PATH", "EQUAL_TO", None, '"/a b"'),
    ("FILE_TYPE", "EQUAL_TO", None, '"a b"'),
    ("HEADER", "EQUAL_TO", "X-It's", "x"),
    ("HEADER", "EQUAL_TO", "X-A,B", "x"),
    ("COOKIE", "EQUAL_TO", "o'k", "a,b"),
    ("SSL_DN_FIELD", "EQUAL_TO", "businessCategory", "Acme Inc"),
]


def test_valid_rules(alice: Client, policy: dict[str, Any]) -> None:
    for rtype, compare_type, key, value in VALID:
        rule = create_rule(
            alice, policy["id"], type=rtype, compare_type=compare_type, key=key, value=value
        )
        got = (rule["type"], rule["compare_type"], rule["key"], rule["value"])
        assert got == (rtype, compare_type, key, value)
    assert len(alice.get(rules_url(policy["id"])).json()["rules"]) == len(VALID)


INVALID = [
    # keys: required, forbidden, checked
    ("HEADER", "EQUAL_TO", None, "v", "L7 rule type HEADER requires a key"),
    ("COOKIE", "EQUAL_TO", None, "v", "L7 rule type COOKIE requires a key"),
    ("SSL_DN_FIELD", "EQUAL_TO", None, "v", "L7 rule type SSL_DN_FIELD requires a key"),
    ("SSL_DN_FIELD", "EQUAL_TO", "1X", "v", "distinguished name field '1X'"),
    ("HEADER", "EQUAL_TO", "X Env", "v", "Invalid key"),
    ("HEADER", "EQUAL_TO", 'X-"a"', "v", "Invalid key"),
    ("COOKIE", "EQUAL_TO", "a(b)", "v", "Invalid key"),
    ("SSL_CONN_HAS_CERT", "EQUAL_TO", "k", "True", 'does not use the "key" field'),
    ("SSL_VERIFY_RESULT", "EQUAL_TO", "k", "0", 'does not use the "key" field'),
    # compare types per rule type
    ("FILE_TYPE", "STARTS_WITH", None, "jpg", "only supports the EQUAL_TO, REGEX compare types"),
    ("SSL_CONN_HAS_CERT", "CONTAINS", None, "True", "only supports the EQUAL_TO compare type"),
    ("SSL_VERIFY_RESULT", "REGEX", None, "0", "only supports the EQUAL_TO compare type"),
    # values
    ("PATH", "REGEX", None, "(unclosed", "Invalid regular expression"),
    ("HOST_NAME", "EQUAL_TO", None, "bad host", "Invalid value"),
    ("PATH", "STARTS_WITH", None, "/a b", "Invalid value"),
    ("PATH", "CONTAINS", None, "a b", "Invalid value"),
    ("FILE_TYPE", "EQUAL_TO", None, "jp g", "Invalid value"),
    ("HEADER", "EQUAL_TO", "X-A", "two words", "Invalid value"),
    ("HEADER", "EQUAL_TO", "X-A", "a\tb", "Invalid value"),
    ("HEADER", "EQUAL_TO", "X-A", "ab\n", "Invalid value"),
    ("HEADER", "EQUAL_TO", "X-A", "caf\u00e9", "Invalid value"),
    ("COOKIE", "EQUAL_TO", "c", "a;b", "Invalid cookie value"),
    ("SSL_CONN_HAS_CERT", "EQUAL_TO", None, "False", "is not a boolean True string"),
    ("SSL_VERIFY_RESULT", "EQUAL_TO", None, "-1", "needs an integer value"),
    ("SSL_VERIFY_RESULT", "EQUAL_TO", None, "x", "needs an integer value"),
    ("SSL_DN_FIELD", "EQUAL_TO", "CN", "a\x00b", "Invalid value"),
    ("PATH", "REGEX", None, "a\x00b", "Invalid regular expression"),
    ("PATH", "EQUAL_TO", None, "", "requires a value"),
    ("PATH", "EQUAL_TO", None, "/a\nb", "Invalid value"),
]


def test_a_key_the_type_does_not_use_is_dropped(alice: Client, policy: dict[str, Any]) -> None:
    """Octavia takes a key on HOST_NAME, PATH and FILE_TYPE rules and clears it with the
    rule's first update (its L7RuleRepository.update); OpenHA drops it at once."""
    for rtype, value in (("HOST_NAME", "a.example"), ("PATH", "/a"), ("FILE_TYPE", "png")):
        rule = create_rule(
            alice, policy["id"], type=rtype, compare_type="EQUAL_TO", key="k", value=value
        )
        assert rule["key"] is None
        assert get_rule(alice, policy["id"], rule["id"])["key"] is None


def test_invalid_rules(alice: Client, policy: dict[str, Any]) -> None:
    for rtype, compare_type, key, value, expected in INVALID:
        resp = post_rule(
            alice, policy["id"], type=rtype, compare_type=compare_type, key=key, value=value
        )
        msg = fault(resp, 400)
        assert msg.startswith("Error parsing L7Rule: "), msg
        assert expected in msg, (rtype, compare_type, key, value, msg)
    assert alice.get(rules_url(policy["id"])).json()["rules"] == []


SCHEMA_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"compare_type": "EQUAL_TO", "value": "/"}, "Mandatory field missing: type"),
    ({"type": "PATH", "value": "/"}, "Mandatory field missing: compare_type"),
    ({"type": "PATH", "compare_type": "EQUAL_TO"}, "Mandatory field missing: value"),
    ({"type": "URL", "compare_type": "EQUAL_TO", "value": "/"}, "type"),
    ({"type": "PATH", "compare_type": "LIKE", "value": "/"}, "compare_type"),
    ({"type": "PATH", "compare_type": "EQUAL_TO", "value": "/" * 256}, "value"),
    ({"type": "PATH", "compare_type": "EQUAL_TO", "value": "/", "x": 1}, "Unknown attribute"),
]


def test_schema_errors(alice: Client, policy: dict[str, Any]) -> None:
    for fields, expected in SCHEMA_ERRORS:
        msg = fault(post_rule(alice, policy["id"], **fields), 400)
        assert expected in msg, (fields, msg)


def test_update_merges_and_revalidates(alice: Client, policy: dict[str, Any]) -> None:
    pid = policy["id"]
    rule = create_rule(alice, pid, type="HEADER", compare_type="EQUAL_TO", key="X-A", value="b")
    rid = rule["id"]
    # switching to a type without a key drops the key, as Octavia does
    body = put_rule(alice, pid, rid, type="HOST_NAME", value="www.example.com").json()["rule"]
    assert (body["type"], body["key"], body["value"]) == ("HOST_NAME", None, "www.example.com")
    # back to HEADER needs a key again
    assert "requires a key" in fault(put_rule(alice, pid, rid, type="HEADER", value="v"), 400)
    body = put_rule(alice, pid, rid, type="COOKIE", key="sid", value="v").json()["rule"]
    assert (body["type"], body["key"]) == ("COOKIE", "sid")
    # the merged rule is checked: FILE_TYPE cannot keep CONTAINS
    put_rule(alice, pid, rid, type="PATH", compare_type="CONTAINS", value="/a")
    assert "only supports" in fault(put_rule(alice, pid, rid, type="FILE_TYPE", value="png"), 400)
    assert put_rule(alice, pid, rid, key="X-A").json()["rule"]["key"] is None  # ignored
    assert "Invalid value" in fault(
        put_rule(alice, pid, rid, compare_type="EQUAL_TO", value="a b"), 400
    )
    for field in ("type", "compare_type", "value", "admin_state_up", "tags"):
        assert field in fault(put_rule(alice, pid, rid, **{field: None}), 400)
    after = get_rule(alice, pid, rid)
    assert (after["type"], after["compare_type"], after["value"]) == ("PATH", "CONTAINS", "/a")


def test_update_checks_the_old_key_as_octavia_does(alice: Client, policy: dict[str, Any]) -> None:
    """Octavia validates the merged rule, the stored key included: a HEADER rule becomes
    SSL_CONN_HAS_CERT only with `"key": null`."""
    pid = policy["id"]
    rid = create_rule(alice, pid, type="HEADER", compare_type="EQUAL_TO", key="X-A", value="b")[
        "id"
    ]
    switch = {"type": "SSL_CONN_HAS_CERT", "value": "true"}
    assert "does not use" in fault(put_rule(alice, pid, rid, **switch), 400)
    body = put_rule(alice, pid, rid, key=None, **switch).json()["rule"]
    assert (body["type"], body["key"]) == ("SSL_CONN_HAS_CERT", None)


def test_fifty_rules_per_policy(alice: Client, policy: dict[str, Any]) -> None:
    pid = policy["id"]
    rules = [create_rule(alice, pid, value=f"/{i}") for i in range(50)]
    msg = fault(post_rule(alice, pid, type="PATH", compare_type="EQUAL_TO", value="/x"), 409)
    assert msg == f"Too many rules on L7 policy {pid}"
    # a rule being deleted no longer counts
    assert alice.delete(f"{rules_url(pid)}/{rules[0]['id']}").status_code == 204
    create_rule(alice, pid, value="/again")


def test_rules_of_a_deleted_policy(alice: Client, policy: dict[str, Any]) -> None:
    rule = create_rule(alice, policy["id"])
    assert alice.delete(f"{POLICIES}/{policy['id']}").status_code == 204
    assert fault(
        post_rule(alice, policy["id"], type="PATH", compare_type="EQUAL_TO", value="/"), 409
    )
    assert fault(put_rule(alice, policy["id"], rule["id"], value="/b"), 409)


def test_isolation_and_wrong_parent(
    alice: Client, bob: Client, listener: dict[str, Any], policy: dict[str, Any]
) -> None:
    rule = create_rule(alice, policy["id"])
    other = alice.post(POLICIES, {"l7policy": {"listener_id": listener["id"], "action": "REJECT"}})
    other_id = other.json()["l7policy"]["id"]
    # a rule is only found under its own policy
    assert alice.get(f"{rules_url(other_id)}/{rule['id']}").status_code == 404
    assert put_rule(alice, other_id, rule["id"], value="/x").status_code == 404
    assert alice.delete(f"{rules_url(other_id)}/{rule['id']}").status_code == 404
    missing = "00000000-0000-0000-0000-000000000003"
    assert fault(alice.get(rules_url(missing)), 404) == f"L7Policy {missing} not found."

    assert bob.get(rules_url(policy["id"])).status_code == 403
    assert bob.get(f"{rules_url(policy['id'])}/{rule['id']}").status_code == 403
    assert (
        post_rule(bob, policy["id"], type="PATH", compare_type="EQUAL_TO", value="/").status_code
        == 403
    )
    assert put_rule(bob, policy["id"], rule["id"], value="/x").status_code == 403
    assert bob.delete(f"{rules_url(policy['id'])}/{rule['id']}").status_code == 403
    assert get_rule(alice, policy["id"], rule["id"])["value"] == "/api"


def test_reader_cannot_write(alice_reader: Client, alice: Client, policy: dict[str, Any]) -> None:
    rule = create_rule(alice, policy["id"])
    resp = post_rule(alice_reader, policy["id"], type="PATH", compare_type="EQUAL_TO", value="/")
    assert resp.status_code == 403
    assert put_rule(alice_reader, policy["id"], rule["id"], value="/x").status_code == 403
    assert alice_reader.get(rules_url(policy["id"])).status_code == 200


def test_quota(admin: Client, alice: Client, policy: dict[str, Any]) -> None:
    admin.put(f"/v2/lbaas/quotas/{PROJECT_A}", {"quota": {"l7rule": 1}})
    create_rule(alice, policy["id"])
    resp = post_rule(alice, policy["id"], type="PATH", compare_type="EQUAL_TO", value="/")
    assert "Quota has been met" in fault(resp, 403)


def test_status_transitions(
    alice: Client, lb: dict[str, Any], policy: dict[str, Any], controller: Any
) -> None:
    pid = policy["id"]
    wait_lb_active(alice, lb["id"])
    assert alice.get(f"{POLICIES}/{pid}").json()["l7policy"]["provisioning_status"] == "ACTIVE"

    rule = create_rule(alice, pid)
    assert rule["provisioning_status"] == "PENDING_CREATE"
    wait_lb_active(alice, lb["id"])
    assert get_rule(alice, pid, rule["id"])["provisioning_status"] == "ACTIVE"
    assert alice.get(f"{POLICIES}/{pid}").json()["l7policy"]["provisioning_status"] == "ACTIVE"

    body = put_rule(alice, pid, rule["id"], value="/b").json()["rule"]
    assert body["provisioning_status"] == "PENDING_UPDATE"
    wait_lb_active(alice, lb["id"])
    assert get_rule(alice, pid, rule["id"])["provisioning_status"] == "ACTIVE"

    assert alice.delete(f"{rules_url(pid)}/{rule['id']}").status_code == 204
    wait_lb_active(alice, lb["id"])
    assert alice.get(f"{rules_url(pid)}/{rule['id']}").status_code == 404
    assert alice.get(f"{POLICIES}/{pid}").json()["l7policy"]["rules"] == []


def test_rule_changes_put_parents_in_pending_update(
    alice: Client,
    lb: dict[str, Any],
    listener: dict[str, Any],
    policy: dict[str, Any],
    session_factory: sessionmaker[Session],
) -> None:
    """Without a controller: settle the tree by hand, then watch each change's marks."""

    def settle() -> None:
        with transaction(session_factory) as s:
            for model in (LoadBalancer, Listener, L7Policy, L7Rule):
                s.execute(update(model).values(provisioning_status="ACTIVE"))

    def statuses() -> tuple[str, str, str]:
        lb_body = alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}").json()["loadbalancer"]
        li_body = alice.get(f"/v2/lbaas/listeners/{listener['id']}").json()["listener"]
        po_body = alice.get(f"{POLICIES}/{policy['id']}").json()["l7policy"]
        return (
            lb_body["provisioning_status"],
            li_body["provisioning_status"],
            po_body["provisioning_status"],
        )

    pending = ("PENDING_UPDATE",) * 3
    settle()
    rule = create_rule(alice, policy["id"])
    assert statuses() == pending
    settle()
    assert put_rule(alice, policy["id"], rule["id"], value="/b").status_code == 200
    assert get_rule(alice, policy["id"], rule["id"])["provisioning_status"] == "PENDING_UPDATE"
    assert statuses() == pending
    settle()
    assert alice.delete(f"{rules_url(policy['id'])}/{rule['id']}").status_code == 204
    assert get_rule(alice, policy["id"], rule["id"])["provisioning_status"] == "PENDING_DELETE"
    assert statuses() == pending
