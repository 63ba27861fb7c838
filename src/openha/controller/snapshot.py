"""Builds a load balancer's desired tree (`LoadBalancerSpec`) from the database.

Objects in PENDING_DELETE are left out: the spec is what should run once the
pending changes are applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openha.certstore.keys import KeyManager
from openha.controller import certificates
from openha.domain import constants as c
from openha.domain.protection import ProtectionSettings, effective
from openha.domain.spec import (
    HealthMonitorSpec,
    L7PolicySpec,
    L7RuleSpec,
    ListenerSpec,
    LoadBalancerSpec,
    MemberSpec,
    PoolSpec,
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
    ProtectionProfile,
    Subnet,
)

# The flavor data key naming a flavor's default protection profile (a name or an id).
FLAVOR_PROTECTION_KEY = "protection_profile"

S = TypeVar("S", bound=BaseModel)


class _Row:
    """A row as pydantic's `from_attributes` sees it, with some attributes replaced."""

    def __init__(self, row: object, **replaced: Any) -> None:
        self._row = row
        self._replaced = replaced

    def __getattr__(self, name: str) -> Any:
        if name in self._replaced:
            return self._replaced[name]
        return getattr(self._row, name)


def spec_of(spec: type[S], row: object, **replaced: Any) -> S:
    """`spec` read from `row`: every field of the spec from the row's attribute of that name."""
    return spec.model_validate(_Row(row, **replaced), from_attributes=True)


def _live(objs: list[Any]) -> list[Any]:
    """What should run once pending changes apply: rows being deleted are left out."""
    return [o for o in objs if o.provisioning_status != c.PENDING_DELETE]


def subnet_spec(session: Session, subnet_id: str) -> SubnetSpec:
    subnet = session.get(Subnet, subnet_id)
    assert subnet is not None, f"subnet {subnet_id} vanished"
    network = session.get(Network, subnet.network_id)
    assert network is not None
    # How hosts reach the subnet is its network's business.
    return spec_of(
        SubnetSpec,
        network,
        id=subnet.id,
        cidr=subnet.cidr,
        gateway_ip=subnet.gateway_ip,
        network_id=network.id,
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


@dataclass(frozen=True)
class Protection:
    """Which protection profiles apply to a load balancer, and why."""

    profile: ProtectionProfile | None  # the base profile
    source: str | None  # "loadbalancer" (an operator's override) or "flavor"
    under_attack: ProtectionProfile | None

    def settings(self) -> tuple[ProtectionSettings | None, ProtectionSettings | None]:
        """(the configuration's profile, the maps' profile): see `protection.effective`."""
        return effective(_settings(self.profile), _settings(self.under_attack))


def _settings(profile: ProtectionProfile | None) -> ProtectionSettings | None:
    return ProtectionSettings.model_validate(profile.settings) if profile is not None else None


def profile_named(session: Session, ref: str) -> ProtectionProfile | None:
    """A protection profile by id, else by name."""
    found = session.get(ProtectionProfile, ref)
    if found is None:
        found = session.scalar(select(ProtectionProfile).where(ProtectionProfile.name == ref))
    return found


def protection_of(session: Session, lb: LoadBalancer, flavor: dict[str, Any]) -> Protection:
    under_attack = (
        session.get(ProtectionProfile, lb.under_attack_profile_id)
        if lb.under_attack_profile_id
        else None
    )
    if lb.protection_profile_id:
        own = session.get(ProtectionProfile, lb.protection_profile_id)
        return Protection(own, "loadbalancer" if own else None, under_attack)
    ref = flavor.get(FLAVOR_PROTECTION_KEY)
    by_flavor = profile_named(session, ref) if isinstance(ref, str) and ref else None
    return Protection(by_flavor, "flavor" if by_flavor else None, under_attack)


def _listener(session: Session, keys: KeyManager | None, listener: Listener) -> ListenerSpec:
    policies = sorted(_live(listener.l7policies), key=lambda p: p.position)
    tls = certificates.listener_tls(session, keys, listener) if keys else {}
    return spec_of(
        ListenerSpec,
        listener,
        **tls,
        insert_headers=listener.insert_headers or {},
        allowed_cidrs=listener.allowed_cidrs or None,
        l7policies=[
            spec_of(L7PolicySpec, p, rules=[spec_of(L7RuleSpec, r) for r in _live(p.rules)])
            for p in policies
        ],
    )


def _pool(session: Session, keys: KeyManager | None, pool: Pool) -> PoolSpec:
    monitors = _live([pool.health_monitor] if pool.health_monitor is not None else [])
    tls = certificates.pool_tls(session, keys, pool) if keys else {}
    return spec_of(
        PoolSpec,
        pool,
        **tls,
        session_persistence=pool.session_persistence or None,
        members=[spec_of(MemberSpec, m) for m in _live(pool.members)],
        health_monitor=spec_of(HealthMonitorSpec, monitors[0]) if monitors else None,
    )


def build(session: Session, lb_id: str, keys: KeyManager | None) -> LoadBalancerSpec:
    """The desired tree of `lb_id`; with `keys`, the certificates its references name
    are read into it. Whatever pushes or compares configs needs them (without, a TLS
    listener's files would be missing, and removed from the instances as stale); only
    the observer, which reads statuses, passes None."""
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
    pools = [_pool(session, keys, pool) for pool in _live(lb.pools)]
    member_subnet_ids = {
        m.subnet_id
        for pool in pools
        for m in pool.members
        if m.subnet_id and m.subnet_id != lb.vip_subnet_id
    }
    flavor = flavor_data(session, lb)
    protection, runtime = protection_of(session, lb, flavor).settings()
    return spec_of(
        LoadBalancerSpec,
        lb,
        generation=lb.desired_generation,
        topology=str(flavor.get("loadbalancer_topology", c.TOPOLOGY_SINGLE)),
        vip_subnet=subnet_spec(session, lb.vip_subnet_id),
        listeners=[_listener(session, keys, li) for li in _live(lb.listeners)],
        pools=pools,
        member_subnets=[subnet_spec(session, s) for s in sorted(member_subnet_ids)],
        flavor=flavor,
        protection=protection,
        protection_runtime=runtime if runtime != protection else None,
    )
