"""Load balancer resource: CRUD, VIP allocation, status machine, isolation, statuses."""

from __future__ import annotations

from typing import Any

from tests.conftest import PROJECT_A, Client, wait_for


def create_lb(client: Client, subnet_id: str, **extra: Any) -> dict[str, Any]:
    resp = client.post(
        "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id, **extra}}
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["loadbalancer"]


def test_create_goes_pending_then_active(alice: Client, subnet_id: str, controller: Any) -> None:
    lb = create_lb(alice, subnet_id, name="web", tags=["prod"])
    assert lb["provisioning_status"] == "PENDING_CREATE"
    assert lb["operating_status"] == "OFFLINE"
    assert lb["project_id"] == PROJECT_A
    assert lb["vip_address"] == "198.51.100.10"
    assert lb["provider"] == "noop"
    assert lb["tags"] == ["prod"]

    def active() -> Any:
        body = alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}").json()["loadbalancer"]
        return body if body["provisioning_status"] == "ACTIVE" else None

    body = wait_for(active)
    wait_for(
        lambda: (
            alice.get(f"/v2.0/lbaas/loadbalancers/{lb['id']}").json()["loadbalancer"][
                "operating_status"
            ]
            == "ONLINE"
        )
    )
    assert body["vip_subnet_id"] == subnet_id


def test_vip_requires_a_location(alice: Client) -> None:
    resp = alice.post("/v2/lbaas/loadbalancers", {"loadbalancer": {"name": "x"}})
    assert resp.status_code == 400
    assert "vip_subnet_id" in resp.json()["faultstring"]


def test_unknown_attribute_is_400(alice: Client, subnet_id: str) -> None:
    resp = alice.post(
        "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id, "bogus": 1}}
    )
    assert resp.status_code == 400
    assert resp.json()["faultcode"] == "Client"


def test_explicit_vip_address_and_conflict(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id, vip_address="198.51.100.77")
    assert lb["vip_address"] == "198.51.100.77"
    resp = alice.post(
        "/v2/lbaas/loadbalancers",
        {"loadbalancer": {"vip_subnet_id": subnet_id, "vip_address": "198.51.100.77"}},
    )
    assert resp.status_code == 409


def test_other_project_gets_403(alice: Client, bob: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    assert bob.get(f"/v2/lbaas/loadbalancers/{lb['id']}").status_code == 403
    assert (
        bob.put(f"/v2/lbaas/loadbalancers/{lb['id']}", {"loadbalancer": {"name": "x"}}).status_code
        == 403
    )
    assert bob.delete(f"/v2/lbaas/loadbalancers/{lb['id']}").status_code == 403
    assert bob.get("/v2/lbaas/loadbalancers").json()["loadbalancers"] == []
    assert len(alice.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]) == 1


def test_reader_cannot_write(alice_reader: Client, subnet_id: str) -> None:
    resp = alice_reader.post(
        "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id}}
    )
    assert resp.status_code == 403
    assert alice_reader.get("/v2/lbaas/loadbalancers").status_code == 200


def test_no_token_is_401(http: Any) -> None:
    assert http.get("/v2/lbaas/loadbalancers").status_code == 401


def test_update_while_pending_is_merged(alice: Client, subnet_id: str, controller: Any) -> None:
    lb = create_lb(alice, subnet_id, name="one")
    for name in ("two", "three"):
        resp = alice.put(f"/v2/lbaas/loadbalancers/{lb['id']}", {"loadbalancer": {"name": name}})
        assert resp.status_code == 200, resp.text
    wait_for(
        lambda: (
            alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}").json()["loadbalancer"][
                "provisioning_status"
            ]
            == "ACTIVE"
        )
    )
    assert (
        alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}").json()["loadbalancer"]["name"] == "three"
    )


def test_delete_frees_vip(alice: Client, subnet_id: str, controller: Any) -> None:
    lb = create_lb(alice, subnet_id)
    assert alice.delete(f"/v2/lbaas/loadbalancers/{lb['id']}").status_code == 204
    wait_for(lambda: alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}").status_code == 404)
    again = create_lb(alice, subnet_id)
    assert again["vip_address"] == lb["vip_address"]


def test_status_tree_and_stats(alice: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id, name="s")
    tree = alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}/status").json()
    assert tree["statuses"]["loadbalancer"]["id"] == lb["id"]
    stats = alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}/stats").json()["stats"]
    assert stats == {
        "bytes_in": 0,
        "bytes_out": 0,
        "active_connections": 0,
        "total_connections": 0,
        "request_errors": 0,
    }


def test_failover_is_admin_only(alice: Client, admin: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    assert alice.put(f"/v2/lbaas/loadbalancers/{lb['id']}/failover", {}).status_code == 403
    assert admin.put(f"/v2/lbaas/loadbalancers/{lb['id']}/failover", {}).status_code == 202


def test_pagination_sort_fields(alice: Client, subnet_id: str) -> None:
    for i in range(5):
        create_lb(alice, subnet_id, name=f"lb{i}")
    page = alice.get("/v2/lbaas/loadbalancers?limit=2&sort=name:desc").json()
    assert [lb["name"] for lb in page["loadbalancers"]] == ["lb4", "lb3"]
    nxt = next(link for link in page["loadbalancers_links"] if link["rel"] == "next")["href"]
    page2 = alice.get(nxt[nxt.index("/v2") :]).json()
    assert [lb["name"] for lb in page2["loadbalancers"]] == ["lb2", "lb1"]
    prev = next(link for link in page2["loadbalancers_links"] if link["rel"] == "previous")["href"]
    back = alice.get(prev[prev.index("/v2") :]).json()
    assert [lb["name"] for lb in back["loadbalancers"]] == ["lb4", "lb3"]
    only = alice.get("/v2/lbaas/loadbalancers?name=lb2&fields=id&fields=name").json()
    assert len(only["loadbalancers"]) == 1
    assert set(only["loadbalancers"][0]) == {"id", "name"}


def test_tag_filters(alice: Client, subnet_id: str) -> None:
    create_lb(alice, subnet_id, name="a", tags=["x", "y"])
    create_lb(alice, subnet_id, name="b", tags=["y"])
    create_lb(alice, subnet_id, name="c")

    def names(q: str) -> list[str]:
        return sorted(
            lb["name"] for lb in alice.get(f"/v2/lbaas/loadbalancers?{q}").json()["loadbalancers"]
        )

    assert names("tags=x,y") == ["a"]
    assert names("tags-any=x,y") == ["a", "b"]
    assert names("not-tags=x,y") == ["b", "c"]
    assert names("not-tags-any=x") == ["b", "c"]
