"""Availability zone profiles and zones: admin-only writes, provider validation, use by LBs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.factories import create_lb
from tests.conftest import Client

ZONE_DATA = json.dumps({"compute_zone": "rack-1"})


def create_profile(admin: Client, **extra: Any) -> dict[str, Any]:
    body = {"name": "rack-1", "provider_name": "noop", "availability_zone_data": ZONE_DATA}
    body.update(extra)
    resp = admin.post("/v2/lbaas/availabilityzoneprofiles", {"availability_zone_profile": body})
    assert resp.status_code == 201, resp.text
    return resp.json()["availability_zone_profile"]


def create_zone(admin: Client, profile_id: str, **extra: Any) -> dict[str, Any]:
    body = {"name": "az1", "availability_zone_profile_id": profile_id, **extra}
    resp = admin.post("/v2/lbaas/availabilityzones", {"availability_zone": body})
    assert resp.status_code == 201, resp.text
    return resp.json()["availability_zone"]


# --- availability zone profiles --------------------------------------------------------


def test_profile_crud(admin: Client) -> None:
    profile = create_profile(admin)
    assert profile["provider_name"] == "noop"
    assert profile["availability_zone_data"] == ZONE_DATA
    url = f"/v2/lbaas/availabilityzoneprofiles/{profile['id']}"
    assert admin.get(url).json() == {"availability_zone_profile": profile}
    assert admin.get("/v2/lbaas/availabilityzoneprofiles").json() == {
        "availability_zone_profiles": [profile],
        "availability_zone_profile_links": [],
    }
    resp = admin.put(url, {"availability_zone_profile": {"name": "rack-one"}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["availability_zone_profile"]["name"] == "rack-one"
    assert admin.delete(url).status_code == 204
    resp = admin.get(url)
    assert resp.status_code == 404
    assert resp.json()["faultstring"] == (f"Availability Zone Profile {profile['id']} not found.")


def test_profiles_are_admin_only(admin: Client, alice: Client) -> None:
    profile = create_profile(admin)
    url = f"/v2/lbaas/availabilityzoneprofiles/{profile['id']}"
    body = {"name": "x", "provider_name": "noop", "availability_zone_data": "{}"}
    assert alice.get("/v2/lbaas/availabilityzoneprofiles").status_code == 403
    assert alice.get(url).status_code == 403
    assert (
        alice.post(
            "/v2/lbaas/availabilityzoneprofiles", {"availability_zone_profile": body}
        ).status_code
        == 403
    )
    assert alice.put(url, {"availability_zone_profile": {"name": "y"}}).status_code == 403
    assert alice.delete(url).status_code == 403


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        ("{nope", "{nope is not a valid option for availability_zone_data"),
        ("[]", "[] is not a valid option for availability_zone_data"),
        (json.dumps({"management_network": "x"}), "management_network"),
    ],
)
def test_profile_data_is_validated(admin: Client, raw: str, fault: str) -> None:
    body = {"name": "bad", "provider_name": "noop", "availability_zone_data": raw}
    resp = admin.post("/v2/lbaas/availabilityzoneprofiles", {"availability_zone_profile": body})
    assert resp.status_code == 400, resp.text
    assert fault in resp.json()["faultstring"]
    url = f"/v2/lbaas/availabilityzoneprofiles/{create_profile(admin)['id']}"
    resp = admin.put(url, {"availability_zone_profile": {"availability_zone_data": raw}})
    assert resp.status_code == 400


def test_profile_unknown_provider_is_400(admin: Client) -> None:
    body = {"name": "bad", "provider_name": "bogus", "availability_zone_data": "{}"}
    resp = admin.post("/v2/lbaas/availabilityzoneprofiles", {"availability_zone_profile": body})
    assert resp.status_code == 400
    assert resp.json()["faultstring"] == "Provider 'bogus' is not enabled."


def test_profile_in_use_cannot_change_or_go(admin: Client) -> None:
    profile = create_profile(admin)
    create_zone(admin, profile["id"])
    url = f"/v2/lbaas/availabilityzoneprofiles/{profile['id']}"
    resp = admin.delete(url)
    assert resp.status_code == 409
    assert "is in use" in resp.json()["faultstring"]
    change = {"availability_zone_profile": {"availability_zone_data": "{}"}}
    assert admin.put(url, change).status_code == 409
    assert admin.delete("/v2/lbaas/availabilityzones/az1").status_code == 204
    assert admin.put(url, change).status_code == 200
    assert admin.delete(url).status_code == 204


# --- availability zones ----------------------------------------------------------------


def test_zone_crud(admin: Client, alice: Client, alice_reader: Client) -> None:
    profile = create_profile(admin)
    zone = create_zone(admin, profile["id"], description="first rack")
    assert zone == {
        "name": "az1",
        "description": "first rack",
        "enabled": True,
        "availability_zone_profile_id": profile["id"],
    }
    url = "/v2/lbaas/availabilityzones/az1"
    for client in (admin, alice, alice_reader):
        assert client.get(url).json() == {"availability_zone": zone}
        assert client.get("/v2/lbaas/availabilityzones").json() == {
            "availability_zones": [zone],
            "availability_zones_links": [],
        }
    assert alice.get(url, params={"fields": "name"}).json() == {
        "availability_zone": {"name": "az1"}
    }

    resp = admin.put(url, {"availability_zone": {"description": "rack one", "enabled": False}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["availability_zone"]["enabled"] is False
    assert resp.json()["availability_zone"]["description"] == "rack one"
    # The name is the key and the profile is fixed: neither can be updated.
    assert admin.put(url, {"availability_zone": {"name": "az2"}}).status_code == 400
    body = {"availability_zone": {"availability_zone_profile_id": profile["id"]}}
    assert admin.put(url, body).status_code == 400

    assert admin.delete(url).status_code == 204
    resp = alice.get(url)
    assert resp.status_code == 404
    assert resp.json()["faultstring"] == "Availability Zone az1 not found."
    assert admin.delete(url).status_code == 404
    assert admin.put(url, {"availability_zone": {"enabled": True}}).status_code == 404


def test_zone_writes_are_admin_only(admin: Client, alice: Client, alice_reader: Client) -> None:
    profile = create_profile(admin)
    create_zone(admin, profile["id"])
    url = "/v2/lbaas/availabilityzones/az1"
    body = {"availability_zone": {"name": "az2", "availability_zone_profile_id": profile["id"]}}
    for client in (alice, alice_reader):
        assert client.post("/v2/lbaas/availabilityzones", body).status_code == 403
        assert client.put(url, {"availability_zone": {"enabled": False}}).status_code == 403
        assert client.delete(url).status_code == 403
    assert admin.get(url).json()["availability_zone"]["enabled"] is True


def test_zone_names_are_unique_and_need_a_profile(admin: Client) -> None:
    profile = create_profile(admin)
    create_zone(admin, profile["id"])
    body = {"name": "az1", "availability_zone_profile_id": profile["id"]}
    resp = admin.post("/v2/lbaas/availabilityzones", {"availability_zone": body})
    assert resp.status_code == 409
    assert resp.json()["faultstring"] == "A availability zone of az1 already exists."
    body = {"name": "az2", "availability_zone_profile_id": "missing"}
    resp = admin.post("/v2/lbaas/availabilityzones", {"availability_zone": body})
    assert resp.status_code == 400
    assert "availability_zone_profile_id" in resp.json()["faultstring"]
    body = {"name": "", "availability_zone_profile_id": profile["id"]}
    assert admin.post("/v2/lbaas/availabilityzones", {"availability_zone": body}).status_code == 400


def test_zone_list_paginates_by_name(admin: Client, alice: Client) -> None:
    profile = create_profile(admin)
    for name in ("az3", "az1", "az2"):
        create_zone(admin, profile["id"], name=name)
    page = alice.get("/v2/lbaas/availabilityzones", params={"limit": 2}).json()
    assert [z["name"] for z in page["availability_zones"]] == ["az1", "az2"]
    (link,) = page["availability_zones_links"]
    assert link["rel"] == "next" and "marker=az2" in link["href"]
    rest = alice.get(link["href"]).json()
    assert [z["name"] for z in rest["availability_zones"]] == ["az3"]
    back = alice.get(
        "/v2/lbaas/availabilityzones", params={"sort": "name:desc", "enabled": "true"}
    ).json()
    assert [z["name"] for z in back["availability_zones"]] == ["az3", "az2", "az1"]


# --- zones on load balancers -----------------------------------------------------------


def test_load_balancer_in_a_zone(admin: Client, alice: Client, subnet_id: str) -> None:
    profile = create_profile(admin)
    create_zone(admin, profile["id"])
    lb = create_lb(alice, subnet_id, availability_zone="az1")
    assert lb["availability_zone"] == "az1"
    resp = admin.delete("/v2/lbaas/availabilityzones/az1")
    assert resp.status_code == 409
    assert resp.json()["faultstring"] == "Availability Zone az1 is in use and cannot be modified."


def test_unknown_or_disabled_zone_is_400(admin: Client, alice: Client, subnet_id: str) -> None:
    profile = create_profile(admin)
    create_zone(admin, profile["id"], name="off", enabled=False)
    for zone in ("off", "nowhere"):
        resp = alice.post(
            "/v2/lbaas/loadbalancers",
            {"loadbalancer": {"vip_subnet_id": subnet_id, "availability_zone": zone}},
        )
        assert resp.status_code == 400, resp.text
        assert zone in resp.json()["faultstring"]
    assert alice.get("/v2/lbaas/loadbalancers").json()["loadbalancers"] == []
