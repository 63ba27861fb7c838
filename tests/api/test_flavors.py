"""Flavor profiles and flavors: admin-only writes, provider validation, use by load balancers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.factories import create_lb
from tests.conftest import Client

TOPOLOGY = json.dumps({"loadbalancer_topology": "SINGLE"})


def create_profile(admin: Client, **extra: Any) -> dict[str, Any]:
    body = {"name": "single", "provider_name": "noop", "flavor_data": TOPOLOGY, **extra}
    resp = admin.post("/v2/lbaas/flavorprofiles", {"flavorprofile": body})
    assert resp.status_code == 201, resp.text
    return resp.json()["flavorprofile"]


def create_flavor(admin: Client, profile_id: str, **extra: Any) -> dict[str, Any]:
    body = {"name": "small", "flavor_profile_id": profile_id, **extra}
    resp = admin.post("/v2/lbaas/flavors", {"flavor": body})
    assert resp.status_code == 201, resp.text
    return resp.json()["flavor"]


# --- flavor profiles -------------------------------------------------------------------


def test_flavor_profile_crud(admin: Client) -> None:
    profile = create_profile(admin)
    assert profile["name"] == "single"
    assert profile["provider_name"] == "noop"
    assert profile["flavor_data"] == TOPOLOGY  # kept as the string that was sent
    url = f"/v2/lbaas/flavorprofiles/{profile['id']}"
    assert admin.get(url).json() == {"flavorprofile": profile}
    assert admin.get(url, params={"fields": "name"}).json() == {"flavorprofile": {"name": "single"}}

    listing = admin.get("/v2.0/lbaas/flavorprofiles").json()
    assert listing == {"flavorprofiles": [profile], "flavorprofile_links": []}

    resp = admin.put(url, {"flavorprofile": {"name": "renamed", "flavor_data": "{}"}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["flavorprofile"]["name"] == "renamed"
    assert resp.json()["flavorprofile"]["flavor_data"] == "{}"

    assert admin.delete(url).status_code == 204
    resp = admin.get(url)
    assert resp.status_code == 404
    assert resp.json()["faultstring"] == f"Flavor profile {profile['id']} not found."
    assert admin.delete(url).status_code == 404
    assert admin.put(url, {"flavorprofile": {"name": "x"}}).status_code == 404


def test_flavor_profiles_are_admin_only(admin: Client, alice: Client) -> None:
    profile = create_profile(admin)
    url = f"/v2/lbaas/flavorprofiles/{profile['id']}"
    body = {"flavorprofile": {"name": "x", "provider_name": "noop", "flavor_data": "{}"}}
    assert alice.get("/v2/lbaas/flavorprofiles").status_code == 403
    assert alice.get(url).status_code == 403
    assert alice.post("/v2/lbaas/flavorprofiles", body).status_code == 403
    assert alice.put(url, {"flavorprofile": {"name": "y"}}).status_code == 403
    assert alice.delete(url).status_code == 403
    assert admin.get(url).json()["flavorprofile"]["name"] == "single"


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"a string"', "42", ""])
def test_flavor_data_must_be_a_json_object(admin: Client, raw: str) -> None:
    body = {"name": "bad", "provider_name": "noop", "flavor_data": raw}
    resp = admin.post("/v2/lbaas/flavorprofiles", {"flavorprofile": body})
    assert resp.status_code == 400, resp.text
    assert resp.json()["faultstring"] == f"{raw} is not a valid option for flavor_data"


def test_flavor_data_as_an_object_is_400(admin: Client) -> None:
    # Octavia takes a JSON-encoded string, not a nested object.
    body = {"name": "bad", "provider_name": "noop", "flavor_data": {"loadbalancer_topology": "x"}}
    assert admin.post("/v2/lbaas/flavorprofiles", {"flavorprofile": body}).status_code == 400


def test_unsupported_flavor_key_is_400(admin: Client) -> None:
    body = {
        "name": "bad",
        "provider_name": "noop",
        "flavor_data": json.dumps({"compute_flavor": 1}),
    }
    resp = admin.post("/v2/lbaas/flavorprofiles", {"flavorprofile": body})
    assert resp.status_code == 400
    assert "compute_flavor" in resp.json()["faultstring"]
    assert admin.get("/v2/lbaas/flavorprofiles").json()["flavorprofiles"] == []


def test_unknown_provider_is_400(admin: Client) -> None:
    body = {"name": "bad", "provider_name": "bogus", "flavor_data": "{}"}
    resp = admin.post("/v2/lbaas/flavorprofiles", {"flavorprofile": body})
    assert resp.status_code == 400
    assert resp.json()["faultstring"] == "Provider 'bogus' is not enabled."


@pytest.mark.parametrize(
    "body",
    [
        {"provider_name": "noop", "flavor_data": "{}"},
        {"name": "x", "flavor_data": "{}"},
        {"name": "x", "provider_name": "noop"},
        {"name": "x", "provider_name": "noop", "flavor_data": "{}", "bogus": 1},
    ],
)
def test_flavor_profile_body_is_strict(admin: Client, body: dict[str, Any]) -> None:
    assert admin.post("/v2/lbaas/flavorprofiles", {"flavorprofile": body}).status_code == 400


def test_flavor_profile_update_is_validated(admin: Client) -> None:
    url = f"/v2/lbaas/flavorprofiles/{create_profile(admin)['id']}"
    for change in (
        {"flavor_data": "{oops"},
        {"flavor_data": json.dumps({"nope": 1})},
        {"provider_name": "bogus"},
        {"name": None},
        {"flavor_data": None},
    ):
        resp = admin.put(url, {"flavorprofile": change})
        assert resp.status_code == 400, (change, resp.text)
    assert admin.get(url).json()["flavorprofile"]["flavor_data"] == TOPOLOGY


def test_profile_in_use_cannot_change_or_go(admin: Client) -> None:
    profile = create_profile(admin)
    flavor = create_flavor(admin, profile["id"])
    url = f"/v2/lbaas/flavorprofiles/{profile['id']}"
    resp = admin.delete(url)
    assert resp.status_code == 409
    assert resp.json()["faultstring"] == (
        f"Flavor profile {profile['id']} is in use and cannot be modified."
    )
    assert admin.put(url, {"flavorprofile": {"flavor_data": "{}"}}).status_code == 409
    assert admin.put(url, {"flavorprofile": {"provider_name": "noop"}}).status_code == 409
    # The name is only a label: it may change while in use.
    assert admin.put(url, {"flavorprofile": {"name": "still-single"}}).status_code == 200
    assert admin.delete(f"/v2/lbaas/flavors/{flavor['id']}").status_code == 204
    assert admin.delete(url).status_code == 204


# --- flavors ---------------------------------------------------------------------------


def test_flavor_crud(admin: Client, alice: Client, alice_reader: Client) -> None:
    profile = create_profile(admin)
    flavor = create_flavor(admin, profile["id"], description="one instance")
    assert flavor["name"] == "small"
    assert flavor["description"] == "one instance"
    assert flavor["enabled"] is True
    assert flavor["flavor_profile_id"] == profile["id"]
    url = f"/v2/lbaas/flavors/{flavor['id']}"

    # Everyone reads flavors.
    for client in (admin, alice, alice_reader):
        assert client.get(url).json() == {"flavor": flavor}
        assert client.get("/v2/lbaas/flavors").json() == {"flavors": [flavor], "flavors_links": []}
    assert alice.get(url, params={"fields": "id,name"}).json() == {
        "flavor": {"id": flavor["id"], "name": "small"}
    }

    resp = admin.put(url, {"flavor": {"name": "tiny", "description": None, "enabled": False}})
    assert resp.status_code == 200, resp.text
    updated = resp.json()["flavor"]
    assert (updated["name"], updated["description"], updated["enabled"]) == ("tiny", "", False)
    assert alice.get("/v2/lbaas/flavors", params={"enabled": "false"}).json()["flavors"] == [
        updated
    ]
    assert alice.get("/v2/lbaas/flavors", params={"name": "small"}).json()["flavors"] == []

    assert admin.delete(url).status_code == 204
    resp = alice.get(url)
    assert resp.status_code == 404
    assert resp.json()["faultstring"] == f"Flavor {flavor['id']} not found."
    assert admin.put(url, {"flavor": {"name": "x"}}).status_code == 404
    assert admin.delete(url).status_code == 404


def test_flavor_writes_are_admin_only(admin: Client, alice: Client, alice_reader: Client) -> None:
    profile = create_profile(admin)
    flavor = create_flavor(admin, profile["id"])
    url = f"/v2/lbaas/flavors/{flavor['id']}"
    body = {"flavor": {"name": "mine", "flavor_profile_id": profile["id"]}}
    for client in (alice, alice_reader):
        assert client.post("/v2/lbaas/flavors", body).status_code == 403
        assert client.put(url, {"flavor": {"enabled": False}}).status_code == 403
        assert client.delete(url).status_code == 403
    assert admin.get(url).json()["flavor"]["enabled"] is True


def test_flavor_names_are_unique(admin: Client) -> None:
    profile = create_profile(admin)
    create_flavor(admin, profile["id"], name="small")
    other = create_flavor(admin, profile["id"], name="large")
    body = {"flavor": {"name": "small", "flavor_profile_id": profile["id"]}}
    resp = admin.post("/v2/lbaas/flavors", body)
    assert resp.status_code == 409
    assert resp.json()["faultstring"] == "A flavor of small already exists."
    resp = admin.put(f"/v2/lbaas/flavors/{other['id']}", {"flavor": {"name": "small"}})
    assert resp.status_code == 409
    # Renaming a flavor to its own name is no conflict.
    resp = admin.put(f"/v2/lbaas/flavors/{other['id']}", {"flavor": {"name": "large"}})
    assert resp.status_code == 200


def test_flavor_needs_an_existing_profile(admin: Client) -> None:
    body = {"flavor": {"name": "x", "flavor_profile_id": "00000000-0000-0000-0000-000000000000"}}
    resp = admin.post("/v2/lbaas/flavors", body)
    assert resp.status_code == 400
    assert "flavor_profile_id" in resp.json()["faultstring"]
    assert admin.post("/v2/lbaas/flavors", {"flavor": {"name": "x"}}).status_code == 400


def test_flavor_profile_cannot_be_changed_on_a_flavor(admin: Client) -> None:
    profile = create_profile(admin)
    flavor = create_flavor(admin, profile["id"])
    body = {"flavor": {"flavor_profile_id": create_profile(admin)["id"]}}
    assert admin.put(f"/v2/lbaas/flavors/{flavor['id']}", body).status_code == 400
    assert (
        admin.put(f"/v2/lbaas/flavors/{flavor['id']}", {"flavor": {"enabled": None}}).status_code
        == 400
    )


def test_flavor_list_sorts_and_paginates(admin: Client, alice: Client) -> None:
    profile = create_profile(admin)
    for name in ("c", "a", "b"):
        create_flavor(admin, profile["id"], name=name)
    page = alice.get("/v2/lbaas/flavors", params={"sort": "name:asc", "limit": 2}).json()
    assert [f["name"] for f in page["flavors"]] == ["a", "b"]
    (link,) = page["flavors_links"]
    assert link["rel"] == "next"
    rest = alice.get(link["href"]).json()
    assert [f["name"] for f in rest["flavors"]] == ["c"]


# --- flavors on load balancers ---------------------------------------------------------


def test_load_balancer_with_flavor(admin: Client, alice: Client, subnet_id: str) -> None:
    flavor = create_flavor(admin, create_profile(admin)["id"])
    lb = create_lb(alice, subnet_id, flavor_id=flavor["id"])
    assert lb["flavor_id"] == flavor["id"]
    assert lb["provider"] == "noop"

    resp = admin.delete(f"/v2/lbaas/flavors/{flavor['id']}")
    assert resp.status_code == 409
    assert resp.json()["faultstring"] == f"Flavor {flavor['id']} is in use and cannot be modified."


def test_disabled_or_unknown_flavor_is_400(admin: Client, alice: Client, subnet_id: str) -> None:
    flavor = create_flavor(admin, create_profile(admin)["id"], enabled=False)
    for flavor_id in (flavor["id"], "00000000-0000-0000-0000-000000000000"):
        resp = alice.post(
            "/v2/lbaas/loadbalancers",
            {"loadbalancer": {"vip_subnet_id": subnet_id, "flavor_id": flavor_id}},
        )
        assert resp.status_code == 400, resp.text
    assert alice.get("/v2/lbaas/loadbalancers").json()["loadbalancers"] == []


@pytest.mark.parametrize(
    "data",
    [{"cpu_weight": 0}, {"cpu_max": "half"}, {"memory_max_mb": 1.5}, {"pids_max": True}],
)
def test_bad_resource_walls_are_400_and_change_nothing(admin: Client, data: dict[str, Any]) -> None:
    body = {"name": "walls", "provider_name": "haproxy", "flavor_data": json.dumps(data)}
    resp = admin.post("/v2/lbaas/flavorprofiles", {"flavorprofile": body})
    assert resp.status_code == 400, resp.text
    assert next(iter(data)) in resp.json()["faultstring"]
    assert admin.get("/v2/lbaas/flavorprofiles").json()["flavorprofiles"] == []


def test_resource_walls_are_accepted_and_advertised(admin: Client) -> None:
    data = {"cpu_weight": 200, "cpu_max": 1.5, "memory_max_mb": 512, "pids_max": 256}
    body = {"name": "walls", "provider_name": "haproxy", "flavor_data": json.dumps(data)}
    resp = admin.post("/v2/lbaas/flavorprofiles", {"flavorprofile": body})
    assert resp.status_code == 201, resp.text
    caps = admin.get("/v2/lbaas/providers/haproxy/flavor_capabilities").json()
    names = {c["name"] for c in caps["flavor_capabilities"]}
    assert {"cpu_weight", "cpu_max", "memory_max_mb", "pids_max"} <= names
