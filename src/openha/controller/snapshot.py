"""Builds a load balancer's desired tree (`LoadBalancerSpec`) from the database.

Objects in PENDING_DELETE are left out: the spec is what should run once the
pending changes are applied.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openha.domain import constants as c
from openha.domain.spec import (
    HealthMonitorSpec,
    L7PolicySpec,
    L7RuleSpec,
    ListenerSpec,
    LoadBalancerSpec,
    MemberSpec,
    PoolSpec,
    SessionPersistenceSpec,
    SubnetSpec,
)
from openha.models import (
    Flavor,
    FlavorProfile,
    L7Policy,
    Listener,
    LoadBalancer,
    Network,
    Pool,
    Provisioned,
    Subnet,
)


def _live(obj: Provisioned) -> bool:
    return obj.provisioning_status != c.PENDING_DELETE


def subnet_spec(session: Session, subnet_id: str) -> SubnetSpec:
    subnet = session.get(Subnet, subnet_id)
    assert subnet is not None, f"subnet {subnet_id} vanished"
    network = session.get(Network, subnet.network_id)
    assert network is not None
    return SubnetSpec(
        id=subnet.id,
        cidr=subnet.cidr,
        gateway_ip=subnet.gateway_ip,
        network_id=network.id,
        network_type=network.network_type,
        physical_network=network.physical_network,
        segmentation_id=network.segmentation_id,
        bridge_managed=network.bridge_managed,
        mtu=network.mtu,
    )


def flavor_data(session: Session, lb: LoadBalancer) -> dict[str, object]:
    if not lb.flavor_id:
        return {}
    flavor = session.get(Flavor, lb.flavor_id)
    profile = session.get(FlavorProfile, flavor.flavor_profile_id) if flavor else None
    if profile is None:
        return {}
    data = json.loads(profile.flavor_data or "{}")
    return data if isinstance(data, dict) else {}


def build(session: Session, lb_id: str) -> LoadBalancerSpec:
    lb = session.scalar(
        select(LoadBalancer)
        .where(LoadBalancer.id == lb_id)
        .options(
            selectinload(LoadBalancer.listeners)
            .selectinload(Listener.l7policies)
            .selectinload(L7Policy.rules),
            selectinload(LoadBalancer.pools).selectinload(Pool.members),
            selectinload(LoadBalancer.pools).selectinload(Pool.health_monitor),
        )
    )
    assert lb is not None and lb.vip_subnet_id and lb.vip_address
    listeners = tuple(
        ListenerSpec(
            id=li.id,
            protocol=li.protocol,
            protocol_port=li.protocol_port,
            admin_state_up=li.admin_state_up,
            connection_limit=li.connection_limit,
            default_pool_id=li.default_pool_id,
            insert_headers=dict(li.insert_headers or {}),
            timeout_client_data=li.timeout_client_data,
            timeout_member_connect=li.timeout_member_connect,
            timeout_member_data=li.timeout_member_data,
            timeout_tcp_inspect=li.timeout_tcp_inspect,
            allowed_cidrs=tuple(li.allowed_cidrs) if li.allowed_cidrs else None,
            l7policies=tuple(
                L7PolicySpec(
                    id=p.id,
                    action=p.action,
                    position=p.position,
                    redirect_pool_id=p.redirect_pool_id,
                    redirect_url=p.redirect_url,
                    redirect_prefix=p.redirect_prefix,
                    redirect_http_code=p.redirect_http_code,
                    admin_state_up=p.admin_state_up,
                    rules=tuple(
                        L7RuleSpec(
                            id=r.id,
                            type=r.type,
                            compare_type=r.compare_type,
                            key=r.key,
                            value=r.value,
                            invert=r.invert,
                            admin_state_up=r.admin_state_up,
                        )
                        for r in p.rules
                        if _live(r)
                    ),
                )
                for p in sorted(li.l7policies, key=lambda p: p.position)
                if _live(p)
            ),
        )
        for li in lb.listeners
        if _live(li)
    )
    pools = []
    member_subnet_ids: set[str] = set()
    for pool in lb.pools:
        if not _live(pool):
            continue
        hm = pool.health_monitor
        sp = pool.session_persistence
        members = []
        for m in pool.members:
            if not _live(m):
                continue
            if m.subnet_id and m.subnet_id != lb.vip_subnet_id:
                member_subnet_ids.add(m.subnet_id)
            members.append(
                MemberSpec(
                    id=m.id,
                    address=m.address,
                    protocol_port=m.protocol_port,
                    weight=m.weight,
                    backup=m.backup,
                    admin_state_up=m.admin_state_up,
                    monitor_address=m.monitor_address,
                    monitor_port=m.monitor_port,
                    subnet_id=m.subnet_id,
                )
            )
        pools.append(
            PoolSpec(
                id=pool.id,
                protocol=pool.protocol,
                lb_algorithm=pool.lb_algorithm,
                admin_state_up=pool.admin_state_up,
                session_persistence=SessionPersistenceSpec(**sp) if sp else None,
                tls_enabled=pool.tls_enabled,
                members=tuple(members),
                health_monitor=HealthMonitorSpec(
                    id=hm.id,
                    type=hm.type,
                    delay=hm.delay,
                    timeout=hm.timeout,
                    max_retries=hm.max_retries,
                    max_retries_down=hm.max_retries_down,
                    http_method=hm.http_method,
                    url_path=hm.url_path,
                    expected_codes=hm.expected_codes,
                    http_version=hm.http_version,
                    domain_name=hm.domain_name,
                    admin_state_up=hm.admin_state_up,
                )
                if hm is not None and _live(hm)
                else None,
            )
        )
    flavor = flavor_data(session, lb)
    return LoadBalancerSpec(
        id=lb.id,
        project_id=lb.project_id,
        generation=lb.desired_generation,
        admin_state_up=lb.admin_state_up,
        topology=str(flavor.get("loadbalancer_topology", c.TOPOLOGY_SINGLE)),
        vip_address=lb.vip_address,
        vip_subnet=subnet_spec(session, lb.vip_subnet_id),
        listeners=listeners,
        pools=tuple(pools),
        member_subnets=tuple(subnet_spec(session, s) for s in sorted(member_subnet_ids)),
        flavor=flavor,
    )
