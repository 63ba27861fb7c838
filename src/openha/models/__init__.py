"""SQLAlchemy models: the desired state (Octavia's object model), placements and observations."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    func,
    inspect,
    or_,
    update,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    column_property,
    foreign,
    mapped_column,
    query_expression,
    relationship,
)
from sqlalchemy.types import TypeDecorator

from openha.domain import constants as c
from openha.domain.capacity import DEFAULT_CAPACITY

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    # Naive UTC: Octavia renders timestamps without an offset, and SQLite keeps no zone.
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def utcnow_precise() -> datetime:
    """Naive UTC with microseconds: for liveness, where a second of rounding matters."""
    return datetime.now(UTC).replace(tzinfo=None)


class TagList(TypeDecorator[list[str]]):
    """Tags stored as ",a,b," so that a tag filter is a portable LIKE '%,a,%'.

    A tag may hold a comma (Octavia takes any string): inside a tag, a comma is
    stored as ESC ";" and ESC itself as ESC ESC, so no stored tag holds the
    separator and `encode_tag` gives the exact text a filter looks for. The empty
    tag (Octavia takes that too) is stored as ESC "e", which no other tag encodes
    to. Values stored before commas were allowed held neither commas nor control
    characters (the grammar refused both), so they read back unchanged.
    """

    impl = Text
    cache_ok = True
    ESCAPE = "\x1b"
    EMPTY = ESCAPE + "e"

    @classmethod
    def encode_tag(cls, tag: str) -> str:
        if not tag:
            return cls.EMPTY
        return tag.replace(cls.ESCAPE, cls.ESCAPE * 2).replace(",", cls.ESCAPE + ";")

    @classmethod
    def decode_tag(cls, text: str) -> str:
        if text == cls.EMPTY:
            return ""
        out: list[str] = []
        chars = iter(text)
        for char in chars:
            if char == cls.ESCAPE:
                following = next(chars, "")
                out.append("," if following == ";" else following)
            else:
                out.append(char)
        return "".join(out)

    def process_bind_param(self, value: list[str] | None, dialect: Any) -> str:
        if not value:
            return ""
        return "," + ",".join(self.encode_tag(t) for t in value) + ","

    def process_result_value(self, value: str | None, dialect: Any) -> list[str]:
        return [self.decode_tag(t) for t in (value or "").split(",") if t]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, onupdate=utcnow)


class Provisioned(Timestamps):
    """Common columns of every object in a load balancer's tree."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    provisioning_status: Mapped[str] = mapped_column(String(16), default=c.PENDING_CREATE)
    operating_status: Mapped[str] = mapped_column(String(16), default=c.OFFLINE)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    tags: Mapped[list[str]] = mapped_column(TagList, default=list)


# --- tenancy -------------------------------------------------------------------------


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(String(255))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Quota(Base):
    __tablename__ = "quotas"
    project_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    load_balancer: Mapped[int | None] = mapped_column(Integer, nullable=True)
    listener: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pool: Mapped[int | None] = mapped_column(Integer, nullable=True)
    member: Mapped[int | None] = mapped_column(Integer, nullable=True)
    health_monitor: Mapped[int | None] = mapped_column(Integer, nullable=True)
    l7policy: Mapped[int | None] = mapped_column(Integer, nullable=True)
    l7rule: Mapped[int | None] = mapped_column(Integer, nullable=True)


# --- catalogue: flavors and availability zones ----------------------------------------


class FlavorProfile(Base):
    __tablename__ = "flavor_profiles"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), default="")
    provider_name: Mapped[str] = mapped_column(String(64))
    flavor_data: Mapped[str] = mapped_column(Text, default="{}")


class Flavor(Base):
    __tablename__ = "flavors"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    flavor_profile_id: Mapped[str] = mapped_column(ForeignKey("flavor_profiles.id"))


class AvailabilityZoneProfile(Base):
    __tablename__ = "availability_zone_profiles"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), default="")
    provider_name: Mapped[str] = mapped_column(String(64))
    availability_zone_data: Mapped[str] = mapped_column(Text, default="{}")


class AvailabilityZone(Base):
    __tablename__ = "availability_zones"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    availability_zone_profile_id: Mapped[str] = mapped_column(
        ForeignKey("availability_zone_profiles.id")
    )


