"""Query strings never reach a 500: huge integers, NULL and boolean markers, odd bytes;
and a pagination marker is looked up only among the rows the caller may see."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.factories import create_lb, create_listener
from tests.conftest import Client

HUGE = "9223372036854775808"  # 2**63: one beyond what an integer column holds


def _walk(client: Client, path: str, query: str, limit: int = 1) -> list[str]:
    """Follow `next` links page by page; the ids in the order they came."""
    seen: list[str] = []
    url: str | None = f"{path}?limit={limit}&{query}"
    while url is not None:
        resp = client.get(url)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        items = body["loadbalancers"]
        seen += [i["id"] for i in items]
        following = [link for link in body["loadbalancers_links"] if link["rel"] == "next"]
        url = following[0]["href"] if following and items else None
        assert len(seen) <= 20, "pagination does not end"
    return seen


@pytest.mark.parametrize(
    "query",
    [
        f"protocol_port={HUGE}",
        f"protocol_port=-{HUGE}1",
        "protocol_port=" + "9" * 5000,
        f"connection_limit={HUGE}",
    ],
)
def test_integer_filter_beyond_64_bits_is_400(alice: Client, query: str) -> None:
    resp = alice.get(f"/v2/lbaas/listeners?{query}")
    assert resp.status_code == 400, resp.text
    assert "Invalid filter value" in resp.json()["faultstring"]


def test_integer_filter_at_the_64_bit_bounds_is_fine(alice: Client) -> None:
    for value in (str(2**63 - 1), str(-(2**63))):
        resp = alice.get(f"/v2/lbaas/listeners?protocol_port={value}")
        assert resp.status_code == 200, resp.text
        assert resp.json()["listeners"] == []


@pytest.mark.parametrize("direction", ["asc", "desc"])
@pytest.mark.parametrize("key", ["admin_state_up", "flavor_id", "availability_zone"])
def test_markers_page_through_booleans_and_nulls(
    alice: Client, subnet_id: str, key: str, direction: str
) -> None:
    """Every row once, in order, forwards and backwards, whatever the marker's value."""
    made = [
        create_lb(alice, subnet_id, name="a", admin_state_up=False)["id"],
        create_lb(alice, subnet_id, name="b")["id"],
        create_lb(alice, subnet_id, name="c", admin_state_up=False)["id"],
        create_lb(alice, subnet_id, name="d")["id"],
    ]
    query = f"sort_key={key}&sort_dir={direction}"
    whole = alice.get(f"/v2/lbaas/loadbalancers?{query}")
    assert whole.status_code == 200, whole.text
    expected = [lb["id"] for lb in whole.json()["loadbalancers"]]
    assert sorted(expected) == sorted(made)
    if key == "admin_state_up":
        states = [lb["admin_state_up"] for lb in whole.json()["loadbalancers"]]
        assert states == sorted(states, reverse=direction == "desc")

    assert _walk(alice, "/v2/lbaas/loadbalancers", query) == expected

    # Backwards from the last row: page_reverse gives the rows before it.
    resp = alice.get(
        f"/v2/lbaas/loadbalancers?{query}&marker={expected[-1]}&page_reverse=True&limit=10"
    )
    assert resp.status_code == 200, resp.text
    assert [lb["id"] for lb in resp.json()["loadbalancers"]] == expected[:-1]
    # Forwards from each row: exactly the rows after it.
    for i, marker in enumerate(expected):
        resp = alice.get(f"/v2/lbaas/loadbalancers?{query}&marker={marker}")
        assert resp.status_code == 200, resp.text
        assert [lb["id"] for lb in resp.json()["loadbalancers"]] == expected[i + 1 :]


def test_marker_of_another_project_is_an_unknown_marker(
    alice: Client, bob: Client, admin: Client, subnet_id: str
) -> None:
    mine = create_lb(alice, subnet_id, name="mine")["id"]
    theirs = create_lb(bob, subnet_id, name="theirs")["id"]
    unknown = "0" * 8 + "-0000-0000-0000-" + "0" * 12

    def answer(client: Client, marker: str) -> tuple[int, Any]:
        resp = client.get(f"/v2/lbaas/loadbalancers?marker={marker}&sort=name")
        body = resp.json()
        if "faultstring" in body:
            body["faultstring"] = body["faultstring"].replace(marker, "<marker>")
        return resp.status_code, body

    assert answer(alice, theirs) == answer(alice, unknown)
    assert answer(alice, theirs)[0] == 400
    assert answer(alice, mine)[0] == 200
    # Nested lists look markers up among what the caller may see too.
    listener = create_listener(bob, theirs)["id"]
    resp = alice.get(f"/v2/lbaas/listeners?marker={listener}")
    assert resp.status_code == 400, resp.text
    # An admin sees every project: any existing id is a marker.
    assert admin.get(f"/v2/lbaas/loadbalancers?marker={theirs}").status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        "name=%ED%A0%80",  # a lone surrogate, encoded as UTF-8 would if it could
        "name=%FF%FE",  # not UTF-8 at all
        "sort_key=%ED%A0%80",
        "marker=%ED%A0%80",
        "fields=%ED%A0%80",
        "tags=%ED%A0%80",
        "%ED%A0%80=x",
    ],
)
def test_undecodable_query_strings_never_fail(alice: Client, query: str) -> None:
    resp = alice.get(f"/v2/lbaas/loadbalancers?{query}")
    assert resp.status_code in (200, 400), resp.text
    resp.json()  # a JSON body whatever the answer
