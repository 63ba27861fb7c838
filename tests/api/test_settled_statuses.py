"""Operating statuses as the API and the controller's settling write leave them.

Octavia's API writes an object's first operating status (db/prepare.py), and its
controller worker sets the final one in the write that makes the object ACTIVE
(Mark{HealthMonitor,L7Policy,L7Rule}ActiveInDB) or that removes a health monitor
(the pool's members back to NO_MONITOR). Observation (heartbeats) refines them
later. Here the reconciler runs one pass at a time and never observes, so what is
checked is exactly what the API and `Reconciler.finalize` write.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from openha.controller.reconciler import Reconciler
from openha.settings import Settings
from tests.api.factories import create_hm, create_lb, create_listener, create_member, create_pool
from tests.conftest import Client

L7 = "/v2/lbaas/l7policies"


@pytest.fixture
def settle(settings: Settings, session_factory: sessionmaker[Session], app: Any) -> Any:
    reconciler = Reconciler(settings, session_factory, app.state.providers)
    reconciler.liveness.beat()  # a controller that claims nothing before its first beat

    def until_idle() -> None:
        """Reconcile passes (apply with noop, finalize) until none is due; no observation."""
        for _ in range(50):
            if not reconciler.tick():
                return
        raise AssertionError("the reconciler did not settle")

    return until_idle


def _get(client: Client, path: str) -> dict[str, Any]:
    resp = client.get(path)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = next(iter(resp.json().values()))
    return body


def _statuses(client: Client, path: str) -> tuple[str, str]:
    body = _get(client, path)
    return body["provisioning_status"], body["operating_status"]


def test_members_are_no_monitor_unless_their_pool_has_one(
    alice: Client, subnet_id: str, settle: Any
) -> None:
    lb = create_lb(alice, subnet_id)
    pool = create_pool(alice, lb["id"])
    members = f"/v2/lbaas/pools/{pool['id']}/members"
    early = create_member(alice, pool["id"], address="192.0.2.11")
    disabled = create_member(alice, pool["id"], address="192.0.2.12", admin_state_up=False)
    assert early["operating_status"] == disabled["operating_status"] == "NO_MONITOR"
    settle()
    assert _statuses(alice, f"{members}/{early['id']}") == ("ACTIVE", "NO_MONITOR")
    # Disabled: OFFLINE in the write that makes it ACTIVE (HAProxy holds it in MAINT).
    assert _statuses(alice, f"{members}/{disabled['id']}") == ("ACTIVE", "OFFLINE")

    hm = create_hm(alice, pool["id"])
    assert hm["operating_status"] == "OFFLINE"
    late = create_member(alice, pool["id"], address="192.0.2.13")
    assert late["operating_status"] == "OFFLINE"  # checks will tell
    settle()
    # The monitor is ONLINE in the write that makes it ACTIVE; members wait for checks.
    assert _statuses(alice, f"/v2/lbaas/healthmonitors/{hm['id']}") == ("ACTIVE", "ONLINE")
    assert _statuses(alice, f"{members}/{early['id']}") == ("ACTIVE", "NO_MONITOR")
    assert _statuses(alice, f"{members}/{late['id']}") == ("ACTIVE", "OFFLINE")

    assert alice.delete(f"/v2/lbaas/healthmonitors/{hm['id']}").status_code == 204
    settle()
    for member in (early, disabled, late):
        assert _statuses(alice, f"{members}/{member['id']}") == ("ACTIVE", "NO_MONITOR")


def test_monitors_and_l7_objects_follow_their_admin_state(
    alice: Client, subnet_id: str, settle: Any
) -> None:
    lb = create_lb(alice, subnet_id)
    listener = create_listener(alice, lb["id"])
    pool = create_pool(alice, lb["id"])
    hm = create_hm(alice, pool["id"], admin_state_up=False)
    body = {"listener_id": listener["id"], "action": "REJECT"}
    on = alice.post(L7, {"l7policy": body}).json()["l7policy"]
    off = alice.post(L7, {"l7policy": {**body, "admin_state_up": False}}).json()["l7policy"]
    rule = {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/a"}
    rules = f"{L7}/{on['id']}/rules"
    rule_on = alice.post(rules, {"rule": rule}).json()["rule"]
    rule_off = alice.post(rules, {"rule": {**rule, "admin_state_up": False}}).json()["rule"]
    settle()
    assert _statuses(alice, f"/v2/lbaas/healthmonitors/{hm['id']}") == ("ACTIVE", "OFFLINE")
    assert _statuses(alice, f"{L7}/{on['id']}") == ("ACTIVE", "ONLINE")
    assert _statuses(alice, f"{L7}/{off['id']}") == ("ACTIVE", "OFFLINE")
    assert _statuses(alice, f"{rules}/{rule_on['id']}") == ("ACTIVE", "ONLINE")
    assert _statuses(alice, f"{rules}/{rule_off['id']}") == ("ACTIVE", "OFFLINE")

    # An update settles the new admin state the same way.
    alice.put(f"/v2/lbaas/healthmonitors/{hm['id']}", {"healthmonitor": {"admin_state_up": True}})
    alice.put(f"{L7}/{on['id']}", {"l7policy": {"admin_state_up": False}})
    settle()
    assert _statuses(alice, f"/v2/lbaas/healthmonitors/{hm['id']}") == ("ACTIVE", "ONLINE")
    assert _statuses(alice, f"{L7}/{on['id']}") == ("ACTIVE", "OFFLINE")


def test_statuses_the_controller_does_not_decide_stay_as_created(
    alice: Client, subnet_id: str, settle: Any
) -> None:
    """Load balancers, listeners and pools are OFFLINE until observed, as in Octavia;
    settling them ACTIVE is a write, so updated_at is set (Octavia's onupdate too)."""
    lb = create_lb(alice, subnet_id)
    assert lb["updated_at"] is None
    listener = create_listener(alice, lb["id"])
    pool = create_pool(alice, lb["id"])
    settle()
    for path in (
        f"/v2/lbaas/loadbalancers/{lb['id']}",
        f"/v2/lbaas/listeners/{listener['id']}",
        f"/v2/lbaas/pools/{pool['id']}",
    ):
        body = _get(alice, path)
        assert (body["provisioning_status"], body["operating_status"]) == ("ACTIVE", "OFFLINE")
        assert body["updated_at"] is not None


def test_updated_at_is_stamped_by_the_write_that_makes_objects_active(
    alice: Client, subnet_id: str, settle: Any
) -> None:
    """Octavia answers `updated_at: null` while an object is PENDING_CREATE, and a time
    once its controller made it ACTIVE (octavia-tempest-plugin parses it then)."""
    lb = create_lb(alice, subnet_id)
    assert lb["updated_at"] is None
    listener = create_listener(alice, lb["id"], protocol_port=80)
    pool = create_pool(alice, listener_id=listener["id"])
    member = create_member(alice, pool["id"])
    hm = create_hm(alice, pool["id"])
    settle()
    for path in (
        f"/v2/lbaas/loadbalancers/{lb['id']}",
        f"/v2/lbaas/listeners/{listener['id']}",
        f"/v2/lbaas/pools/{pool['id']}",
        f"/v2/lbaas/pools/{pool['id']}/members/{member['id']}",
        f"/v2/lbaas/healthmonitors/{hm['id']}",
    ):
        body = _get(alice, path)
        assert body["provisioning_status"] == "ACTIVE", path
        assert body["updated_at"] is not None, path


def test_lb_with_only_a_vip_network(
    alice: Client, admin: Client, subnet_id: str, settle: Any
) -> None:
    network_id = _get(admin, f"/v2.0/subnets/{subnet_id}")["network_id"]
    resp = alice.post("/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_network_id": network_id}})
    assert resp.status_code == 201, resp.text
    lb = resp.json()["loadbalancer"]
    assert lb["vip_network_id"] == network_id
    assert lb["vip_subnet_id"] == subnet_id
    assert lb["vip_port_id"] and lb["vip_address"]
    settle()
    shown = _get(alice, f"/v2/lbaas/loadbalancers/{lb['id']}")
    assert shown["provisioning_status"] == "ACTIVE"
    assert shown["vip_port_id"] == lb["vip_port_id"]


def test_provider_descriptions_have_no_commas(alice: Client) -> None:
    """Tempest reads `enabled_provider_drivers` as name:description,… (a DictOpt)."""
    providers = alice.get("/v2/lbaas/providers").json()["providers"]
    assert providers
    for provider in providers:
        assert "," not in provider["description"], provider
