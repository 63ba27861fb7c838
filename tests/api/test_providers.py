"""Providers: the installed drivers, and their flavor / availability zone capabilities."""

from __future__ import annotations

from tests.conftest import Client


def test_everyone_lists_providers(alice: Client, alice_reader: Client) -> None:
    for client in (alice, alice_reader):
        resp = client.get("/v2/lbaas/providers")
        assert resp.status_code == 200, resp.text
        providers = {p["name"]: p["description"] for p in resp.json()["providers"]}
        assert providers["noop"] == "The no-op provider: accepts everything and runs no data plane."


def test_provider_list_fields(alice: Client) -> None:
    resp = alice.get("/v2.0/lbaas/providers", params={"fields": "name"})
    assert resp.status_code == 200
    providers = resp.json()["providers"]
    assert {"name": "noop"} in providers
    assert all(set(p) == {"name"} for p in providers)


def test_flavor_capabilities(admin: Client) -> None:
    resp = admin.get("/v2/lbaas/providers/noop/flavor_capabilities")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "flavor_capabilities": [
            {
                "name": "loadbalancer_topology",
                "description": "The load balancer topology (ignored).",
            }
        ]
    }


def test_availability_zone_capabilities(admin: Client) -> None:
    resp = admin.get("/v2/lbaas/providers/noop/availability_zone_capabilities")
    assert resp.status_code == 200, resp.text
    caps = resp.json()["availability_zone_capabilities"]
    assert [c["name"] for c in caps] == ["compute_zone"]


def test_capability_filters_and_fields(admin: Client) -> None:
    url = "/v2/lbaas/providers/noop/flavor_capabilities"
    assert admin.get(url, params={"name": "loadbalancer_topology"}).json()[
        "flavor_capabilities"
    ] == [{"name": "loadbalancer_topology", "description": "The load balancer topology (ignored)."}]
    assert admin.get(url, params={"name": "nope"}).json()["flavor_capabilities"] == []
    assert admin.get(url, params={"description": "nope"}).json()["flavor_capabilities"] == []
    assert admin.get(url, params={"fields": "name"}).json()["flavor_capabilities"] == [
        {"name": "loadbalancer_topology"}
    ]


def test_capabilities_are_admin_only(alice: Client) -> None:
    for kind in ("flavor_capabilities", "availability_zone_capabilities"):
        resp = alice.get(f"/v2/lbaas/providers/noop/{kind}")
        assert resp.status_code == 403
        assert resp.json()["faultstring"] == "Policy does not allow this request to be performed."


def test_unknown_provider_is_400(admin: Client) -> None:
    for kind in ("flavor_capabilities", "availability_zone_capabilities"):
        resp = admin.get(f"/v2/lbaas/providers/bogus/{kind}")
        assert resp.status_code == 400
        assert resp.json()["faultstring"] == "Provider 'bogus' is not enabled."
