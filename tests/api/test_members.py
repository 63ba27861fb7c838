"""Member resource: fields and defaults, address and subnet rules, duplicates, scoping to the
pool in the path, status machine, and the batch update with and without additive_only."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from openha.controller import snapshot
from openha.db import transaction
from openha.models import Member, Network, Quota, Subnet
from tests.api.factories import (
    POLICY_REFUSED,
    create_lb,
    create_listener,
    create_member,
    create_pool,
    wait_lb_active,
)
from tests.conftest import PROJECT_A, PROJECT_B, Client, wait_for

MEMBER_FIELDS = {
    "id",
    "name",
    "operating_status",
    "provisioning_status",
    "admin_state_up",
    "address",
    "protocol_port",
    "weight",
    "backup",
    "subnet_id",
    "project_id",
    "tenant_id",
    "created_at",
    "updated_at",
    "monitor_address",
    "monitor_port",
    "tags",
    "vnic_type",
}


def _pool(client: Client, subnet_id: str) -> dict[str, Any]:
    lb = create_lb(client, subnet_id)
    return create_pool(client, lb["id"])


def _members_url(pool: dict[str, Any]) -> str:
    return f"/v2/lbaas/pools/{pool['id']}/members"


def _private_subnet(session_factory: sessionmaker[Session], project: str, cidr: str) -> str:
    with transaction(session_factory) as s:
        net = Network(project_id=project, name="private", shared=False)
        s.add(net)
        s.flush()
        sub = Subnet(project_id=project, network_id=net.id, cidr=cidr)
        s.add(sub)
        s.flush()
        return sub.id


def test_create_fields_and_defaults(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    m = create_member(alice, pool["id"], name="web1", tags=["t"])
    assert set(m) == MEMBER_FIELDS
    assert m["provisioning_status"] == "PENDING_CREATE"
    assert m["operating_status"] == "NO_MONITOR"  # its pool has no monitor (Octavia)
    assert m["project_id"] == PROJECT_A
    assert (m["address"], m["protocol_port"], m["weight"], m["backup"]) == (
        "192.0.2.10",
        8080,
        1,
        False,
    )
    assert m["subnet_id"] is None and m["monitor_address"] is None and m["monitor_port"] is None
    assert m["vnic_type"] == "normal"
    assert (m["name"], m["tags"]) == ("web1", ["t"])
    assert alice.get(f"/v2/lbaas/pools/{pool['id']}").json()["pool"]["members"] == [{"id": m["id"]}]
    full = create_member(
        alice,
        pool["id"],
        address="2001:db8::0010",
        protocol_port=443,
        weight=0,
        backup=True,
        subnet_id=subnet_id,
        monitor_address="192.0.2.200",
        monitor_port=9000,
        request_sriov=True,
    )
    assert full["address"] == "2001:db8::10"  # normalized
    assert (full["weight"], full["backup"], full["subnet_id"]) == (0, True, subnet_id)
    assert (full["monitor_address"], full["monitor_port"]) == ("192.0.2.200", 9000)
    assert full["vnic_type"] == "direct"


def test_goes_active_and_online(alice: Client, subnet_id: str, controller: Any) -> None:
    pool = _pool(alice, subnet_id)
    lb_id = pool["loadbalancers"][0]["id"]
    m = create_member(alice, pool["id"])
    wait_lb_active(alice, lb_id)
    url = f"{_members_url(pool)}/{m['id']}"
    wait_for(lambda: alice.get(url).json()["member"]["provisioning_status"] == "ACTIVE")
    # No health monitor: the noop provider reports NO_MONITOR, as Octavia does.
    wait_for(lambda: alice.get(url).json()["member"]["operating_status"] == "NO_MONITOR")
    assert alice.get(f"/v2/lbaas/pools/{pool['id']}").json()["pool"]["provisioning_status"] == (
        "ACTIVE"
    )


CREATE_CASES: list[tuple[dict[str, Any], str, int]] = [
    ({"address": "not-an-ip"}, "address", 400),
    ({"address": "169.254.169.254"}, "is not a valid option for member address", 400),
    ({"address": "127.0.0.1"}, "member address", 400),
    ({"address": "0.0.0.0"}, "member address", 400),
    ({"address": "::1"}, "member address", 400),
    ({"address": "224.0.0.1"}, "member address", 400),
    ({"protocol_port": 0}, "protocol_port", 400),
    ({"protocol_port": 65536}, "protocol_port", 400),
    ({"weight": -1}, "weight", 400),
    ({"weight": 257}, "weight", 400),
    ({"monitor_port": 0}, "monitor_port", 400),
    ({"monitor_address": "x"}, "monitor_address", 400),
    ({"monitor_address": "127.0.0.1"}, "monitor_address", 400),
    ({"subnet_id": "00000000-0000-0000-0000-000000000000"}, "Subnet", 404),
    ({"description": "members have none in Octavia"}, "description", 400),
    ({"name": "a\x00b"}, "name", 400),
]


def test_create_validation(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    for extra, needle, status in CREATE_CASES:
        body = {"address": "192.0.2.10", "protocol_port": 80, **extra}
        resp = alice.post(_members_url(pool), {"member": body})
        assert resp.status_code == status, (extra, resp.text)
        assert needle in resp.json()["faultstring"], (extra, resp.text)
    assert alice.get(_members_url(pool)).json()["members"] == []


def test_mandatory_fields(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    resp = alice.post(_members_url(pool), {"member": {"protocol_port": 80}})
    assert resp.status_code == 400
    assert "Mandatory field missing: address." in resp.json()["faultstring"]


def test_subnet_visibility(
    alice: Client, bob: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    bobs = _private_subnet(session_factory, PROJECT_B, "10.9.0.0/24")
    alices = _private_subnet(session_factory, PROJECT_A, "10.8.0.0/24")
    pool = _pool(alice, subnet_id)
    resp = alice.post(
        _members_url(pool),
        {"member": {"address": "10.9.0.5", "protocol_port": 80, "subnet_id": bobs}},
    )
    assert resp.status_code == 404
    assert resp.json()["faultstring"] == f"Subnet {bobs} not found."
    m = create_member(alice, pool["id"], address="10.8.0.5", subnet_id=alices)
    assert m["subnet_id"] == alices


def test_duplicate_address_port(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    create_member(alice, pool["id"], address="192.0.2.10", protocol_port=80)
    resp = alice.post(
        _members_url(pool), {"member": {"address": "192.0.2.10", "protocol_port": 80}}
    )
    assert resp.status_code == 409
    assert resp.json()["faultstring"] == (
        "Another member on this pool is already using ip 192.0.2.10 on protocol_port 80"
    )
    create_member(alice, pool["id"], address="192.0.2.10", protocol_port=81)
    other_pool = create_pool(alice, pool["loadbalancers"][0]["id"])
    create_member(alice, other_pool["id"], address="192.0.2.10", protocol_port=80)


def test_readd_while_deletion_pending(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    """Re-adding a member whose deletion is still pending creates it anew (issue 13 item 6):
    the row being deleted does not count as a duplicate, and the desired tree holds only
    the new one."""
    pool = _pool(alice, subnet_id)
    old = create_member(alice, pool["id"], address="192.0.2.10", protocol_port=80)
    assert alice.delete(f"{_members_url(pool)}/{old['id']}").status_code == 204
    new = create_member(alice, pool["id"], address="192.0.2.10", protocol_port=80)
    assert new["id"] != old["id"] and new["provisioning_status"] == "PENDING_CREATE"
    with session_factory() as s:
        statuses = {m.id: m.provisioning_status for m in s.query(Member)}
        assert statuses == {old["id"]: "PENDING_DELETE", new["id"]: "PENDING_CREATE"}
        spec = snapshot.build(s, pool["loadbalancers"][0]["id"], None)
    members = [m.id for p in spec.pools for m in p.members]
    assert members == [new["id"]]
    # A live duplicate is still one.
    resp = alice.post(
        _members_url(pool), {"member": {"address": "192.0.2.10", "protocol_port": 80}}
    )
    assert resp.status_code == 409
    # The batch update sees the live member, not the one on its way out.
    url = _members_url(pool)
    assert (
        alice.put(url, {"members": [{"address": "192.0.2.10", "protocol_port": 80}]}).status_code
        == 202
    )
    with session_factory() as s:
        statuses = {m.id: m.provisioning_status for m in s.query(Member)}
        assert statuses == {old["id"]: "PENDING_DELETE", new["id"]: "PENDING_CREATE"}


def test_update_and_null_resets(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    m = create_member(alice, pool["id"])
    url = f"{_members_url(pool)}/{m['id']}"
    changes = {
        "name": "n",
        "admin_state_up": False,
        "weight": 50,
        "backup": True,
        "monitor_address": "192.0.2.99",
        "monitor_port": 9100,
        "tags": ["x"],
    }
    body = alice.put(url, {"member": changes}).json()["member"]
    for key, value in changes.items():
        assert body[key] == value, key
    body = alice.put(
        url,
        {
            "member": {
                "name": None,
                "weight": None,
                "backup": None,
                "monitor_address": None,
                "monitor_port": None,
            }
        },
    ).json()["member"]
    assert (body["name"], body["weight"], body["backup"]) == ("", 1, False)
    assert body["monitor_address"] is None and body["monitor_port"] is None
    assert alice.put(url, {"member": {"address": "192.0.2.1"}}).status_code == 400
    assert alice.put(url, {"member": {"weight": 300}}).status_code == 400
    assert alice.put(url, {"member": {"admin_state_up": None}}).status_code == 400


def test_scoped_to_pool_and_project(
    alice: Client, bob: Client, alice_reader: Client, subnet_id: str
) -> None:
    pool = _pool(alice, subnet_id)
    other = create_pool(alice, pool["loadbalancers"][0]["id"])
    m = create_member(alice, pool["id"])
    create_member(alice, other["id"], address="192.0.2.50")
    wrong = f"{_members_url(other)}/{m['id']}"
    assert alice.get(wrong).status_code == 404
    assert alice.get(wrong).json()["faultstring"] == f"Member {m['id']} not found."
    assert alice.put(wrong, {"member": {"name": "x"}}).status_code == 404
    assert alice.delete(wrong).status_code == 404
    listed = alice.get(_members_url(pool)).json()
    assert [x["id"] for x in listed["members"]] == [m["id"]]
    assert listed["members_links"] == []
    url = f"{_members_url(pool)}/{m['id']}"
    assert bob.get(url).status_code == 403
    assert bob.get(_members_url(pool)).status_code == 403
    assert bob.get(_members_url(pool)).json()["faultstring"] == POLICY_REFUSED
    assert bob.put(url, {"member": {"name": "x"}}).status_code == 403
    assert bob.delete(url).status_code == 403
    assert bob.put(_members_url(pool), {"members": []}).status_code == 403
    assert alice_reader.get(url).status_code == 200
    assert alice_reader.delete(url).status_code == 403


def test_delete(
    alice: Client, subnet_id: str, controller: Any, session_factory: sessionmaker[Session]
) -> None:
    pool = _pool(alice, subnet_id)
    m = create_member(alice, pool["id"])
    wait_lb_active(alice, pool["loadbalancers"][0]["id"])
    url = f"{_members_url(pool)}/{m['id']}"
    assert alice.delete(url).status_code == 204
    wait_for(lambda: alice.get(url).status_code == 404)
    with session_factory() as s:
        assert s.get(Member, m["id"]) is None


def test_delete_marks_pending_delete(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    m = create_member(alice, pool["id"])
    url = f"{_members_url(pool)}/{m['id']}"
    assert alice.delete(url).status_code == 204
    assert alice.get(url).json()["member"]["provisioning_status"] == "PENDING_DELETE"
    assert alice.put(url, {"member": {"weight": 3}}).status_code == 409


def test_quota(alice: Client, subnet_id: str, session_factory: sessionmaker[Session]) -> None:
    with transaction(session_factory) as s:
        s.add(Quota(project_id=PROJECT_A, member=2))
    pool = _pool(alice, subnet_id)
    create_member(alice, pool["id"], address="192.0.2.1")
    create_member(alice, pool["id"], address="192.0.2.2")
    resp = alice.post(_members_url(pool), {"member": {"address": "192.0.2.3", "protocol_port": 1}})
    assert resp.status_code == 403
    assert resp.json()["faultstring"] == "Quota has been met for resources: Member"
    # A batch replacing both members grows by nothing: allowed.
    batch = {
        "members": [
            {"address": "192.0.2.3", "protocol_port": 8080},
            {"address": "192.0.2.4", "protocol_port": 8080},
        ]
    }
    assert alice.put(_members_url(pool), batch).status_code == 202
    # Additive, the same batch would grow the pool past the quota.
    batch["members"].append({"address": "192.0.2.5", "protocol_port": 8080})
    assert alice.put(f"{_members_url(pool)}?additive_only=true", batch).status_code == 403


def _by_key(client: Client, pool: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    members = client.get(_members_url(pool)).json()["members"]
    return {(m["address"], m["protocol_port"]): m for m in members}


def test_batch_update(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    keep = create_member(alice, pool["id"], address="192.0.2.1", weight=5, name="keep")
    gone = create_member(alice, pool["id"], address="192.0.2.2")
    resp = alice.put(
        _members_url(pool),
        {
            "members": [
                {"address": "192.0.2.1", "protocol_port": 8080, "weight": 7},
                {"address": "192.0.2.3", "protocol_port": 8080, "name": "new"},
            ]
        },
    )
    assert resp.status_code == 202
    assert resp.content == b""
    members = _by_key(alice, pool)
    kept = members[("192.0.2.1", 8080)]
    assert kept["id"] == keep["id"]
    assert (kept["weight"], kept["name"]) == (7, "keep")  # name not given: unchanged
    assert kept["provisioning_status"] == "PENDING_CREATE"  # never applied yet
    assert members[("192.0.2.2", 8080)]["id"] == gone["id"]
    assert members[("192.0.2.2", 8080)]["provisioning_status"] == "PENDING_DELETE"
    new = members[("192.0.2.3", 8080)]
    assert (new["name"], new["provisioning_status"]) == ("new", "PENDING_CREATE")
    # Listing a member again before it is removed keeps it.
    resp = alice.put(
        _members_url(pool),
        {
            "members": [
                {"address": "192.0.2.1", "protocol_port": 8080},
                {"address": "192.0.2.2", "protocol_port": 8080},
                {"address": "192.0.2.3", "protocol_port": 8080},
            ]
        },
    )
    members = _by_key(alice, pool)
    assert members[("192.0.2.2", 8080)]["provisioning_status"] == "PENDING_UPDATE"
    # Fields with Octavia defaults return to them when a listed member omits them.
    assert members[("192.0.2.1", 8080)]["weight"] == 1


def test_batch_additive_only(alice: Client, subnet_id: str, controller: Any) -> None:
    pool = _pool(alice, subnet_id)
    lb_id = pool["loadbalancers"][0]["id"]
    create_member(alice, pool["id"], address="192.0.2.1")
    create_member(alice, pool["id"], address="192.0.2.2")
    wait_lb_active(alice, lb_id)
    resp = alice.put(
        f"{_members_url(pool)}?additive_only=true",
        {"members": [{"address": "192.0.2.9", "protocol_port": 8080, "backup": True}]},
    )
    assert resp.status_code == 202
    members = _by_key(alice, pool)
    assert set(members) == {("192.0.2.1", 8080), ("192.0.2.2", 8080), ("192.0.2.9", 8080)}
    assert members[("192.0.2.1", 8080)]["provisioning_status"] in ("ACTIVE",)
    wait_lb_active(alice, lb_id)
    wait_for(
        lambda: all(m["provisioning_status"] == "ACTIVE" for m in _by_key(alice, pool).values())
    )
    # Not additive: the empty list removes every member.
    assert alice.put(_members_url(pool), {"members": []}).status_code == 202
    wait_for(lambda: _by_key(alice, pool) == {})


BATCH_CASES: list[tuple[list[dict[str, Any]], int]] = [
    ([{"address": "192.0.2.1", "protocol_port": 80}] * 2, 409),
    ([{"address": "169.254.169.254", "protocol_port": 80}], 400),
    ([{"address": "192.0.2.1"}], 400),
    ([{"address": "192.0.2.1", "protocol_port": 80, "subnet_id": "nope"}], 404),
]


def test_batch_validation(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    existing = create_member(alice, pool["id"], address="192.0.2.77")
    for members, status in BATCH_CASES:
        resp = alice.put(_members_url(pool), {"members": members})
        assert resp.status_code == status, (members, resp.text)
        # Nothing happened: the existing member is untouched.
        listed = alice.get(_members_url(pool)).json()["members"]
        assert [m["id"] for m in listed] == [existing["id"]]
        assert listed[0]["provisioning_status"] == "PENDING_CREATE"
    assert alice.put(_members_url(pool), {"member": []}).status_code == 400


def test_member_change_updates_pool_and_listener(
    alice: Client, subnet_id: str, controller: Any
) -> None:
    lb = create_lb(alice, subnet_id)
    li = create_listener(alice, lb["id"])
    pool = create_pool(alice, listener_id=li["id"])
    wait_lb_active(alice, lb["id"])
    create_member(alice, pool["id"])
    # Octavia marks the parents PENDING_UPDATE too; all settle to ACTIVE.
    wait_lb_active(alice, lb["id"])
    for url in (f"/v2/lbaas/pools/{pool['id']}", f"/v2/lbaas/listeners/{li['id']}"):
        body = alice.get(url).json()
        assert next(iter(body.values()))["provisioning_status"] == "ACTIVE"


def test_list_filters_and_pagination(alice: Client, subnet_id: str) -> None:
    pool = _pool(alice, subnet_id)
    for i in range(1, 6):
        create_member(alice, pool["id"], address=f"192.0.2.{i}", weight=i, tags=[f"w{i % 2}"])
    url = _members_url(pool)
    page = alice.get(f"{url}?limit=2&sort=weight:asc").json()
    assert [m["weight"] for m in page["members"]] == [1, 2]
    nxt = next(link for link in page["members_links"] if link["rel"] == "next")["href"]
    page2 = alice.get(nxt[nxt.index("/v2") :]).json()
    assert [m["weight"] for m in page2["members"]] == [3, 4]
    assert [m["address"] for m in alice.get(f"{url}?address=192.0.2.3").json()["members"]] == [
        "192.0.2.3"
    ]
    assert len(alice.get(f"{url}?tags=w1").json()["members"]) == 3
    assert len(alice.get(f"{url}?weight=5").json()["members"]) == 1
