"""Quotas: defaults, per-project limits (both Octavia spellings), access rules, enforcement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from openha.settings import Settings
from tests.api.factories import create_lb
from tests.conftest import PROJECT_A, PROJECT_B, Client

RESOURCES = (
    "load_balancer",
    "listener",
    "pool",
    "member",
    "health_monitor",
    "l7policy",
    "l7rule",
    "loadbalancer",
    "healthmonitor",
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # A non-default default proves the values come from settings.
    return Settings(
        state_dir=tmp_path / "state",
        database_url=f"sqlite:///{tmp_path / 'openha.db'}",
        auth="token",
        default_provider="noop",
        controller_interval=0.05,
        quota_listener=50,
    )


def put_quota(client: Client, project_id: str, **values: Any) -> Any:
    return client.put(f"/v2/lbaas/quotas/{project_id}", {"quota": values})


def test_defaults_come_from_settings(alice: Client) -> None:
    resp = alice.get("/v2/lbaas/quotas/defaults")
    assert resp.status_code == 200, resp.text
    quota = resp.json()["quota"]
    # Octavia answers for a project named "defaults", tenant_id beside project_id.
    assert set(quota) == {*RESOURCES, "project_id", "tenant_id"}
    assert quota["project_id"] == quota["tenant_id"] == "defaults"
    assert quota["listener"] == 50
    assert quota["load_balancer"] == quota["loadbalancer"] == -1
    assert quota["health_monitor"] == quota["healthmonitor"] == -1


def test_project_without_row_shows_defaults(alice: Client) -> None:
    resp = alice.get(f"/v2/lbaas/quotas/{PROJECT_A}")
    assert resp.status_code == 200
    quota = resp.json()["quota"]
    assert quota["project_id"] == PROJECT_A
    assert quota["listener"] == 50 and quota["pool"] == -1
    resp = alice.get(f"/v2/lbaas/quotas/{PROJECT_A}/default")
    assert resp.status_code == 200
    assert resp.json()["quota"]["listener"] == 50
    assert resp.json()["quota"]["project_id"] == PROJECT_A


def test_admin_sets_and_shows_quota(admin: Client, alice: Client) -> None:
    resp = put_quota(admin, PROJECT_A, loadbalancer=5, member=10, health_monitor=0)
    assert resp.status_code == 202, resp.text
    quota = resp.json()["quota"]
    assert quota["load_balancer"] == quota["loadbalancer"] == 5
    assert quota["member"] == 10
    assert quota["health_monitor"] == quota["healthmonitor"] == 0
    assert quota["listener"] == 50  # untouched: still the default
    shown = alice.get(f"/v2/lbaas/quotas/{PROJECT_A}", params={"fields": "member"}).json()
    assert shown == {"quota": {"member": 10}}

    # A second PUT changes only what it names; null goes back to the default.
    resp = put_quota(admin, PROJECT_A, member=None, pool=3)
    quota = resp.json()["quota"]
    assert quota["member"] == -1 and quota["pool"] == 3 and quota["load_balancer"] == 5

    # The list shows effective values, as Octavia does: the default where none is set.
    rows = admin.get("/v2/lbaas/quotas").json()["quotas"]
    assert len(rows) == 1
    row = rows[0]
    assert row["project_id"] == row["tenant_id"] == PROJECT_A
    assert row["load_balancer"] == 5 and row["pool"] == 3
    assert row["listener"] == 50 and row["member"] == -1


def test_canonical_spelling_wins(admin: Client) -> None:
    quota = put_quota(admin, PROJECT_A, load_balancer=1, loadbalancer=2).json()["quota"]
    assert quota["load_balancer"] == 2
    quota = put_quota(admin, PROJECT_A, healthmonitor=4, health_monitor=3).json()["quota"]
    assert quota["health_monitor"] == 4


@pytest.mark.parametrize(
    "body",
    [
        {"pool": -2},
        {"pool": 2_000_000_001},
        {"pool": "5"},
        {"pool": True},
        {"bogus": 1},
    ],
)
def test_invalid_quota_is_400(admin: Client, body: dict[str, Any]) -> None:
    resp = admin.put(f"/v2/lbaas/quotas/{PROJECT_A}", {"quota": body})
    assert resp.status_code == 400, resp.text
    assert resp.json()["faultcode"] == "Client"


def test_limits_bounds_are_accepted(admin: Client) -> None:
    quota = put_quota(admin, PROJECT_A, pool=-1, member=2_000_000_000).json()["quota"]
    assert quota["pool"] == -1 and quota["member"] == 2_000_000_000


def test_members_cannot_write_or_see_others(
    alice: Client, alice_reader: Client, admin: Client
) -> None:
    assert put_quota(alice, PROJECT_A, pool=1).status_code == 403
    assert put_quota(alice_reader, PROJECT_A, pool=1).status_code == 403
    assert put_quota(admin, PROJECT_B, pool=1).status_code == 202
    assert alice.delete(f"/v2/lbaas/quotas/{PROJECT_B}").status_code == 403
    assert alice.get(f"/v2/lbaas/quotas/{PROJECT_B}").status_code == 403
    assert alice.get(f"/v2/lbaas/quotas/{PROJECT_B}/default").status_code == 403
    assert alice.get("/v2/lbaas/quotas", params={"project_id": PROJECT_B}).status_code == 403
    # Alice's list holds only her own row (none yet), the admin's holds every row.
    assert alice.get("/v2/lbaas/quotas").json()["quotas"] == []
    put_quota(admin, PROJECT_A, pool=2)
    mine = alice.get("/v2/lbaas/quotas").json()["quotas"]
    assert [q["project_id"] for q in mine] == [PROJECT_A]
    assert alice_reader.get(f"/v2/lbaas/quotas/{PROJECT_A}").json()["quota"]["pool"] == 2
    everyone = admin.get("/v2/lbaas/quotas").json()["quotas"]
    assert {q["project_id"] for q in everyone} == {PROJECT_A, PROJECT_B}
    only_b = admin.get("/v2/lbaas/quotas", params={"project_id": PROJECT_B}).json()["quotas"]
    assert [q["project_id"] for q in only_b] == [PROJECT_B]


def test_delete_resets_to_defaults(admin: Client) -> None:
    put_quota(admin, PROJECT_A, listener=1)
    resp = admin.delete(f"/v2/lbaas/quotas/{PROJECT_A}")
    assert resp.status_code == 202
    assert resp.content == b""
    assert admin.get(f"/v2/lbaas/quotas/{PROJECT_A}").json()["quota"]["listener"] == 50
    # Octavia keeps the project listed, every limit back to its default...
    (row,) = admin.get("/v2/lbaas/quotas").json()["quotas"]
    assert (row["project_id"], row["listener"], row["pool"]) == (PROJECT_A, 50, -1)
    # ...so a second reset finds it again; only a project never set is unknown.
    assert admin.delete(f"/v2/lbaas/quotas/{PROJECT_A}").status_code == 202
    resp = admin.delete("/v2/lbaas/quotas/never-set")
    assert resp.status_code == 404
    assert resp.json()["faultstring"] == "Quotas never-set not found."


def test_quota_list_paginates_by_project(admin: Client) -> None:
    projects = sorted(f"project-{i}" for i in range(3))
    for project in projects:
        put_quota(admin, project, pool=1)
    first = admin.get("/v2/lbaas/quotas", params={"limit": 2}).json()
    assert [q["project_id"] for q in first["quotas"]] == projects[:2]
    (link,) = first["quotas_links"]
    assert link["rel"] == "next" and f"marker={projects[1]}" in link["href"]
    second = admin.get("/v2/lbaas/quotas", params={"limit": 2, "marker": projects[1]}).json()
    assert [q["project_id"] for q in second["quotas"]] == projects[2:]
    assert [link["rel"] for link in second["quotas_links"]] == ["previous"]


def test_load_balancer_quota_is_enforced(
    admin: Client, alice: Client, bob: Client, subnet_id: str
) -> None:
    put_quota(admin, PROJECT_A, load_balancer=1)
    create_lb(alice, subnet_id)
    resp = alice.post("/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id}})
    assert resp.status_code == 403
    assert "Quota has been met" in resp.json()["faultstring"]
    # Another project keeps the (unlimited) default.
    create_lb(bob, subnet_id)
    create_lb(bob, subnet_id)

    # -1 is unlimited, whatever the spelling.
    put_quota(admin, PROJECT_A, loadbalancer=-1)
    create_lb(alice, subnet_id)
    create_lb(alice, subnet_id)

    # 0 forbids any new one.
    put_quota(admin, PROJECT_B, load_balancer=0)
    resp = bob.post("/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id}})
    assert resp.status_code == 403