# --- networks without Neutron ----------------------------------------------------------


class Network(Base, Timestamps):
    __tablename__ = "networks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    network_type: Mapped[str] = mapped_column(String(16), default="flat")
    physical_network: Mapped[str | None] = mapped_column(String(64), nullable=True)
    segmentation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # True when agents create the bridge themselves; False means it must already exist.
    bridge_managed: Mapped[bool] = mapped_column(Boolean, default=True)
    mtu: Mapped[int] = mapped_column(Integer, default=1500)
    tags: Mapped[list[str]] = mapped_column(TagList, default=list)
    subnets: Mapped[list[Subnet]] = relationship(back_populates="network")


class Subnet(Base, Timestamps):
    __tablename__ = "subnets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    ip_version: Mapped[int] = mapped_column(Integer, default=4)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    allocation_pools: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, default=False)
    tags: Mapped[list[str]] = mapped_column(TagList, default=list)
    network: Mapped[Network] = relationship(back_populates="subnets")


class Port(Base, Timestamps):
    """An address taken from a subnet: a VIP, an instance address, a VRRP address."""

    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("subnet_id", "ip_address"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id"), index=True)
    ip_address: Mapped[str] = mapped_column(String(64))
    mac_address: Mapped[str] = mapped_column(String(17), default="")
    name: Mapped[str] = mapped_column(String(255), default="")
    device_owner: Mapped[str] = mapped_column(String(64), default="")
    device_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)


# --- the load balancer tree (Octavia's object model) ----------------------------------


