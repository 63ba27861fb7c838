"""The haproxy provider's instance spec is a pure function of the tree and the placements.

`instance_spec.build` reads no database and calls no agent: given a load
balancer's desired tree and where its instances were placed, it answers what each
instance runs. A pair's two halves differ only where VRRP says they must.
"""

from __future__ import annotations

import uuid

from openha.domain import constants as c
from openha.domain.spec import LoadBalancerSpec, SubnetSpec
from openha.providers.haproxy import instance_spec
from openha.providers.haproxy.placement import Placement
from openha.render.keepalived import BACKUP_PRIORITY, MASTER_PRIORITY
from openha.settings import Settings


def lb_spec(topology: str) -> LoadBalancerSpec:
    subnet = SubnetSpec(
        id=str(uuid.uuid4()),
        cidr="198.51.100.0/24",
        gateway_ip="198.51.100.1",
        network_id=str(uuid.uuid4()),
        physical_network="ohbr0",
    )
    return LoadBalancerSpec(
        id=str(uuid.uuid4()),
        project_id="p1",
        generation=7,
        topology=topology,
        vip_address="198.51.100.10",
        vip_subnet=subnet,
    )


def placed(role: str, address: str, vrid: int = 0) -> Placement:
    return Placement(
        instance_id=str(uuid.uuid4()),
        role=role,
        host_id=str(uuid.uuid4()),
        host_name=f"host-{role.lower()}",
        management_url="http://127.0.0.1:9",
        agent_secret="s",
        agent_dir="/var/lib/openha-test-agent",
        ip_address=address,
        applied_generation=0,
        vrid=vrid,
        vrrp_secret="secret12" if vrid else "",
    )


def test_a_single_instance_holds_the_vip_itself() -> None:
    spec = lb_spec(c.TOPOLOGY_SINGLE)
    only = placed(c.ROLE_STANDALONE, "198.51.100.20")
    built = instance_spec.build(spec, only, [only], Settings())
    assert (built.instance_id, built.load_balancer_id, built.generation) == (
        only.instance_id,
        spec.id,
        7,
    )
    assert built.role == c.ROLE_STANDALONE and not built.vip_managed_by_keepalived
    assert built.keepalived_config is None and built.files == {}
    (eth0,) = built.interfaces
    assert eth0.addresses == ("198.51.100.20/24",) and eth0.gateway == "198.51.100.1"
    assert f"load balancer {spec.id}, generation 7." in built.haproxy_config
    assert f"/instances/{only.instance_id}/stats.sock" in built.haproxy_config


def test_a_pair_differs_only_where_vrrp_says() -> None:
    spec = lb_spec(c.TOPOLOGY_ACTIVE_STANDBY)
    master = placed(c.ROLE_MASTER, "198.51.100.21", vrid=42)
    backup = placed(c.ROLE_BACKUP, "198.51.100.22", vrid=42)
    pair = [master, backup]
    built = {p.role: instance_spec.build(spec, p, pair, Settings()) for p in pair}
    for role, peer in ((c.ROLE_MASTER, backup), (c.ROLE_BACKUP, master)):
        one = built[role]
        assert one.vip_managed_by_keepalived and one.keepalived_config
        assert instance_spec.NOTIFY_SCRIPT in one.files
        # Each unicasts to the other and never to itself; both speak for the same router.
        assert f"unicast_peer {{\n        {peer.ip_address}\n" in one.keepalived_config
        assert "virtual_router_id 42" in one.keepalived_config
        # HAProxy's peers section (stick tables) names both halves.
        assert master.ip_address in one.haproxy_config and backup.ip_address in one.haproxy_config
    assert f"priority {MASTER_PRIORITY}" in (built[c.ROLE_MASTER].keepalived_config or "")
    assert f"priority {BACKUP_PRIORITY}" in (built[c.ROLE_BACKUP].keepalived_config or "")


def test_the_same_input_gives_the_same_spec() -> None:
    spec = lb_spec(c.TOPOLOGY_ACTIVE_STANDBY)
    pair = [placed(c.ROLE_MASTER, "198.51.100.21", 9), placed(c.ROLE_BACKUP, "198.51.100.22", 9)]
    assert instance_spec.build(spec, pair[0], pair, Settings()) == instance_spec.build(
        spec, pair[0], pair, Settings()
    )
