"""Agent integration: namespace plumbing converges (managed bridges, VLANs) and purge."""

from __future__ import annotations

import uuid

import pytest
from agent_support import AgentHarness, LBConfig, Member
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from openha.agent.netns import (
    MANAGED_ALIAS,
    host_veth_name,
    namespace_exists,
    ns_iproute,
    owned_host_links,
    tag_candidates,
)
from openha.agent.paths import namespace_name
from openha.agent.procs import pid_alive
from openha.agent.purge import purge
from openha.domain.spec import InterfaceSpec
from openha.lab import BackendServer, ClientNamespace, Lab

pytestmark = pytest.mark.integration


def links() -> dict[str, dict]:
    with IPRoute() as ipr:
        return {
            link.get("ifname"): {"alias": link.get("ifalias"), "master": link.get("master")}
            for link in ipr.get_links()
        }


def inside(ns: str) -> dict[str, set[str]]:
    with ns_iproute(ns) as nsr:
        names = {link["index"]: link.get("ifname") for link in nsr.get_links()}
        addrs: dict[str, set[str]] = {name: set() for name in names.values()}
        for a in nsr.get_addr():
            if a.get("address", "").startswith("fe80:"):
                continue  # the kernel's IPv6 link-local address
            addrs[names[a["index"]]].add(f"{a.get('address')}/{a['prefixlen']}")
    return addrs


def vlan_supported(parent: str) -> bool:
    with IPRoute() as ipr:
        try:
            ipr.link(
                "add",
                ifname="ohvlantest",
                kind="vlan",
                link=ipr.link_lookup(ifname=parent)[0],
                vlan_id=7,
            )
        except NetlinkError:
            return False
        ipr.link("del", ifname="ohvlantest")
    return True


def test_plumbing_converges_and_purge_removes_all(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    ns = namespace_name(lb.instance_id)
    managed = f"{lab.prefix}m"
    parent = f"{lab.prefix}d"
    with IPRoute() as ipr:  # stands in for the NIC carrying tagged traffic
        ipr.link("add", ifname=parent, kind="veth", peer=f"{lab.prefix}e")
    eth1 = InterfaceSpec(name="eth1", bridge=managed, addresses=("192.0.2.5/24",))
    eth2 = InterfaceSpec(
        name="eth2",
        bridge=f"{lab.prefix}vb",
        vlan_parent=parent,
        vlan_id=42,
        mtu=1400,
        addresses=("198.51.100.5/24",),
    )
    base = lb.spec(lab, agent.agent_dir, 1).interfaces
    vlan = vlan_supported(parent)
    if not vlan:
        # This kernel has no 802.1Q: the refusal must be a clean 422, then go on untagged.
        resp = agent.put(lb.spec(lab, agent.agent_dir, 1, interfaces=(*base, eth1, eth2)))
        assert resp.status_code == 422 and "netlink" in resp.json()["last_error"]
        eth2 = eth2.model_copy(update={"vlan_parent": None, "vlan_id": None})
    resp = agent.put(lb.spec(lab, agent.agent_dir, 1, interfaces=(*base, eth1, eth2)))
    assert resp.status_code == 200, resp.text
    now = links()
    assert now[managed]["alias"] == MANAGED_ALIAS
    if vlan:
        assert now[f"{parent}.42"]["alias"] == MANAGED_ALIAS
        assert now[f"{parent}.42"]["master"] is not None
    addrs = inside(ns)
    assert f"{lb.vip}/32" in addrs["eth0"] and f"{lb.instance_ip}/{lab.prefixlen}" in addrs["eth0"]
    assert addrs["eth1"] == {"192.0.2.5/24"} and addrs["eth2"] == {"198.51.100.5/24"}
    assert client.request(f"http://{lb.vip}/").status == 200

    # Converge: eth1 goes away, eth2 changes address.
    eth2b = eth2.model_copy(update={"addresses": ("198.51.100.6/24",)})
    resp = agent.put(lb.spec(lab, agent.agent_dir, 2, interfaces=(*base, eth2b)))
    assert resp.status_code == 200, resp.text
    addrs = inside(ns)
    assert "eth1" not in addrs and addrs["eth2"] == {"198.51.100.6/24"}
    tag = tag_candidates(ns)[0]
    assert host_veth_name(tag, 1) in links() and host_veth_name(tag, 2) not in links()
    assert sorted(owned_host_links(ns)) == [host_veth_name(tag, 0), host_veth_name(tag, 1)]
    assert client.request(f"http://{lb.vip}/").status == 200

    pids = [int(p) for p in [resp.json()["haproxy_pid"]]]
    agent.stop()
    removed = purge(agent.agent_dir)
    assert removed == [ns]
    assert not namespace_exists(ns)
    assert not any(pid_alive(p) for p in pids)
    now = links()
    assert managed not in now  # the managed bridges went, with their VLAN link
    assert f"{lab.prefix}vb" not in now and f"{parent}.42" not in now
    assert parent in now and lab.bridge in now  # not ours: kept
    assert owned_host_links(ns) == []
    assert (agent.agent_dir / "agent_secret").exists()  # identity kept without everything


def test_instances_sharing_a_uuid_prefix_stay_apart(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, backends: list[BackendServer]
) -> None:
    """Issue 8.7: ids sharing their first 10 hex digits (8 was the old name) never share
    a namespace or a host link, and deleting one leaves the other serving."""
    digits = uuid.uuid4().hex
    ids = [str(uuid.UUID(digits[:10] + d + digits[11:])) for d in "01"]
    lbs = [
        LBConfig(
            instance_id=i,
            vip=lab.allocate_ip(),
            instance_ip=lab.allocate_ip(),
            members=[Member(str(uuid.uuid4()), b.address) for b in backends],
        )
        for i in ids
    ]
    for lb in lbs:
        resp = agent.put(lb.spec(lab, agent.agent_dir, 1))
        assert resp.status_code == 200, resp.text
    first, second = (namespace_name(i) for i in ids)
    assert first != second and namespace_exists(first) and namespace_exists(second)
    first_links, second_links = owned_host_links(first), owned_host_links(second)
    # Both wanted the same readable tag: the second took its next candidate.
    assert first_links == [host_veth_name(tag_candidates(first)[0], 0)]
    assert second_links == [host_veth_name(tag_candidates(second)[1], 0)]
    for lb in lbs:
        assert client.request(f"http://{lb.vip}/").status == 200
    # Converging the second (a new generation, new address) touches only its own links.
    lbs[1].instance_ip = lab.allocate_ip()
    assert agent.put(lbs[1].spec(lab, agent.agent_dir, 2)).status_code == 200
    assert owned_host_links(first) == first_links
    assert owned_host_links(second) == second_links
    # Deleting the first leaves the second whole and serving.
    assert agent.api.delete(f"/v1/instances/{ids[0]}").status_code == 204
    assert not namespace_exists(first) and owned_host_links(first) == []
    assert owned_host_links(second) == second_links
    assert client.request(f"http://{lbs[1].vip}/").status == 200
