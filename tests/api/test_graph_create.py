"""The fully populated load balancer create: the whole tree in one POST, all or nothing."""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from openha.db import transaction
from openha.models import (
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    LoadBalancer,
    Member,
    Pool,
    Port,
)
from tests.api.factories import create_lb, wait_lb_active
from tests.conftest import PROJECT_A, Client

LBS = "/v2/lbaas/loadbalancers"


def full_tree(subnet_id: str) -> dict[str, Any]:
    """LB + 2 listeners with default pools (members, HM) + an L7 policy with a redirect
    pool and rules, and one top-level pool referenced by name from a nested place."""
    return {
        "name": "shop",
        "vip_subnet_id": subnet_id,
        "listeners": [
            {
                "name": "http",
                "protocol": "HTTP",
                "protocol_port": 80,
                "default_pool": {
                    "name": "web",
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                    "members": [
                        {"address": "192.0.2.10", "protocol_port": 8080},
                        {"address": "192.0.2.11", "protocol_port": 8080, "weight": 5},
                    ],
                    "healthmonitor": {
                        "type": "HTTP",
                        "delay": 5,
                        "timeout": 3,
                        "max_retries": 3,
                        "url_path": "/healthz",
                    },
                },
                "l7policies": [
                    {
                        "name": "api",
                        "action": "REDIRECT_TO_POOL",
                        "redirect_pool": {
                            "name": "api",
                            "protocol": "HTTP",
                            "lb_algorithm": "LEAST_CONNECTIONS",
                            "members": [{"address": "192.0.2.20", "protocol_port": 9000}],
                        },
                        "rules": [
                            {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"},
                            {
                                "type": "HEADER",
                                "compare_type": "EQUAL_TO",
                                "key": "X-Env",
                                "value": "prod",
                            },
                        ],
                    },
                    {
                        "name": "static",
                        "action": "REDIRECT_TO_POOL",
                        "redirect_pool": {"name": "static"},
                        "rules": [
                            {"type": "FILE_TYPE", "compare_type": "EQUAL_TO", "value": "css"}
                        ],
                    },
                    {
                        "name": "old",
                        "action": "REDIRECT_PREFIX",
                        "redirect_prefix": "https://www.example.com",
                        "position": 1,
                        "rules": [
                            {
                                "type": "HOST_NAME",
                                "compare_type": "EQUAL_TO",
                                "value": "old.example.com",
                            }
                        ],
                    },
                ],
            },
            {
                "name": "tcp",
                "protocol": "TCP",
                "protocol_port": 5432,
                "default_pool": {
                    "name": "db",
                    "protocol": "TCP",
                    "lb_algorithm": "SOURCE_IP",
                    "members": [{"address": "192.0.2.30", "protocol_port": 5432}],
                    "healthmonitor": {"type": "TCP", "delay": 5, "timeout": 3, "max_retries": 2},
                },
            },
        ],
        "pools": [
            {
                "name": "static",
                "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN",
                "members": [{"address": "192.0.2.40", "protocol_port": 80}],
            }
        ],
    }


def counts(session_factory: sessionmaker[Session]) -> dict[str, int]:
    with transaction(session_factory) as s:
        return {
            model.__name__: int(s.scalar(select(func.count()).select_from(model)) or 0)
            for model in (
                LoadBalancer,
                Listener,
                Pool,
                Member,
                HealthMonitor,
                L7Policy,
                L7Rule,
                Port,
            )
        }


def post_lb(client: Client, body: dict[str, Any]) -> Any:
    return client.post(LBS, {"loadbalancer": body})


def test_full_tree_is_created_and_answered_in_full(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    resp = post_lb(alice, full_tree(subnet_id))
    assert resp.status_code == 201, resp.text
    lb = resp.json()["loadbalancer"]
    assert lb["provisioning_status"] == "PENDING_CREATE"
    assert lb["vip_address"]
    assert lb["project_id"] == PROJECT_A

    pools = {p["name"]: p for p in lb["pools"]}
    assert set(pools) == {"web", "api", "static", "db"}
    for pool in pools.values():
        assert pool["provisioning_status"] == "PENDING_CREATE"
        assert "loadbalancers" not in pool
        assert "healthmonitor_id" not in pool
        assert all(m["provisioning_status"] == "PENDING_CREATE" for m in pool["members"])
    web = pools["web"]
    assert sorted((m["address"], m["weight"]) for m in web["members"]) == [
        ("192.0.2.10", 1),
        ("192.0.2.11", 5),
    ]
    assert web["healthmonitor"]["type"] == "HTTP"
    assert web["healthmonitor"]["url_path"] == "/healthz"
    assert "pools" not in web["healthmonitor"]
    assert pools["api"]["healthmonitor"] is None
    assert pools["api"]["lb_algorithm"] == "LEAST_CONNECTIONS"
    assert [m["address"] for m in pools["static"]["members"]] == ["192.0.2.40"]
    assert pools["db"]["healthmonitor"]["type"] == "TCP"

    listeners = {li["name"]: li for li in lb["listeners"]}
    assert set(listeners) == {"http", "tcp"}
    http = listeners["http"]
    assert "loadbalancers" not in http
    assert http["default_pool_id"] == web["id"]
    assert listeners["tcp"]["default_pool_id"] == pools["db"]["id"]
    assert listeners["tcp"]["l7policies"] == []
    policies = {p["name"]: p for p in http["l7policies"]}
    assert {name: p["position"] for name, p in policies.items()} == {
        "old": 1,
        "api": 2,
        "static": 3,
    }
    assert [p["name"] for p in http["l7policies"]] == ["old", "api", "static"]
    api = policies["api"]
    assert api["redirect_pool_id"] == pools["api"]["id"]
    assert api["listener_id"] == http["id"]
    assert {r["type"] for r in api["rules"]} == {"PATH", "HEADER"}
    header = next(r for r in api["rules"] if r["type"] == "HEADER")
    assert (header["key"], header["value"], header["provisioning_status"]) == (
        "X-Env",
        "prod",
        "PENDING_CREATE",
    )
    # the nested name-only pool is the top-level "static" pool
    assert policies["static"]["redirect_pool_id"] == pools["static"]["id"]
    assert policies["old"]["redirect_http_code"] == 302

    # and the same tree is what the single-object API shows
    shown = alice.get(f"/v2/lbaas/l7policies/{api['id']}").json()["l7policy"]
    assert shown["rules"] == [{"id": r["id"]} for r in api["rules"]]
    assert counts(session_factory) == {
        "LoadBalancer": 1,
        "Listener": 2,
        "Pool": 4,
        "Member": 5,
        "HealthMonitor": 2,
        "L7Policy": 3,
        "L7Rule": 4,
        "Port": 1,
    }
    plain = alice.get(f"{LBS}/{lb['id']}").json()["loadbalancer"]
    assert sorted(li["id"] for li in plain["listeners"]) == sorted(
        li["id"] for li in lb["listeners"]
    )


def test_full_tree_goes_active(alice: Client, subnet_id: str, controller: Any) -> None:
    lb = post_lb(alice, full_tree(subnet_id)).json()["loadbalancer"]
    wait_lb_active(alice, lb["id"])
    policies = alice.get("/v2/lbaas/l7policies").json()["l7policies"]
    assert len(policies) == 3
    assert all(p["provisioning_status"] == "ACTIVE" for p in policies)
    for policy in policies:
        rules = alice.get(f"/v2/lbaas/l7policies/{policy['id']}/rules").json()["rules"]
        assert all(r["provisioning_status"] == "ACTIVE" for r in rules)


def _broken(subnet_id: str, where: str) -> dict[str, Any]:
    tree = copy.deepcopy(full_tree(subnet_id))
    http = tree["listeners"][0]
    if where == "rule":
        http["l7policies"][0]["rules"][1]["value"] = "two words"
    elif where == "member":
        http["default_pool"]["members"][1]["address"] = "not-an-ip"
    elif where == "hm":
        tree["listeners"][1]["default_pool"]["healthmonitor"]["delay"] = -1
    elif where == "redirect_url":
        http["l7policies"][2]["redirect_prefix"] = "https://www.example.com/path"
    elif where == "top_pool":
        tree["pools"][0]["lb_algorithm"] = "RANDOM"
    return tree


def test_a_bad_value_deep_inside_leaves_nothing_behind(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    before = counts(session_factory)
    expected = {
        "rule": "listeners[0].l7policies[0].rules[1]: Error parsing L7Rule: Invalid value",
        "member": "listeners[0].default_pool.members[1].address",
        "hm": "listeners[1].default_pool.healthmonitor.delay",
        "redirect_url": "listeners[0].l7policies[2].redirect_prefix",
        "top_pool": "pools[0].lb_algorithm",
    }
    for where, fragment in expected.items():
        resp = post_lb(alice, _broken(subnet_id, where))
        assert resp.status_code == 400, (where, resp.text)
        assert fragment in resp.json()["faultstring"], (where, resp.text)
        assert counts(session_factory) == before, where
    assert alice.get(LBS).json()["loadbalancers"] == []
    # the VIP was given back: the next LB gets the first address again
    assert create_lb(alice, subnet_id)["vip_address"] == "198.51.100.10"


def test_errors_found_while_creating_roll_back_too(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    before = counts(session_factory)
    tree = full_tree(subnet_id)
    # a pool whose protocol the listener cannot use is only found once pools exist
    tree["listeners"][0]["default_pool"] = {"name": "db"}
    resp = post_lb(alice, tree)
    assert resp.status_code == 400, resp.text
    msg = resp.json()["faultstring"]
    assert msg.startswith("listeners[0]: ")
    assert "The pool protocol 'TCP' is invalid while the listener protocol is 'HTTP'" in msg
    # two listeners on one port: a conflict, still with its place
    tree = full_tree(subnet_id)
    tree["listeners"][1]["protocol_port"] = 80
    resp = post_lb(alice, tree)
    assert resp.status_code == 409, resp.text
    assert resp.json()["faultstring"].startswith("listeners[1]: ")
    # a redirect pool the listener cannot use
    tree = full_tree(subnet_id)
    tree["listeners"][0]["l7policies"][1]["redirect_pool"] = {"name": "db"}
    tree["listeners"][1]["default_pool"] = {"name": "db"}
    tree["pools"].append(
        {"name": "db", "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN", "members": []}
    )
    resp = post_lb(alice, tree)
    assert resp.status_code == 400, resp.text
    assert resp.json()["faultstring"].startswith("listeners[0].l7policies[1]: ")
    assert counts(session_factory) == before


def test_pool_references(alice: Client, subnet_id: str) -> None:
    tree = full_tree(subnet_id)
    tree["listeners"][0]["l7policies"][1]["redirect_pool"] = {"name": "nowhere"}
    msg = post_lb(alice, tree).json()["faultstring"]
    assert msg == (
        "listeners[0].l7policies[1].redirect_pool: Validation failure: Pool 'nowhere' was "
        "referenced but no full definition was found."
    )

    tree = full_tree(subnet_id)
    tree["pools"][0]["name"] = "web"  # clashes with the nested default pool "web"
    resp = post_lb(alice, tree)
    assert resp.status_code == 400
    assert "Pool names must be unique" in resp.json()["faultstring"]

    tree = full_tree(subnet_id)
    del tree["listeners"][0]["default_pool"]["name"]
    resp = post_lb(alice, tree)
    assert resp.status_code == 400
    assert resp.json()["faultstring"] == (
        "listeners[0].default_pool: Validation failure: Pools must be named when creating a "
        "fully populated loadbalancer."
    )

    # two listeners may share one pool: defined once, referenced by name
    tree = full_tree(subnet_id)
    tree["listeners"][1] = {
        "protocol": "HTTP",
        "protocol_port": 8080,
        "default_pool": {"name": "web"},
    }
    resp = post_lb(alice, tree)
    assert resp.status_code == 201, resp.text
    lb = resp.json()["loadbalancer"]
    assert len(lb["pools"]) == 3
    defaults = {li["protocol_port"]: li["default_pool_id"] for li in lb["listeners"]}
    assert defaults[80] == defaults[8080]


def test_graph_refuses_parent_and_reference_ids(alice: Client, subnet_id: str) -> None:
    cases = [
        (("listeners", 0, "loadbalancer_id"), "listeners[0].loadbalancer_id"),
        (("listeners", 0, "default_pool_id"), "listeners[0].default_pool_id"),
        (("pools", 0, "listener_id"), "pools[0].listener_id"),
        (
            ("listeners", 0, "l7policies", 0, "listener_id"),
            "listeners[0].l7policies[0].listener_id",
        ),
        (
            ("listeners", 0, "l7policies", 0, "redirect_pool_id"),
            "listeners[0].l7policies[0].redirect_pool_id",
        ),
        (
            ("listeners", 0, "default_pool", "healthmonitor", "pool_id"),
            "listeners[0].default_pool.healthmonitor.pool_id",
        ),
    ]
    for loc, fragment in cases:
        tree = full_tree(subnet_id)
        target: Any = tree
        for part in loc[:-1]:
            target = target[part]
        target[loc[-1]] = "00000000-0000-0000-0000-000000000000"
        resp = post_lb(alice, tree)
        assert resp.status_code == 400, (loc, resp.text)
        assert resp.json()["faultstring"] == f"Unknown attribute for argument {fragment}.", loc
    tree = full_tree(subnet_id)
    tree["listeners"][0]["l7policies"][2]["redirect_pool"] = {"name": "static"}
    msg = post_lb(alice, tree).json()["faultstring"]
    assert msg == (
        "listeners[0].l7policies[2]: Invalid L7 Policy arguments: redirect_pool cannot be used "
        "with action REDIRECT_PREFIX."
    )
    tree = full_tree(subnet_id)
    tree["listeners"][0]["bogus"] = 1
    assert (
        "Unknown attribute for argument listeners[0].bogus"
        in (post_lb(alice, tree).json()["faultstring"])
    )
    assert alice.get(LBS).json()["loadbalancers"] == []


def test_graph_quota_counts_the_whole_tree(
    admin: Client, alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    resp = admin.put(f"/v2/lbaas/quotas/{PROJECT_A}", {"quota": {"l7rule": 3}})
    assert resp.status_code == 202, resp.text
    before = counts(session_factory)
    resp = post_lb(alice, full_tree(subnet_id))
    assert resp.status_code == 403, resp.text
    assert "Quota has been met" in resp.json()["faultstring"]
    assert counts(session_factory) == before


def test_pools_only_and_other_project(alice: Client, bob: Client, subnet_id: str) -> None:
    resp = post_lb(
        alice,
        {
            "vip_subnet_id": subnet_id,
            "pools": [{"name": "p", "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}],
        },
    )
    assert resp.status_code == 201, resp.text
    lb = resp.json()["loadbalancer"]
    assert lb["listeners"] == []
    assert [p["name"] for p in lb["pools"]] == ["p"]
    assert lb["pools"][0]["members"] == []
    assert lb["pools"][0]["healthmonitor"] is None
    assert bob.get(f"{LBS}/{lb['id']}").status_code == 403
    assert bob.get(f"/v2/lbaas/pools/{lb['pools'][0]['id']}").status_code == 403
