"""Protection profiles through the API: CRUD, refusals that change nothing, flavor defaults,
an operator's override, under-attack mode (desired state, events) and the tenant's view."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openha import hosts
from openha.api import limittrips
from openha.controller import snapshot
from openha.db import transaction
from openha.models import (
    Event,
    Flavor,
    FlavorProfile,
    Instance,
    LoadBalancer,
    ProtectionProfile,
)
from tests.api.factories import create_lb
from tests.conftest import Client

PROFILES = "/v2/manage/protection-profiles"


def make_profile(admin: Client, name: str = "default", **fields: Any) -> dict[str, Any]:
    body = {"name": name, "request_rate": 100, "max_connections": 50, **fields}
    resp = admin.post(PROFILES, {"protection_profile": body})
    assert resp.status_code == 201, resp.text
    return resp.json()["protection_profile"]


def rows(sessions: sessionmaker[Session]) -> list[tuple[str, str, str]]:
    with sessions() as s:
        return [
            (p.name, p.description, json.dumps(p.settings, sort_keys=True))
            for p in s.scalars(select(ProtectionProfile).order_by(ProtectionProfile.name))
        ]


def generation(sessions: sessionmaker[Session], lb_id: str) -> int:
    with sessions() as s:
        lb = s.get(LoadBalancer, lb_id)
        assert lb is not None
        return lb.desired_generation


def test_profile_crud(admin: Client) -> None:
    made = make_profile(
        admin,
        deny=["198.51.100.7/24", "2001:db8::1"],
        path_limits=[{"path_prefix": "/login", "request_rate": 5}],
        action="tarpit",
    )
    assert made["deny"] == ["198.51.100.0/24", "2001:db8::1/128"]  # normalised
    assert made["rate_period"] == 10 and made["action"] == "tarpit"
    assert admin.get(f"{PROFILES}/{made['id']}").json()["protection_profile"] == made
    assert [p["id"] for p in admin.get(PROFILES).json()["protection_profiles"]] == [made["id"]]
    again = admin.post(PROFILES, {"protection_profile": {"name": "default"}})
    assert again.status_code == 409

    changed = admin.put(f"{PROFILES}/{made['id']}", {"protection_profile": {"request_rate": 7}})
    assert changed.status_code == 200, changed.text
    body = changed.json()["protection_profile"]
    assert body["request_rate"] == 7 and body["max_connections"] == 50  # the rest kept
    off = admin.put(f"{PROFILES}/{made['id']}", {"protection_profile": {"request_rate": None}})
    assert off.json()["protection_profile"]["request_rate"] is None

    assert admin.delete(f"{PROFILES}/{made['id']}").status_code == 204
    assert admin.get(f"{PROFILES}/{made['id']}").status_code == 404
    assert admin.delete(f"{PROFILES}/{made['id']}").status_code == 404


# Values that would break out of a map line, a token or a config line if written as they are.
HOSTILE: list[dict[str, Any]] = [
    {"name": "two words"},
    {"name": "evil\nnewline"},
    {"name": "quote'd"},
    {"name": 'dq"x'},
    {"name": ""},
    {"path_limits": [{"path_prefix": "/a b", "request_rate": 1}]},
    {"path_limits": [{"path_prefix": "/a\nhttp-request deny", "request_rate": 1}]},
    {"path_limits": [{"path_prefix": "/a'b", "request_rate": 1}]},
    {"path_limits": [{"path_prefix": '/a"b', "request_rate": 1}]},
    {"path_limits": [{"path_prefix": "/a#comment", "request_rate": 1}]},
    {"path_limits": [{"path_prefix": "/a\\b", "request_rate": 1}]},
    {"path_limits": [{"path_prefix": "relative", "request_rate": 1}]},
    {"path_limits": [{"path_prefix": "/x", "request_rate": 1}] * 2},
    {"deny": ["10.0.0.0/8\n192.0.2.0/24"]},
    {"deny": ["10.0.0.0/8 1"]},
    {"deny": [" 10.0.0.1"]},
    {"allow": ["not-a-cidr"]},
    {"allow": ["10.0.0.1'"]},
    {"action": "drop everything"},
    {"request_rate": 0},
    {"request_rate": 10**9},
    {"request_rate": "5\n"},
    {"timeout_http_request": 5},
    {"retry_after": "10; rm"},
    {"unknown_field": 1},
]


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_values_are_refused_and_change_nothing(
    admin: Client, session_factory: sessionmaker[Session], bad: dict[str, Any]
) -> None:
    made = make_profile(admin, "keep")
    before = rows(session_factory)
    create = admin.post(PROFILES, {"protection_profile": {"name": "fresh", **bad}})
    assert create.status_code == 400, create.text
    update = admin.put(f"{PROFILES}/{made['id']}", {"protection_profile": bad})
    assert update.status_code == 400, update.text
    assert rows(session_factory) == before


def test_an_lb_override_under_attack_mode_and_the_tenants_view(
    admin: Client,
    alice: Client,
    bob: Client,
    subnet_id: str,
    session_factory: sessionmaker[Session],
) -> None:
    base = make_profile(admin, "base", request_rate=100)
    attack = make_profile(admin, "attack", request_rate=5, deny=["203.0.113.0/24"])
    lb = create_lb(alice, subnet_id)
    tenant_path = f"/v2/lbaas/loadbalancers/{lb['id']}/protection"
    assert alice.get(tenant_path).json()["protection"]["profile"] is None
    assert bob.get(tenant_path).status_code == 403

    gen = generation(session_factory, lb["id"])
    put = admin.put(f"/v2/manage/loadbalancers/{lb['id']}/protection", {"profile": "base"})
    assert put.status_code == 200, put.text
    assert put.json()["protection"]["source"] == "loadbalancer"
    assert generation(session_factory, lb["id"]) == gen + 1
    seen = alice.get(tenant_path).json()["protection"]
    assert seen["profile"]["id"] == base["id"] and seen["under_attack"] is False
    assert seen["effective"]["request_rate"] == 100

    bad = admin.post(f"/v2/manage/loadbalancers/{lb['id']}/protect", {"profile": "no such"})
    assert bad.status_code == 400
    missing = admin.post(f"/v2/manage/loadbalancers/{lb['id']}/protect", {"profile": "nosuch"})
    assert missing.status_code == 400
    assert generation(session_factory, lb["id"]) == gen + 1

    on = admin.post(f"/v2/manage/loadbalancers/{lb['id']}/protect", {"profile": "attack"})
    assert on.status_code == 202, on.text
    view = on.json()["protection"]
    assert view["under_attack"] is True and view["under_attack_profile"]["id"] == attack["id"]
    assert view["effective"]["request_rate"] == 5
    assert view["effective"]["deny"] == ["203.0.113.0/24"]
    assert generation(session_factory, lb["id"]) == gen + 2
    # Desired state: the controller's snapshot renders the maps from the attack profile.
    with session_factory() as s:
        spec = snapshot.build(s, lb["id"], None)
    assert spec.protection is not None and spec.protection.request_rate == 100
    assert spec.protection_runtime is not None and spec.protection_runtime.request_rate == 5
    # Repeating changes nothing; deleting a profile in use is refused.
    admin.post(f"/v2/manage/loadbalancers/{lb['id']}/protect", {"profile": attack["id"]})
    assert generation(session_factory, lb["id"]) == gen + 2
    assert admin.delete(f"{PROFILES}/{attack['id']}").status_code == 409

    off = admin.delete(f"/v2/manage/loadbalancers/{lb['id']}/protect")
    assert off.status_code == 200 and off.json()["protection"]["under_attack"] is False
    assert generation(session_factory, lb["id"]) == gen + 3
    with session_factory() as s:
        assert snapshot.build(s, lb["id"], None).protection_runtime is None
        kinds = list(
            s.scalars(
                select(Event.kind).where(Event.load_balancer_id == lb["id"]).order_by(Event.id)
            )
        )
    assert kinds[-3:] == [
        "loadbalancer.protection_changed",
        "loadbalancer.under_attack",
        "loadbalancer.under_attack_cleared",
    ]
    assert admin.delete(f"{PROFILES}/{attack['id']}").status_code == 204
    back = admin.put(f"/v2/manage/loadbalancers/{lb['id']}/protection", {"profile": None})
    assert back.json()["protection"]["profile"] is None


def test_a_flavor_names_the_default_profile(
    admin: Client, alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    profile = make_profile(admin, "flavored", connection_rate=30)
    fp = admin.post(
        "/v2/lbaas/flavorprofiles",
        {
            "flavorprofile": {
                "name": "p",
                "provider_name": "haproxy",
                "flavor_data": json.dumps({"protection_profile": "flavored"}),
            }
        },
    )
    assert fp.status_code == 201, fp.text
    hostile = admin.post(
        "/v2/lbaas/flavorprofiles",
        {
            "flavorprofile": {
                "name": "h",
                "provider_name": "haproxy",
                "flavor_data": json.dumps({"protection_profile": "x\ny"}),
            }
        },
    )
    assert hostile.status_code == 400
    flavor = admin.post(
        "/v2/lbaas/flavors",
        {"flavor": {"name": "guarded", "flavor_profile_id": fp.json()["flavorprofile"]["id"]}},
    ).json()["flavor"]
    lb = create_lb(alice, subnet_id, flavor_id=flavor["id"])
    seen = alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}/protection").json()["protection"]
    assert seen["source"] == "flavor" and seen["profile"]["id"] == profile["id"]
    with session_factory() as s:
        spec = snapshot.build(s, lb["id"], None)
    assert spec.protection is not None and spec.protection.connection_rate == 30
    # A flavor's default cannot be deleted; a change to it is pushed to its LBs.
    assert admin.delete(f"{PROFILES}/{profile['id']}").status_code == 409
    gen = generation(session_factory, lb["id"])
    admin.put(f"{PROFILES}/{profile['id']}", {"protection_profile": {"connection_rate": 9}})
    assert generation(session_factory, lb["id"]) == gen + 1
    renamed = admin.put(f"{PROFILES}/{profile['id']}", {"protection_profile": {"name": "other"}})
    assert renamed.status_code == 409


def test_limit_trips_reported_by_heartbeats_are_rate_limited_events(
    http: Any, alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    """A rise in an instance's trips is an event, one per LB per interval however many
    beats say it; trips are counters, not state: they queue no observation."""
    with transaction(session_factory) as s:
        secret = hosts.enroll(s, "trip-host", "az1")
    auth = {"Authorization": f"Bearer {secret}"}
    host_id = http.post(
        "/v2/agent/register",
        headers=auth,
        json={"name": "trip-host", "management_url": "http://127.0.0.1:1", "agent_secret": "s"},
    ).json()["host_id"]
    lb = create_lb(alice, subnet_id)
    with transaction(session_factory) as s:
        inst = Instance(load_balancer_id=lb["id"], host_id=host_id, applied_generation=1)
        s.add(inst)
        s.flush()
        inst_id = inst.id

    def beat(trips: int | None) -> None:
        status = {"instance_id": inst_id, "applied_generation": 1, "haproxy_running": True}
        resp = http.post(
            "/v2/agent/heartbeat",
            headers=auth,
            json={
                "host_id": host_id,
                "name": "trip-host",
                "instances": [{**status, "limit_trips": trips}],
            },
        )
        assert resp.status_code == 200, resp.text

    def tripped() -> list[Event]:
        with session_factory() as s:
            return list(
                s.scalars(select(Event).where(Event.kind == limittrips.KIND).order_by(Event.id))
            )

    beat(0)
    with session_factory() as s:
        lb_row = s.get(LoadBalancer, lb["id"])
        assert lb_row is not None
        health_generation = lb_row.health_generation
    assert tripped() == []
    beat(40)
    beat(90)
    beat(150)
    events_ = tripped()
    assert len(events_) == 1
    assert events_[0].load_balancer_id == lb["id"] and events_[0].details["trips"] == 40
    with session_factory() as s:
        lb_row = s.get(LoadBalancer, lb["id"])
        assert lb_row is not None and lb_row.health_generation == health_generation
    assert limittrips.gained({"limit_trips": 5}, {"limit_trips": 150}) == 5  # a new process
    assert limittrips.gained({"limit_trips": 5}, {}) == 0  # the first report is a baseline


def flavor_profile(admin: Client, name: str, data: dict[str, Any]) -> Any:
    return admin.post(
        "/v2/lbaas/flavorprofiles",
        {
            "flavorprofile": {
                "name": name,
                "provider_name": "haproxy",
                "flavor_data": json.dumps(data),
            }
        },
    )


def flavor_profile_rows(sessions: sessionmaker[Session]) -> list[tuple[str, str]]:
    with sessions() as s:
        return [
            (p.name, p.flavor_data)
            for p in s.scalars(select(FlavorProfile).order_by(FlavorProfile.id))
        ]


def test_a_flavor_profile_cannot_name_a_missing_profile(
    admin: Client, session_factory: sessionmaker[Session]
) -> None:
    """Naming no profile would silently mean no protection: a 400 that changes nothing."""
    made = make_profile(admin, "real")
    dangling = flavor_profile(admin, "dangling", {"protection_profile": "ghost"})
    assert dangling.status_code == 400, dangling.text
    assert "ghost" in dangling.json()["faultstring"]
    assert "Protection Profile" in dangling.json()["faultstring"]
    assert flavor_profile_rows(session_factory) == []

    by_name = flavor_profile(admin, "by-name", {"protection_profile": "real"})
    by_id = flavor_profile(admin, "by-id", {"protection_profile": made["id"]})
    assert by_name.status_code == 201 and by_id.status_code == 201, by_name.text + by_id.text
    before = flavor_profile_rows(session_factory)
    url = f"/v2/lbaas/flavorprofiles/{by_name.json()['flavorprofile']['id']}"
    ghost = json.dumps({"protection_profile": "ghost"})
    changed = admin.put(url, {"flavorprofile": {"flavor_data": ghost}})
    assert changed.status_code == 400, changed.text
    assert "ghost" in changed.json()["faultstring"]
    assert flavor_profile_rows(session_factory) == before
    fine = admin.put(url, {"flavorprofile": {"flavor_data": json.dumps({"access_log": "none"})}})
    assert fine.status_code == 200, fine.text


def test_a_dangling_reference_from_older_data_is_refused_at_flavor_and_lb_create(
    admin: Client, alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    """Flavor data written before references were checked (or by hand) may name no
    profile: a flavor cannot be made from it, and a load balancer cannot use it."""
    make_profile(admin, "soon-gone")
    fp = flavor_profile(admin, "older", {"protection_profile": "soon-gone"}).json()["flavorprofile"]
    flavor = admin.post(
        "/v2/lbaas/flavors", {"flavor": {"name": "older", "flavor_profile_id": fp["id"]}}
    )
    assert flavor.status_code == 201, flavor.text
    with transaction(session_factory) as s:  # what a row from before the check looks like
        row = s.get(FlavorProfile, fp["id"])
        assert row is not None
        row.flavor_data = json.dumps({"protection_profile": "gone"})
    again = admin.post(
        "/v2/lbaas/flavors", {"flavor": {"name": "again", "flavor_profile_id": fp["id"]}}
    )
    assert again.status_code == 400, again.text
    assert "gone" in again.json()["faultstring"]
    lb = alice.post(
        "/v2/lbaas/loadbalancers",
        {"loadbalancer": {"vip_subnet_id": subnet_id, "flavor_id": flavor.json()["flavor"]["id"]}},
    )
    assert lb.status_code == 400, lb.text
    assert "gone" in lb.json()["faultstring"]
    with session_factory() as s:
        assert s.scalars(select(LoadBalancer)).first() is None
        assert [f.name for f in s.scalars(select(Flavor))] == ["older"]


def test_deleting_a_profile_in_use_is_a_409_naming_its_users(
    admin: Client, alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    used = make_profile(admin, "used")
    url = f"{PROFILES}/{used['id']}"
    # Named by id by a flavor profile no flavor uses yet: still a user.
    fp = flavor_profile(admin, "by-id", {"protection_profile": used["id"]}).json()["flavorprofile"]
    refused = admin.delete(url)
    assert refused.status_code == 409, refused.text
    assert fp["id"] in refused.json()["faultstring"]
    flavor = admin.post(
        "/v2/lbaas/flavors", {"flavor": {"name": "f", "flavor_profile_id": fp["id"]}}
    ).json()["flavor"]
    refused = admin.delete(url)
    assert refused.status_code == 409
    assert fp["id"] in refused.json()["faultstring"]
    assert flavor["id"] in refused.json()["faultstring"]

    # Free the flavor profile; an LB's override and under-attack mode are users too.
    admin.delete(f"/v2/lbaas/flavors/{flavor['id']}")
    freed = admin.put(
        f"/v2/lbaas/flavorprofiles/{fp['id']}", {"flavorprofile": {"flavor_data": "{}"}}
    )
    assert freed.status_code == 200, freed.text
    lb = create_lb(alice, subnet_id)
    admin.post(f"/v2/manage/loadbalancers/{lb['id']}/protect", {"profile": "used"})
    refused = admin.delete(url)
    assert refused.status_code == 409
    message = refused.json()["faultstring"]
    assert lb["id"] in message and fp["id"] not in message
    admin.delete(f"/v2/manage/loadbalancers/{lb['id']}/protect")
    admin.put(f"/v2/manage/loadbalancers/{lb['id']}/protection", {"profile": used["id"]})
    assert lb["id"] in admin.delete(url).json()["faultstring"]
    assert rows(session_factory)[0][0] == "used"  # nothing changed by the refusals
    admin.put(f"/v2/manage/loadbalancers/{lb['id']}/protection", {"profile": None})
    assert admin.delete(url).status_code == 204
