"""Behaviours pinned by the differential check against Octavia 19 (`make conformance`).

Each test states what the real Octavia answers (octavia/api/root_controller.py,
octavia/api/common/pagination.py, octavia/api/v2/controllers/quotas.py, its WSME
types) and checks that OpenHA answers the same: the version document, the
routing-level error bodies, list parameters, and input Octavia accepts.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from tests.api.factories import create_hm, create_lb, create_listener, create_member, create_pool
from tests.conftest import Client

LBS = "/v2/lbaas/loadbalancers"


# --- the version document and sub-roots ----------------------------------------------------


def test_version_document_ends_with_v2_30(http: Any) -> None:
    versions = http.get("/").json()["versions"]
    assert [v["id"] for v in versions[-3:]] == ["v2.28", "v2.29", "v2.30"]
    assert [v["updated"] for v in versions[-3:]] == [
        "2023-11-08T00:00:00Z",
        "2024-10-15T00:00:00Z",
        "2025-02-26T00:00:00Z",
    ]
    assert [v["id"] for v in versions if v["status"] == "CURRENT"] == ["v2.30"]
    assert {v["status"] for v in versions[:-1]} == {"SUPPORTED"}
    assert len(versions) == 31


def test_sub_roots_answer_v2(http: Any) -> None:
    for path in ("/v2", "/v2.0", "/v2/", "/v2/lbaas", "/v2.0/lbaas", "/v2/octavia"):
        resp = http.get(path)
        assert (resp.status_code, resp.json()) == (200, "v2"), path


# --- routing-level errors: WebOb's code/title/description ----------------------------------


def test_unknown_routes_and_methods(alice: Client) -> None:
    resp = alice.get("/v2/lbaas/nothing-here")
    assert resp.status_code == 404
    assert resp.json() == {"code": 404, "title": "Not Found", "description": ""}
    assert alice.get("/nothing-here").json() == {
        "code": 404,
        "title": "Not Found",
        "description": None,
    }
    resp = alice.request("PATCH", LBS)
    assert resp.status_code == 405
    assert resp.json() == {"code": 405, "title": "Method Not Allowed", "description": ""}
    assert "GET" in resp.headers["allow"]
    # An object that does not exist is the controller's answer: WSME's shape.
    assert set(alice.get(f"{LBS}/{'0' * 8}-0000-4000-8000-{'0' * 12}").json()) == {
        "faultcode",
        "faultstring",
        "debuginfo",
    }


# --- list parameters -----------------------------------------------------------------------


def test_bad_sort_direction_and_limit_are_routing_errors(alice: Client) -> None:
    resp = alice.get(f"{LBS}?sort=name:UP")
    assert resp.status_code == 400
    assert resp.json() == {
        "code": 400,
        "title": "Bad Request",
        "description": "Supplied sort direction 'up' is not valid.",
    }
    resp = alice.get(f"{LBS}?sort_key=name&sort_dir=sideways")
    assert resp.json()["description"] == "Supplied sort direction 'sideways' is not valid."
    resp = alice.get(f"{LBS}?limit=many")
    assert resp.status_code == 400
    assert resp.json()["description"] == "Supplied pagination limit 'many' is not valid."
    resp = alice.get(f"{LBS}?sort=colour")
    assert resp.status_code == 400
    assert resp.json()["faultstring"] == "Supplied sort key 'colour' is not valid."


def test_unknown_marker_and_filter_are_400(alice: Client, subnet_id: str) -> None:
    create_lb(alice, subnet_id)
    for marker in ("nothing", "00000000-1111-4222-8333-444444444444"):
        resp = alice.get(f"{LBS}?marker={marker}")
        assert resp.status_code == 400
        assert resp.json()["faultstring"] == f"Supplied pagination marker '{marker}' is not valid."
    resp = alice.get(f"{LBS}?colour=blue")
    assert resp.status_code == 400
    assert resp.json()["faultstring"] == "One or more arguments are either duplicate or invalid"


def test_links_are_built_as_octavia_builds_them(alice: Client, subnet_id: str) -> None:
    ids = [create_lb(alice, subnet_id, name=f"lb{i}")["id"] for i in range(3)]
    page = alice.get(f"{LBS}?limit=2&sort=name:asc&fields=id").json()
    assert [lb["id"] for lb in page["loadbalancers"]] == ids[:2]
    (nxt,) = page["loadbalancers_links"]
    assert nxt["rel"] == "next"
    assert nxt["href"] == (f"http://testserver{LBS}?limit=2&sort=name:asc&marker={ids[1]}")
    last = alice.get(nxt["href"].removeprefix("http://testserver") + "&fields=id").json()
    assert [lb["id"] for lb in last["loadbalancers"]] == ids[2:]
    # A page with a marker links back; a page that is not full has no next link.
    assert [link["rel"] for link in last["loadbalancers_links"]] == ["previous"]
    assert last["loadbalancers_links"][0]["href"].endswith(f"&marker={ids[2]}&page_reverse=True")
    # A full last page still links to a next (empty) page, as in Octavia.
    full = alice.get(f"{LBS}?limit=3").json()
    assert [link["rel"] for link in full["loadbalancers_links"]] == ["next"]


def test_limit_below_one_means_no_limit(alice: Client, subnet_id: str) -> None:
    for _ in range(2):
        create_lb(alice, subnet_id)
    for limit in ("0", "-3", "infinite"):
        page = alice.get(f"{LBS}?limit={limit}").json()
        assert len(page["loadbalancers"]) == 2 and page["loadbalancers_links"] == []


# --- input Octavia accepts ------------------------------------------------------------------


def test_control_characters_in_names_and_descriptions(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id, name="tab\there", description="line one\nline two\x07")
    shown = alice.get(f"{LBS}/{lb['id']}").json()["loadbalancer"]
    assert (shown["name"], shown["description"]) == ("tab\there", "line one\nline two\x07")
    listener = create_listener(alice, lb["id"], name="a\rb")
    assert listener["name"] == "a\rb"
    # A NUL fits in no PostgreSQL text column: the only refusal.
    resp = alice.post(LBS, {"loadbalancer": {"vip_subnet_id": subnet_id, "name": "a\x00b"}})
    assert resp.status_code == 400 and "NUL" in resp.json()["faultstring"]


def test_tags_with_commas_round_trip_and_filter(alice: Client, subnet_id: str) -> None:
    a = create_lb(alice, subnet_id, name="a", tags=["x,y", "z", "\x1b;"])
    create_lb(alice, subnet_id, name="b", tags=["x", "y"])
    assert alice.get(f"{LBS}/{a['id']}").json()["loadbalancer"]["tags"] == ["\x1b;", "x,y", "z"]

    def names(query: str) -> list[str]:
        found = alice.get(f"{LBS}?{query}").json()["loadbalancers"]
        return sorted(lb["name"] for lb in found)

    # Filters split on commas, as Octavia's do: "x,y" looks for x and y, not the tag "x,y".
    assert names("tags=x,y") == ["b"]
    assert names("tags=z") == ["a"]
    assert names("tags=%1B;") == ["a"]  # the escape character itself is plain text
    assert names("not-tags-any=x") == ["a"]


def test_tags_stored_before_commas_were_allowed_still_read(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    lb = create_lb(alice, subnet_id, name="old")
    with session_factory() as session:
        session.execute(
            text("UPDATE load_balancers SET tags = :tags WHERE id = :id"),
            {"tags": ",blue,50%,a_b,", "id": lb["id"]},
        )
        session.commit()
    shown = alice.get(f"{LBS}/{lb['id']}").json()["loadbalancer"]
    assert shown["tags"] == ["blue", "50%", "a_b"]
    found = alice.get(f"{LBS}?tags=50%25&tags=a_b").json()["loadbalancers"]
    assert [x["id"] for x in found] == [lb["id"]]


def test_health_monitor_delay_and_timeout_zero(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    pool = create_pool(alice, lb["id"], protocol="TCP")
    hm = create_hm(alice, pool["id"], type="TCP", delay=0, timeout=0)
    assert (hm["delay"], hm["timeout"]) == (0, 0)


def _policy(alice: Client, subnet_id: str) -> str:
    lb = create_lb(alice, subnet_id)
    listener = create_listener(alice, lb["id"])
    body = {"l7policy": {"listener_id": listener["id"], "action": "REJECT"}}
    resp = alice.post("/v2/lbaas/l7policies", body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["l7policy"]["id"])


def test_l7_values_with_apostrophes(alice: Client, subnet_id: str) -> None:
    policy_id = _policy(alice, subnet_id)
    accepted: list[dict[str, Any]] = [
        {"type": "HEADER", "compare_type": "CONTAINS", "key": "X-Note", "value": "it's"},
        {"type": "HEADER", "compare_type": "EQUAL_TO", "key": "X-Q", "value": '"it\'s\ta b"'},
        {"type": "COOKIE", "compare_type": "EQUAL_TO", "key": "c", "value": "o'clock"},
        {"type": "PATH", "compare_type": "REGEX", "value": "^/it's/"},
        {"type": "SSL_DN_FIELD", "compare_type": "EQUAL_TO", "key": "O", "value": "O'Brien"},
    ]
    for rule in accepted:
        resp = alice.post(f"/v2/lbaas/l7policies/{policy_id}/rules", {"rule": rule})
        assert resp.status_code == 201, (rule, resp.text)
        assert resp.json()["rule"]["value"] == rule["value"]


# --- fields Octavia's types answer with -----------------------------------------------------


def test_tenant_id_beside_project_id_everywhere(alice: Client, subnet_id: str) -> None:
    """Octavia's BaseMeta gives every type with a project_id a tenant_id too, nested
    objects of the fully populated create included."""
    lb = create_lb(alice, subnet_id)
    pool = create_pool(alice, lb["id"])
    objects = [
        lb,
        create_listener(alice, lb["id"]),
        pool,
        create_member(alice, pool["id"]),
        create_hm(alice, pool["id"]),
    ]
    for obj in objects:
        assert obj["tenant_id"] == obj["project_id"], obj
    full = alice.post(
        LBS,
        {
            "loadbalancer": {
                "vip_subnet_id": subnet_id,
                "vip_address": "198.51.100.40",
                "listeners": [{"protocol": "HTTP", "protocol_port": 80}],
                "pools": [
                    {
                        "name": "p",
                        "protocol": "HTTP",
                        "lb_algorithm": "ROUND_ROBIN",
                        "members": [{"address": "192.0.2.1", "protocol_port": 80}],
                    }
                ],
            }
        },
    ).json()["loadbalancer"]
    nested = [full, full["listeners"][0], full["pools"][0], full["pools"][0]["members"][0]]
    assert {obj["tenant_id"] for obj in nested} == {full["project_id"]}
    listed = alice.get(f"{LBS}?fields=project_id&fields=tenant_id").json()["loadbalancers"]
    assert {tuple(sorted(x)) for x in listed} == {("project_id", "tenant_id")}


def test_status_tree_pool_without_a_monitor_says_null(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    listener = create_listener(alice, lb["id"])
    create_pool(alice, listener_id=listener["id"])
    tree = alice.get(f"{LBS}/{lb['id']}/status").json()["statuses"]["loadbalancer"]
    (pool,) = tree["listeners"][0]["pools"]
    assert pool["health_monitor"] is None


def test_collections_are_served_without_the_lbaas_prefix_too(alice: Client, subnet_id: str) -> None:
    """Octavia mounts its v2 collections at /v2 as well as /v2/lbaas (and /v2.0)."""
    lb = create_lb(alice, subnet_id, name="bare")
    for root in ("/v2", "/v2.0"):
        assert (
            alice.get(f"{root}/loadbalancers/{lb['id']}").json()["loadbalancer"]
            == (alice.get(f"{LBS}/{lb['id']}").json()["loadbalancer"])
        )
        assert [x["name"] for x in alice.get(f"{root}/loadbalancers").json()["loadbalancers"]] == [
            "bare"
        ]
        # Octavia's list rules hold there too: an unknown filter is refused.
        assert alice.get(f"{root}/loadbalancers?colour=blue").status_code == 400
    listener = _create(alice, "/v2/listeners", "listener", lb["id"])
    assert alice.get(f"/v2/lbaas/listeners/{listener['id']}").status_code == 200
    assert alice.get("/v2/quotas").status_code == 200
    assert alice.get("/v2/nothing-here").status_code == 404


def _create(client: Client, path: str, key: str, lb_id: str) -> dict[str, Any]:
    body = {key: {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": 81}}
    resp = client.post(path, body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json()[key])


def test_tags_are_a_sorted_set_and_may_be_empty(alice: Client, subnet_id: str) -> None:
    """Octavia stores one row per (object, tag) and reads them back in key order."""
    lb = create_lb(alice, subnet_id, tags=["web", "", "Zed", "blue", "web"])
    assert lb["tags"] == ["", "Zed", "blue", "web"]
    assert alice.get(f"{LBS}/{lb['id']}").json()["loadbalancer"]["tags"] == lb["tags"]
    resp = alice.put(f"{LBS}/{lb['id']}", {"loadbalancer": {"tags": ["z", "a", "a"]}})
    assert resp.json()["loadbalancer"]["tags"] == ["a", "z"]
    lb = alice.get(f"{LBS}/{lb['id']}").json()["loadbalancer"]
    assert [x["id"] for x in alice.get(f"{LBS}?tags=a").json()["loadbalancers"]] == [lb["id"]]