class LoadBalancer(Base, Provisioned):
    __tablename__ = "load_balancers"
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    provider: Mapped[str] = mapped_column(String(64))
    flavor_id: Mapped[str | None] = mapped_column(ForeignKey("flavors.id"), nullable=True)
    availability_zone: Mapped[str | None] = mapped_column(String(255), nullable=True)
    vip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    vip_port_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    vip_subnet_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    vip_network_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    vip_qos_policy_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    vip_vnic_type: Mapped[str] = mapped_column(String(16), default="normal")
    # Every change to the tree bumps desired_generation; the controller records
    # the generation the provider has fully applied. PENDING_* is the gap.
    desired_generation: Mapped[int] = mapped_column(BigInteger, default=1)
    applied_generation: Mapped[int] = mapped_column(BigInteger, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Set by the admin failover call; the controller clears it once the provider rebuilt.
    failover_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The host an instance just left by failover: its replacement avoids it when
    # another host can take it. Cleared once the replacement is placed.
    failover_left_host_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # A migration's host for the next instance placed (a failover's rebuild goes there).
    failover_target_host_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # The controller's work queue lives in these rows (`due_for_reconcile`): besides a
    # newer desired generation or a failover request, anyone who knows the data plane
    # may differ from the tree (a host lost, an instance lagging, a failed apply to
    # retry) sets `reconcile_requested`; the controller clears it when it claims the LB.
    reconcile_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The observation queue (`due_for_observation`): whoever changes what an
    # observation reads (an instance's reported health, the applied tree, a host's
    # liveness) bumps `health_generation`; the controller records the one it observed.
    health_generation: Mapped[int] = mapped_column(BigInteger, default=0)
    observed_generation: Mapped[int] = mapped_column(BigInteger, default=0)
    # A lease lets several controllers share the work without two reconciling one LB.
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    listeners: Mapped[list[Listener]] = relationship(
        back_populates="load_balancer", order_by="Listener.created_at"
    )
    pools: Mapped[list[Pool]] = relationship(
        back_populates="load_balancer", order_by="Pool.created_at"
    )


class Listener(Base, Provisioned):
    __tablename__ = "listeners"
    __table_args__ = (UniqueConstraint("load_balancer_id", "protocol", "protocol_port"),)
    load_balancer_id: Mapped[str] = mapped_column(ForeignKey("load_balancers.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    protocol: Mapped[str] = mapped_column(String(32))
    protocol_port: Mapped[int] = mapped_column(Integer)
    connection_limit: Mapped[int] = mapped_column(Integer, default=-1)
    default_pool_id: Mapped[str | None] = mapped_column(ForeignKey("pools.id"), nullable=True)
    default_tls_container_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    sni_container_refs: Mapped[list[str]] = mapped_column(JSON, default=list)
    client_ca_tls_container_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    client_authentication: Mapped[str] = mapped_column(String(10), default="NONE")
    client_crl_container_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    insert_headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    timeout_client_data: Mapped[int] = mapped_column(Integer, default=50000)
    timeout_member_connect: Mapped[int] = mapped_column(Integer, default=5000)
    timeout_member_data: Mapped[int] = mapped_column(Integer, default=50000)
    timeout_tcp_inspect: Mapped[int] = mapped_column(Integer, default=0)
    allowed_cidrs: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    tls_ciphers: Mapped[str | None] = mapped_column(Text, nullable=True)
    tls_versions: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    alpn_protocols: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    hsts_max_age: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hsts_include_subdomains: Mapped[bool] = mapped_column(Boolean, default=False)
    hsts_preload: Mapped[bool] = mapped_column(Boolean, default=False)

    load_balancer: Mapped[LoadBalancer] = relationship(back_populates="listeners")
    l7policies: Mapped[list[L7Policy]] = relationship(
        back_populates="listener", order_by="L7Policy.position"
    )


class Pool(Base, Provisioned):
    __tablename__ = "pools"
    load_balancer_id: Mapped[str] = mapped_column(ForeignKey("load_balancers.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    protocol: Mapped[str] = mapped_column(String(32))
    lb_algorithm: Mapped[str] = mapped_column(String(32))
    session_persistence: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    tls_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    tls_container_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    ca_tls_container_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    crl_container_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    tls_ciphers: Mapped[str | None] = mapped_column(Text, nullable=True)
    tls_versions: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    alpn_protocols: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)

    load_balancer: Mapped[LoadBalancer] = relationship(back_populates="pools")
    members: Mapped[list[Member]] = relationship(
        back_populates="pool", order_by="Member.created_at"
    )
    health_monitor: Mapped[HealthMonitor | None] = relationship(back_populates="pool")
    # What uses the pool (read-only; see `listeners`).
    default_listeners: Mapped[list[Listener]] = relationship(
        primaryjoin=lambda: Listener.default_pool_id == Pool.id,
        order_by=lambda: (Listener.created_at, Listener.id),
        viewonly=True,
    )
    redirect_policies: Mapped[list[L7Policy]] = relationship(
        primaryjoin=lambda: L7Policy.redirect_pool_id == Pool.id,
        order_by=lambda: (L7Policy.created_at, L7Policy.id),
        viewonly=True,
    )

    @property
    def listeners(self) -> list[Listener]:
        """Listeners that use the pool: by default, or (as Octavia counts) through an
        enabled L7 policy with rules that redirects to it."""
        found = list(self.default_listeners)
        for policy in self.redirect_policies:
            if policy.admin_state_up and policy.rules and policy.listener not in found:
                found.append(policy.listener)
        return found


class Member(Base, Provisioned):
    __tablename__ = "members"
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id"), index=True)
    load_balancer_id: Mapped[str] = mapped_column(ForeignKey("load_balancers.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    address: Mapped[str] = mapped_column(String(64))
    protocol_port: Mapped[int] = mapped_column(Integer)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    backup: Mapped[bool] = mapped_column(Boolean, default=False)
    subnet_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    monitor_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    monitor_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    vnic_type: Mapped[str] = mapped_column(String(16), default="normal")

    pool: Mapped[Pool] = relationship(back_populates="members")


class HealthMonitor(Base, Provisioned):
    __tablename__ = "health_monitors"
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id"), unique=True)
    load_balancer_id: Mapped[str] = mapped_column(ForeignKey("load_balancers.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    type: Mapped[str] = mapped_column(String(36))
    delay: Mapped[int] = mapped_column(Integer)
    timeout: Mapped[int] = mapped_column(Integer)
    max_retries: Mapped[int] = mapped_column(Integer)
    max_retries_down: Mapped[int] = mapped_column(Integer, default=3)
    http_method: Mapped[str | None] = mapped_column(String(16), nullable=True)
    url_path: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    expected_codes: Mapped[str | None] = mapped_column(String(64), nullable=True)
    http_version: Mapped[float | None] = mapped_column(Float, nullable=True)
    domain_name: Mapped[str | None] = mapped_column(String(255), nullable=True)

    pool: Mapped[Pool] = relationship(back_populates="health_monitor")


class L7Policy(Base, Provisioned):
    __tablename__ = "l7policies"
    listener_id: Mapped[str] = mapped_column(ForeignKey("listeners.id"), index=True)
    load_balancer_id: Mapped[str] = mapped_column(ForeignKey("load_balancers.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    action: Mapped[str] = mapped_column(String(36))
    position: Mapped[int] = mapped_column(Integer)
    redirect_pool_id: Mapped[str | None] = mapped_column(ForeignKey("pools.id"), nullable=True)
    redirect_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    redirect_prefix: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    redirect_http_code: Mapped[int | None] = mapped_column(Integer, nullable=True)

    listener: Mapped[Listener] = relationship(back_populates="l7policies")
    rules: Mapped[list[L7Rule]] = relationship(
        back_populates="l7policy", order_by="L7Rule.created_at"
    )


class L7Rule(Base, Provisioned):
    __tablename__ = "l7rules"
    l7policy_id: Mapped[str] = mapped_column(ForeignKey("l7policies.id"), index=True)
    load_balancer_id: Mapped[str] = mapped_column(ForeignKey("load_balancers.id"), index=True)
    type: Mapped[str] = mapped_column(String(36))
    compare_type: Mapped[str] = mapped_column(String(36))
    key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    value: Mapped[str] = mapped_column(String(255))
    invert: Mapped[bool] = mapped_column(Boolean, default=False)

    l7policy: Mapped[L7Policy] = relationship(back_populates="rules")


class ListenerStats(Base):
    """A listener's `ListenerCounters` as last reported by the data plane (summed over
    instances): one column per counter field, spelled out for typed mappings and
    migrations (a unit test holds them to `openha.domain.observed.COUNTER_FIELDS`)."""

    __tablename__ = "listener_stats"
    listener_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    load_balancer_id: Mapped[str] = mapped_column(String(36), index=True)
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)
    active_connections: Mapped[int] = mapped_column(BigInteger, default=0)
    total_connections: Mapped[int] = mapped_column(BigInteger, default=0)
    request_errors: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


# --- hosts, instances, events ---------------------------------------------------------


class Host(Base, Timestamps):
    __tablename__ = "hosts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    availability_zone: Mapped[str] = mapped_column(String(255), default="")
    management_url: Mapped[str] = mapped_column(String(255), default="")
    credential_hash: Mapped[str] = mapped_column(String(64))
    # The controller uses this secret to call the agent; the agent checks it.
    agent_secret: Mapped[str] = mapped_column(String(128), default="")
    # Instances the host may run: the operator's setting when there is one (it sticks),
    # else what the agent reports from the host's resources (`openha.domain.capacity`).
    capacity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reported_capacity: Mapped[int] = mapped_column(Integer, default=DEFAULT_CAPACITY)
    # What the scheduler honours (and `?capacity=` filters on).
    effective_capacity: Mapped[int] = column_property(func.coalesce(capacity, reported_capacity))
    # Bumped whenever an instance is placed on the host or leaves it: an agent that
    # already holds the newest list of wanted instances is not sent it again.
    placement_version: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default=c.HOST_ENROLLED)
    admin_state: Mapped[str] = mapped_column(String(16), default=c.HOST_ENABLED)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    agent_version: Mapped[str] = mapped_column(String(32), default="")
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Loaded only by queries that ask for it (`with_expression`): the operator's host list.
    instance_count: Mapped[int | None] = query_expression()


class Instance(Base, Timestamps):
    """One data plane (HAProxy, plus keepalived for a pair) of one LB on one host."""

    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    load_balancer_id: Mapped[str] = mapped_column(ForeignKey("load_balancers.id"), index=True)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), nullable=True, index=True)
    role: Mapped[str] = mapped_column(String(16), default=c.ROLE_STANDALONE)
    status: Mapped[str] = mapped_column(String(16), default=c.INSTANCE_ALLOCATED)
    port_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    ip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    vrrp_priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    applied_generation: Mapped[int] = mapped_column(BigInteger, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    health: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Marked for failover (by an admin, or by the provider once it chose this one):
    # the rebuild that follows takes this instance, whatever a push writes to `status`.
    failover_requested_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # In a migration (`c.MIGRATION_*`): placement leaves the instance to the operation.
    migration: Mapped[str | None] = mapped_column(String(16), nullable=True)

    # Read-only, for the operator's views of an instance (Octavia's amphora).
    load_balancer: Mapped[LoadBalancer] = relationship(viewonly=True)
    host: Mapped[Host | None] = relationship(viewonly=True)
    vrrp_router: Mapped[VrrpRouterId | None] = relationship(
        primaryjoin=lambda: foreign(Instance.load_balancer_id) == VrrpRouterId.load_balancer_id,
        viewonly=True,
    )


def _bump_placement_version(connection: Connection, host_ids: Iterable[str | None]) -> None:
    hosts = sorted({h for h in host_ids if h})
    if hosts:
        connection.execute(
            update(Host)
            .where(Host.id.in_(hosts))
            .values(placement_version=Host.placement_version + 1)
        )


# Any change to the set of instances a host should run bumps the host's
# `placement_version`, whichever code made it: heartbeat answers rely on it.
@event.listens_for(Instance, "after_insert")
@event.listens_for(Instance, "after_delete")
def _instance_placed_or_removed(_mapper: Any, connection: Connection, inst: Instance) -> None:
    _bump_placement_version(connection, [inst.host_id])


@event.listens_for(Instance, "after_update")
def _instance_moved(_mapper: Any, connection: Connection, inst: Instance) -> None:
    history = inspect(inst).attrs.host_id.history
    if history.has_changes():
        _bump_placement_version(connection, [*history.added, *history.deleted])


class VrrpRouterId(Base):
    """A VRRP virtual router id, unique per L2 segment (network), held by one LB's pair."""

    __tablename__ = "vrrp_router_ids"
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), primary_key=True)
    vrid: Mapped[int] = mapped_column(Integer, primary_key=True)
    load_balancer_id: Mapped[str] = mapped_column(
        ForeignKey("load_balancers.id"), unique=True, index=True
    )


class Service(Base):
    """A running API or controller process, beating while it lives (`openha.liveness`).

    The controller counts a host's silence only while an API was up to hear it, and
    takes over the claims of a controller that stopped beating.
    """

    __tablename__ = "services"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    host_name: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime)
    # What the process publishes with its beats (a controller's reconcile counters).
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class IdempotencyKey(Base):
    """The answer to a create sent with an `Idempotency-Key` header, kept for a day.

    Written in the create's own transaction, so a key is recorded exactly when its
    object is; a retry with the same key and body gets this answer again."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("project_id", "route", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(255))
    route: Mapped[str] = mapped_column(String(255))  # the operation and its path's ids
    key: Mapped[str] = mapped_column(String(255))
    request_digest: Mapped[str] = mapped_column(String(64))  # sha256 of the body
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Operation(Base):
    """An admin action (migrate, drain, ...): desired state the controller advances step
    by step (`openha.controller.operations`); it outlives any process."""

    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    target_type: Mapped[str] = mapped_column(String(32))  # loadbalancer | host
    target_id: Mapped[str] = mapped_column(String(36), index=True)
    state: Mapped[str] = mapped_column(String(16), default=c.OPERATION_PENDING, index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the kind's step function remembers between steps (instances built, ...).
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # [{"step": name, "at": ISO time, "detail": text}], oldest first.
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(255), default="")
    parent_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    severity: Mapped[str] = mapped_column(String(16), default=c.SEVERITY_INFO)
    kind: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    load_balancer_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    host_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    instance_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The object the event is about, when narrower than the LB: ("member", its id) …
    resource_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    resource_id: Mapped[str | None] = mapped_column(String(36), nullable=True)


# --- webhooks (issue 10): subscriptions and their durable outbox ------------------------


class Webhook(Base, Timestamps):
    """A subscription: events matching its filters are POSTed, signed, to `url`.

    A tenant's webhook hears its own project's events; an operator's (`all_projects`)
    hears every event, host events included."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    all_projects: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str] = mapped_column(String(255), default="")
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(255))  # write-only through the API
    kinds: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every kind
    min_severity: Mapped[str] = mapped_column(String(16), default=c.SEVERITY_INFO)
    load_balancer_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class WebhookDelivery(Base):
    """One event for one webhook: the outbox row (written with the event) and its log."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=c.DELIVERY_PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When it is due; a controller claiming it moves this past its attempt's deadline.
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow_precise)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)

    event: Mapped[Event] = relationship()


# --- certificate store (Barbican v1 subset): payloads sealed with the operator's key -----


class StoredSecret(Base, Timestamps):
    __tablename__ = "certstore_secrets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    creator_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    secret_type: Mapped[str] = mapped_column(String(32), default="opaque")
    algorithm: Mapped[str | None] = mapped_column(String(255), nullable=True)
    bit_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    mode: Mapped[str | None] = mapped_column(String(255), nullable=True)
    expiration: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    payload_content_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    sealed_payload: Mapped[str | None] = mapped_column(Text, nullable=True)


class StoredContainer(Base, Timestamps):
    __tablename__ = "certstore_containers"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    creator_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    type: Mapped[str] = mapped_column(String(32), default="generic")
    # [{"name": "certificate", "secret_id": "<uuid>"}, ...]
    secret_refs: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)


class CertificateExpiry(Base):
    """When a TLS listener's first certificate expires, as the controller last applied it."""

    __tablename__ = "certificate_expiry"
    listener_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    load_balancer_id: Mapped[str] = mapped_column(String(36), index=True)
    project_id: Mapped[str] = mapped_column(String(255))
    not_after: Mapped[datetime] = mapped_column(DateTime, index=True)
    # The last event told about it: "" (none), "expiring" or "expired".
    warned: Mapped[str] = mapped_column(String(16), default="")


def due_for_reconcile() -> ColumnElement[bool]:
    """LBs the controller must look at (backoff aside): the work queue's predicate.

    The partial index below holds exactly these rows, so the controller's frequent
    "what is due?" query reads the few due LBs, never the whole fleet.
    """
    return or_(
        LoadBalancer.desired_generation > LoadBalancer.applied_generation,
        LoadBalancer.reconcile_requested,
        LoadBalancer.failover_requested,
    )


def due_for_observation() -> ColumnElement[bool]:
    """LBs whose reported health changed since the controller last derived their statuses."""
    return LoadBalancer.health_generation > LoadBalancer.observed_generation


Index(
    "ix_load_balancers_due",
    LoadBalancer.next_attempt_at,
    sqlite_where=due_for_reconcile(),
    postgresql_where=due_for_reconcile(),
)
Index(
    "ix_webhook_deliveries_due",
    WebhookDelivery.next_attempt_at,
    sqlite_where=WebhookDelivery.status == c.DELIVERY_PENDING,
    postgresql_where=WebhookDelivery.status == c.DELIVERY_PENDING,
)
Index(
    "ix_load_balancers_observation_due",
    LoadBalancer.id,
    sqlite_where=due_for_observation(),
    postgresql_where=due_for_observation(),
)

# One live member per (pool, address, port): a member being deleted does not hold its
# address, so it may be added again before the controller has removed the old row.
Index(
    "uq_members_live_address",
    Member.pool_id,
    Member.address,
    Member.protocol_port,
    unique=True,
    sqlite_where=Member.provisioning_status != c.PENDING_DELETE,
    postgresql_where=Member.provisioning_status != c.PENDING_DELETE,
)


TREE_MODELS: tuple[type[Provisioned], ...] = (
    Listener,
    Pool,
    Member,
    HealthMonitor,
    L7Policy,
    L7Rule,
)


# --- audit trail -----------------------------------------------------------------------


class AuditRecord(Base):
    """One write through the API, whoever made it and however it ended (`api.audit`).

    Never the body (it may hold secrets): its sha256. `object_ids` is stored as tags
    are (",a,b,"), so "who touched this object?" is a portable LIKE."""

    __tablename__ = "audit_records"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow_precise, index=True)
    project_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the token's id
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(2048))
    object_ids: Mapped[list[str]] = mapped_column(TagList, default=list)
    body_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status_code: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
