"""Networks, subnets and ports in Neutron's shapes: validation, visibility, filters, deletes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.factories import create_lb
from tests.conftest import PROJECT_A, PROJECT_B, Client


def make_network(client: Client, **extra: Any) -> dict[str, Any]:
    body = {
        "name": "net",
        "provider:network_type": "flat",
        "provider:physical_network": "br-ext",
        **extra,
    }
    resp = client.post("/v2.0/networks", {"network": body})
    assert resp.status_code == 201, resp.text
    return resp.json()["network"]


def make_subnet(client: Client, network_id: str, cidr: str, **extra: Any) -> dict[str, Any]:
    body = {"network_id": network_id, "cidr": cidr, "ip_version": 4, **extra}
    resp = client.post("/v2.0/subnets", {"subnet": body})
    assert resp.status_code == 201, resp.text
    return resp.json()["subnet"]


def subnet_error(client: Client, network_id: str, **body: Any) -> str:
    resp = client.post("/v2.0/subnets", {"subnet": {"network_id": network_id, **body}})
    assert resp.status_code == 400, resp.text
    return str(resp.json()["faultstring"])


# --- networks -------------------------------------------------------------------------


def test_network_shape_and_envelopes(admin: Client) -> None:
    net = make_network(admin, name="public", shared=True, mtu=9000, tags=["edge"])
    assert net["name"] == "public"
    assert net["status"] == "ACTIVE"
    assert net["shared"] is True
    assert net["project_id"] == net["tenant_id"] == "admin"
    assert net["provider:network_type"] == "flat"
    assert net["provider:physical_network"] == "br-ext"
    assert net["provider:segmentation_id"] is None
    assert net["openha:bridge_managed"] is True
    assert net["mtu"] == 9000
    assert net["subnets"] == []
    assert net["tags"] == ["edge"]
    assert net["created_at"].endswith("Z")

    sub = make_subnet(admin, net["id"], "192.0.2.0/24")
    shown = admin.get(f"/v2/networks/{net['id']}").json()["network"]
    assert shown["subnets"] == [sub["id"]]
    listed = admin.get("/v2.0/networks").json()
    assert [n["id"] for n in listed["networks"]] == [net["id"]]
    assert listed["networks_links"] == []


@pytest.mark.parametrize(
    ("attrs", "needle"),
    [
        ({"provider:network_type": "gre", "provider:segmentation_id": 5}, "network_type"),
        ({"provider:network_type": "flat", "provider:segmentation_id": 5}, "not allowed"),
        ({"provider:network_type": "flat"}, "physical_network"),
        ({"provider:network_type": "vlan", "provider:physical_network": "eth0"}, "required"),
        (
            {
                "provider:network_type": "vlan",
                "provider:physical_network": "eth0",
                "provider:segmentation_id": 4095,
            },
            "between 1 and 4094",
        ),
        ({"provider:network_type": "vlan", "provider:segmentation_id": 10}, "parent interface"),
        ({"provider:network_type": "vxlan", "provider:segmentation_id": 16777216}, "16777215"),
        ({"provider:physical_network": "br0; rm -rf /"}, "interface name"),
        ({"provider:physical_network": "a-name-too-long0"}, "interface name"),
        ({"provider:physical_network": "br\nx"}, "interface name"),
        ({"provider:physical_network": "br0", "mtu": 67}, "mtu"),
        ({"provider:physical_network": "br0", "router:external": True}, "Unknown attribute"),
    ],
)
def test_network_provider_validation(admin: Client, attrs: dict[str, Any], needle: str) -> None:
    resp = admin.post("/v2.0/networks", {"network": {"name": "bad", **attrs}})
    assert resp.status_code == 400, resp.text
    assert needle in resp.json()["faultstring"]


def test_vlan_and_vxlan_networks(admin: Client) -> None:
    vlan = make_network(
        admin,
        **{
            "provider:network_type": "vlan",
            "provider:physical_network": "eth1.",
            "provider:segmentation_id": 4094,
            "openha:bridge_managed": False,
        },
    )
    assert vlan["provider:segmentation_id"] == 4094
    assert vlan["openha:bridge_managed"] is False
    vxlan = make_network(
        admin,
        **{
            "provider:network_type": "vxlan",
            "provider:physical_network": None,
            "provider:segmentation_id": 16777215,
        },
    )
    assert vxlan["provider:physical_network"] is None
    # Provider filters use the API's attribute names.
    found = admin.get("/v2.0/networks?provider:network_type=vlan").json()["networks"]
    assert [n["id"] for n in found] == [vlan["id"]]
    found = admin.get("/v2.0/networks?openha:bridge_managed=false").json()["networks"]
    assert [n["id"] for n in found] == [vlan["id"]]


def test_only_admins_write_networks(alice: Client, admin: Client) -> None:
    resp = alice.post(
        "/v2.0/networks",
        {"network": {"provider:network_type": "flat", "provider:physical_network": "br0"}},
    )
    assert resp.status_code == 403
    net = make_network(admin, shared=True)
    assert alice.put(f"/v2.0/networks/{net['id']}", {"network": {"name": "x"}}).status_code == 403
    assert alice.delete(f"/v2.0/networks/{net['id']}").status_code == 403
    resp = alice.post("/v2.0/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.0.0.0/24"}})
    assert resp.status_code == 403


def test_visibility_shared_or_own_project(admin: Client, alice: Client, bob: Client) -> None:
    shared = make_network(admin, name="shared", shared=True)
    private_a = make_network(admin, name="a-only", project_id=PROJECT_A)
    hidden = make_network(admin, name="admin-only")
    sub_shared = make_subnet(admin, shared["id"], "192.0.2.0/24")
    sub_a = make_subnet(admin, private_a["id"], "198.18.0.0/24")
    sub_hidden = make_subnet(admin, hidden["id"], "198.18.1.0/24")
    assert sub_a["project_id"] == PROJECT_A  # a subnet defaults to its network's project

    def names(client: Client, path: str, key: str) -> set[str]:
        return {o["id"] for o in client.get(path).json()[key]}

    assert names(alice, "/v2.0/networks", "networks") == {shared["id"], private_a["id"]}
    assert names(bob, "/v2.0/networks", "networks") == {shared["id"]}
    assert names(admin, "/v2.0/networks", "networks") == {
        shared["id"],
        private_a["id"],
        hidden["id"],
    }
    assert names(alice, "/v2.0/subnets", "subnets") == {sub_shared["id"], sub_a["id"]}
    assert names(bob, "/v2/subnets", "subnets") == {sub_shared["id"]}

    assert bob.get(f"/v2.0/networks/{private_a['id']}").status_code == 404
    resp = bob.get(f"/v2.0/subnets/{sub_a['id']}")
    assert resp.status_code == 404
    assert resp.json()["faultstring"] == f"Subnet {sub_a['id']} could not be found."
    assert alice.get(f"/v2.0/subnets/{sub_hidden['id']}").status_code == 404
    assert alice.get(f"/v2.0/subnets/{sub_a['id']}").json()["subnet"]["cidr"] == "198.18.0.0/24"
    # Admin narrowing by project, also under Neutron's tenant_id name.
    assert names(admin, f"/v2.0/networks?tenant_id={PROJECT_A}", "networks") == {private_a["id"]}
    assert names(admin, f"/v2.0/subnets?project_id={PROJECT_B}", "subnets") == set()


def test_name_and_id_filters_as_clients_use_them(admin: Client, alice: Client) -> None:
    net = make_network(admin, shared=True)
    sub = make_subnet(admin, net["id"], "192.0.2.0/24", name="vip-subnet")
    make_subnet(admin, net["id"], "192.0.3.0/24", name="other")
    # openstack CLI: GET /subnets/NAME (404), then ?name=NAME; octaviaclient: ?id= / ?name=.
    assert alice.get("/v2.0/subnets/vip-subnet").status_code == 404
    by_name = alice.get("/v2.0/subnets?name=vip-subnet").json()["subnets"]
    assert [s["id"] for s in by_name] == [sub["id"]]
    by_id = alice.get(f"/v2/subnets?id={sub['id']}").json()["subnets"]
    assert [s["name"] for s in by_id] == ["vip-subnet"]
    assert alice.get("/v2/subnets?id=nope").json()["subnets"] == []
    fields = alice.get(f"/v2.0/subnets?id={sub['id']}&fields=id&fields=cidr").json()
    assert fields["subnets"] == [{"id": sub["id"], "cidr": "192.0.2.0/24"}]
    assert alice.get("/v2.0/networks?status=DOWN").json()["networks"] == []
    assert len(alice.get("/v2.0/networks?status=ACTIVE").json()["networks"]) == 1
    assert admin.get("/v2.0/extensions").json() == {"extensions": []}


def test_network_update(admin: Client) -> None:
    net = make_network(admin)
    resp = admin.put(
        f"/v2.0/networks/{net['id']}",
        {"network": {"name": "renamed", "shared": True, "openha:bridge_managed": False}},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()["network"]
    assert (body["name"], body["shared"], body["openha:bridge_managed"]) == (
        "renamed",
        True,
        False,
    )
    resp = admin.put(
        f"/v2.0/networks/{net['id']}",
        {
            "network": {
                "provider:network_type": "vlan",
                "provider:segmentation_id": 7,
                "provider:physical_network": None,
            }
        },
    )
    assert resp.status_code == 400  # a vlan needs its parent interface
    resp = admin.put(
        f"/v2.0/networks/{net['id']}",
        {
            "network": {
                "provider:network_type": "vlan",
                "provider:segmentation_id": 7,
                "provider:physical_network": "bond0",
            }
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["network"]["provider:segmentation_id"] == 7


# --- subnets --------------------------------------------------------------------------


def test_subnet_defaults(admin: Client) -> None:
    net = make_network(admin)
    sub = make_subnet(admin, net["id"], "192.0.2.0/24", name="s1")
    assert sub["cidr"] == "192.0.2.0/24"
    # Host bits set: refused, not silently normalised (test_request_bodies has more).
    assert "not a network address" in subnet_error(admin, net["id"], cidr="192.0.2.77/24")
    assert sub["gateway_ip"] == "192.0.2.1"
    assert sub["allocation_pools"] == [{"start": "192.0.2.2", "end": "192.0.2.254"}]
    assert sub["ip_version"] == 4
    assert sub["enable_dhcp"] is False
    assert sub["dns_nameservers"] == [] and sub["host_routes"] == []
    assert sub["network_id"] == net["id"]
    assert sub["project_id"] == sub["tenant_id"] == "admin"

    # A gateway in the middle splits the default pool around it.
    mid = make_subnet(admin, net["id"], "10.0.0.0/29", gateway_ip="10.0.0.3")
    assert mid["allocation_pools"] == [
        {"start": "10.0.0.1", "end": "10.0.0.2"},
        {"start": "10.0.0.4", "end": "10.0.0.6"},
    ]
    # An explicit null gateway leaves the whole range to the pool.
    nogw = make_subnet(admin, net["id"], "10.0.1.0/30", gateway_ip=None)
    assert nogw["gateway_ip"] is None
    assert nogw["allocation_pools"] == [{"start": "10.0.1.1", "end": "10.0.1.2"}]
    # IPv6 keeps the last address (there is no broadcast); ip_version may be omitted.
    resp = admin.post(
        "/v2.0/subnets", {"subnet": {"network_id": net["id"], "cidr": "2001:db8::/64"}}
    )
    v6 = resp.json()["subnet"]
    assert v6["ip_version"] == 6
    assert v6["gateway_ip"] == "2001:db8::1"
    assert v6["allocation_pools"] == [
        {"start": "2001:db8::2", "end": "2001:db8::ffff:ffff:ffff:ffff"}
    ]


def test_subnet_validation(admin: Client) -> None:
    net = make_network(admin)
    nid = net["id"]
    assert "CIDR" in subnet_error(admin, nid, cidr="192.0.2.0/33")
    assert "ip_version" in subnet_error(admin, nid, cidr="192.0.2.0/24", ip_version=6)
    assert "Gateway IP" in subnet_error(admin, nid, cidr="192.0.2.0/24", gateway_ip="192.0.3.1")
    assert "Gateway IP" in subnet_error(admin, nid, cidr="192.0.2.0/24", gateway_ip="192.0.2.255")
    pools = [{"start": "192.0.2.200", "end": "192.0.3.10"}]
    assert "beyond" in subnet_error(admin, nid, cidr="192.0.2.0/24", allocation_pools=pools)
    pools = [{"start": "192.0.2.0", "end": "192.0.2.10"}]  # the network address
    assert "beyond" in subnet_error(admin, nid, cidr="192.0.2.0/24", allocation_pools=pools)
    pools = [{"start": "192.0.2.20", "end": "192.0.2.10"}]
    assert "starts after" in subnet_error(admin, nid, cidr="192.0.2.0/24", allocation_pools=pools)
    pools = [{"start": "192.0.2.1", "end": "192.0.2.10"}]
    assert "conflicts" in subnet_error(admin, nid, cidr="192.0.2.0/24", allocation_pools=pools)
    pools = [
        {"start": "192.0.2.10", "end": "192.0.2.20"},
        {"start": "192.0.2.20", "end": "192.0.2.30"},
    ]
    assert "overlapping" in subnet_error(admin, nid, cidr="192.0.2.0/24", allocation_pools=pools)
    pools = [{"start": "2001:db8::5", "end": "2001:db8::9"}]
    assert "version" in subnet_error(admin, nid, cidr="192.0.2.0/24", allocation_pools=pools)
    assert "too small" in subnet_error(admin, nid, cidr="192.0.2.0/31")
    assert "no address left" in subnet_error(admin, nid, cidr="192.0.2.0/30", allocation_pools=[])
    assert "DHCP" in subnet_error(admin, nid, cidr="192.0.2.0/24", enable_dhcp=True)
    assert "dns" in subnet_error(admin, nid, cidr="192.0.2.0/24", dns_nameservers=["192.0.2.53"])
    assert "Unknown attribute" in subnet_error(admin, nid, cidr="192.0.2.0/24", subnetpool_id="x")

    make_subnet(admin, nid, "192.0.2.0/24")
    assert "overlaps" in subnet_error(admin, nid, cidr="192.0.2.128/25")
    # The same range on another network is fine (separate L2 domains).
    other = make_network(admin, **{"provider:physical_network": "br-other"})
    make_subnet(admin, other["id"], "192.0.2.0/24")
    resp = admin.post("/v2.0/subnets", {"subnet": {"network_id": "nope", "cidr": "10.0.0.0/24"}})
    assert resp.status_code == 404


def test_explicit_pools_and_vip_allocation(admin: Client, alice: Client) -> None:
    net = make_network(admin, shared=True)
    sub = make_subnet(
        admin,
        net["id"],
        "203.0.113.0/24",
        gateway_ip="203.0.113.254",
        allocation_pools=[{"start": "203.0.113.100", "end": "203.0.113.101"}],
    )
    lb = create_lb(alice, sub["id"])
    assert lb["vip_address"] == "203.0.113.100"

    ports = alice.get("/v2.0/ports").json()["ports"]
    assert len(ports) == 1
    port = ports[0]
    assert port["id"] == lb["vip_port_id"]
    assert port["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "203.0.113.100"}]
    assert port["network_id"] == net["id"]
    assert port["project_id"] == PROJECT_A
    assert port["device_id"] == lb["id"]
    assert port["status"] == "ACTIVE"
    assert port["mac_address"].startswith("fa:16:")
    shown = alice.get(f"/v2.0/ports/{port['id']}").json()["port"]
    assert shown == port
    found = alice.get("/v2.0/ports?fixed_ips=ip_address=203.0.113.100").json()["ports"]
    assert [p["id"] for p in found] == [port["id"]]
    assert alice.get("/v2.0/ports?fixed_ips=ip_address=203.0.113.101").json()["ports"] == []
    # Ports are read-only and private to their project.
    assert alice.post("/v2.0/ports", {"port": {"network_id": net["id"]}}).status_code == 405
    assert admin.get(f"/v2.0/ports?device_id={lb['id']}").json()["ports"][0]["id"] == port["id"]


def test_deletes_refuse_while_ports_exist(admin: Client, alice: Client, bob: Client) -> None:
    net = make_network(admin, shared=True)
    sub = make_subnet(admin, net["id"], "192.0.2.0/24")
    lb = create_lb(alice, sub["id"])
    assert bob.get(f"/v2.0/ports/{lb['vip_port_id']}").status_code == 404

    resp = admin.delete(f"/v2.0/subnets/{sub['id']}")
    assert resp.status_code == 409
    assert "ports" in resp.json()["faultstring"]
    assert admin.delete(f"/v2.0/networks/{net['id']}").status_code == 409

    empty = make_subnet(admin, net["id"], "192.0.3.0/24")
    assert admin.delete(f"/v2.0/subnets/{empty['id']}").status_code == 204
    assert admin.get(f"/v2.0/subnets/{empty['id']}").status_code == 404

    spare = make_network(admin)
    make_subnet(admin, spare["id"], "10.9.0.0/24")
    assert admin.delete(f"/v2.0/networks/{spare['id']}").status_code == 204
    assert admin.get(f"/v2.0/networks/{spare['id']}").status_code == 404
    assert admin.get(f"/v2.0/subnets?network_id={spare['id']}").json()["subnets"] == []


def test_subnet_update(admin: Client, alice: Client) -> None:
    net = make_network(admin, shared=True)
    sub = make_subnet(admin, net["id"], "192.0.2.0/24")
    create_lb(alice, sub["id"])  # takes 192.0.2.2
    path = f"/v2.0/subnets/{sub['id']}"

    resp = admin.put(path, {"subnet": {"name": "renamed", "tags": ["a"]}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["subnet"]["name"] == "renamed"
    assert resp.json()["subnet"]["tags"] == ["a"]
    # The gateway may not land inside the pool, nor on an allocated address.
    assert admin.put(path, {"subnet": {"gateway_ip": "192.0.2.50"}}).status_code == 400
    resp = admin.put(
        path,
        {
            "subnet": {
                "gateway_ip": "192.0.2.2",
                "allocation_pools": [{"start": "192.0.2.10", "end": "192.0.2.20"}],
            }
        },
    )
    assert resp.status_code == 409
    resp = admin.put(
        path,
        {
            "subnet": {
                "gateway_ip": "192.0.2.254",
                "allocation_pools": [{"start": "192.0.2.10", "end": "192.0.2.20"}],
            }
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()["subnet"]
    assert body["gateway_ip"] == "192.0.2.254"
    assert body["allocation_pools"] == [{"start": "192.0.2.10", "end": "192.0.2.20"}]
    assert admin.put(path, {"subnet": {"cidr": "10.0.0.0/8"}}).status_code == 400
    assert alice.put(path, {"subnet": {"name": "x"}}).status_code == 403
    next_lb = create_lb(alice, sub["id"])
    assert next_lb["vip_address"] == "192.0.2.10"


def test_tags_extension(admin: Client, alice: Client) -> None:
    net = make_network(admin, shared=True)
    base = f"/v2.0/networks/{net['id']}/tags"
    resp = admin.put(base, {"tags": ["x", "y", "x"]})
    assert resp.status_code == 200
    assert resp.json() == {"tags": ["x", "y"]}
    assert admin.request("PUT", f"{base}/z").status_code == 201
    assert alice.get(base).json() == {"tags": ["x", "y", "z"]}
    assert alice.request("PUT", f"{base}/w").status_code == 403
    assert admin.delete(f"{base}/y").status_code == 204
    assert admin.delete(f"{base}/y").status_code == 404
    found = alice.get("/v2.0/networks?tags=z").json()["networks"]
    assert [n["id"] for n in found] == [net["id"]]
    assert admin.delete(base).status_code == 204
    assert admin.get(f"/v2.0/networks/{net['id']}").json()["network"]["tags"] == []


def test_gateway_change_reapplies_load_balancers_on_the_subnet(
    admin: Client, alice: Client, subnet_id: str, session_factory: Any
) -> None:
    from openha.db import transaction
    from openha.models import LoadBalancer

    lb = alice.post(
        "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id}}
    ).json()["loadbalancer"]
    with transaction(session_factory) as s:
        before = s.get(LoadBalancer, lb["id"]).desired_generation  # type: ignore[union-attr]
    resp = admin.put(f"/v2.0/subnets/{subnet_id}", {"subnet": {"gateway_ip": "198.51.100.254"}})
    assert resp.status_code == 200, resp.text
    with transaction(session_factory) as s:
        after = s.get(LoadBalancer, lb["id"]).desired_generation  # type: ignore[union-attr]
    assert after == before + 1
