"""Snapshots that cross process boundaries: a load balancer's desired tree and an instance's spec.

`LoadBalancerSpec` is what the controller reads from the database (objects in
PENDING_DELETE already left out) and hands to a provider; the HAProxy provider
renders it into an `InstanceSpec` per instance, which is what an agent applies.
Only validated values ever get here.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from openha.domain import constants as c
from openha.domain.logtargets import LogTarget
from openha.domain.protection import ProtectionSettings

# A PEM private key of any kind (PKCS#8, RSA, EC, encrypted): what must never travel
# in clear nor rest on a persistent disk.
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


def holds_private_key(content: str) -> bool:
    return _PRIVATE_KEY.search(content) is not None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SessionPersistenceSpec(_Frozen):
    type: str
    cookie_name: str | None = None
    persistence_timeout: int | None = None
    persistence_granularity: str | None = None


class MemberSpec(_Frozen):
    id: str
    address: str
    protocol_port: int
    weight: int = 1
    backup: bool = False
    admin_state_up: bool = True
    monitor_address: str | None = None
    monitor_port: int | None = None
    subnet_id: str | None = None


class HealthMonitorSpec(_Frozen):
    id: str
    type: str
    delay: int
    timeout: int
    max_retries: int
    max_retries_down: int = 3
    http_method: str | None = None
    url_path: str | None = None
    expected_codes: str | None = None
    http_version: float | None = None
    domain_name: str | None = None
    admin_state_up: bool = True


class CertificateSpec(_Frozen):
    """A server or client certificate with its chain and key: secret, shipped as a file."""

    pem: str  # certificate, intermediates, unencrypted key (`domain.certificates`)
    names: tuple[str, ...] = ()
    not_after: datetime | None = None


class PoolSpec(_Frozen):
    id: str
    protocol: str
    lb_algorithm: str
    admin_state_up: bool = True
    session_persistence: SessionPersistenceSpec | None = None
    tls_enabled: bool = False
    tls_ciphers: str | None = None
    tls_versions: tuple[str, ...] | None = None
    alpn_protocols: tuple[str, ...] | None = None
    # Read from the certificate store by the controller (PEM); None when not set.
    tls_certificate: CertificateSpec | None = None
    ca_certificates: str | None = None
    revocation_list: str | None = None
    # Why the references above could not be read (the apply fails with it), if they could not.
    tls_problem: str | None = None
    members: tuple[MemberSpec, ...] = ()
    health_monitor: HealthMonitorSpec | None = None


class L7RuleSpec(_Frozen):
    id: str
    type: str
    compare_type: str
    key: str | None = None
    value: str
    invert: bool = False
    admin_state_up: bool = True


class L7PolicySpec(_Frozen):
    id: str
    action: str
    position: int
    redirect_pool_id: str | None = None
    redirect_url: str | None = None
    redirect_prefix: str | None = None
    redirect_http_code: int | None = None
    admin_state_up: bool = True
    rules: tuple[L7RuleSpec, ...] = ()


class ListenerSpec(_Frozen):
    id: str
    protocol: str
    protocol_port: int
    admin_state_up: bool = True
    connection_limit: int = -1
    default_pool_id: str | None = None
    insert_headers: dict[str, str] = {}
    timeout_client_data: int = 50000
    timeout_member_connect: int = 5000
    timeout_member_data: int = 50000
    timeout_tcp_inspect: int = 0
    allowed_cidrs: tuple[str, ...] | None = None
    l7policies: tuple[L7PolicySpec, ...] = ()
    # TERMINATED_HTTPS: certificates (default first, then SNI) read from the certificate
    # store by the controller, the client CA and CRL as PEM, and the listener's options.
    tls_certificates: tuple[CertificateSpec, ...] = ()
    client_authentication: str = "NONE"
    client_ca_certificates: str | None = None
    client_revocation_list: str | None = None
    tls_problem: str | None = None
    tls_ciphers: str | None = None
    tls_versions: tuple[str, ...] | None = None
    alpn_protocols: tuple[str, ...] | None = None
    hsts_max_age: int | None = None
    hsts_include_subdomains: bool = False
    hsts_preload: bool = False


class SubnetSpec(_Frozen):
    id: str
    cidr: str
    gateway_ip: str | None = None
    network_id: str
    network_type: str = "flat"  # flat | vlan | vxlan
    physical_network: str | None = None  # host bridge (flat) or parent interface (vlan)
    segmentation_id: int | None = None
    bridge_managed: bool = True
    mtu: int = 1500


class LoadBalancerSpec(_Frozen):
    id: str
    project_id: str
    generation: int
    admin_state_up: bool = True
    topology: str = "SINGLE"
    vip_address: str
    vip_subnet: SubnetSpec
    listeners: tuple[ListenerSpec, ...] = ()
    pools: tuple[PoolSpec, ...] = ()
    member_subnets: tuple[SubnetSpec, ...] = ()
    flavor: dict[str, Any] = {}
    # The protection profile the configuration is built from (the operator's for this
    # LB, else its flavor's), and the one its maps hold (under attack: that profile's).
    protection: ProtectionSettings | None = None
    protection_runtime: ProtectionSettings | None = None


# --- what an agent applies ---------------------------------------------------------------


class InterfaceSpec(_Frozen):
    """One leg of an instance namespace into a host bridge."""

    name: str  # inside the namespace, e.g. eth0
    bridge: str  # host bridge the veth peer joins
    bridge_managed: bool = True  # create the bridge when missing
    vlan_parent: str | None = None  # for VLAN networks: the host interface carrying the tag
    vlan_id: int | None = None
    mtu: int = 1500
    addresses: tuple[str, ...] = ()  # CIDR notation, e.g. 10.0.0.5/24
    gateway: str | None = None  # default route via this interface when set


class ResourceSpec(_Frozen):
    """An instance's resource walls from its flavor; None: the host's default."""

    cpu_weight: int | None = None
    cpu_max: float | None = None  # cores
    memory_max_mb: int | None = None
    pids_max: int | None = None


class InstanceSpec(_Frozen):
    instance_id: str
    load_balancer_id: str
    project_id: str
    generation: int
    role: str = c.ROLE_STANDALONE
    namespace: str
    interfaces: tuple[InterfaceSpec, ...]
    vip_address: str
    vip_interface: str = "eth0"
    # The VIP is configured by the agent for SINGLE, by keepalived for a pair.
    vip_managed_by_keepalived: bool = False
    haproxy_config: str
    keepalived_config: str | None = None
    files: dict[str, str] = {}
    # Where this instance's access logs are delivered besides the host's disk (the
    # flavor's `log_targets`; the agent adds the deployment's own).
    log_targets: tuple[LogTarget, ...] = ()
    resources: ResourceSpec = ResourceSpec()
    # The address of the instance a migration is retiring, which still serves the
    # connections opened before the VIP moved here: segments of connections unknown
    # here are handed to it (`agent.handoff`) until it is removed.
    handoff_to: str | None = None

    @field_validator("handoff_to")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        return None if value is None else str(ipaddress.ip_address(value))

    def key_files(self) -> tuple[str, ...]:
        """The names of the files that hold a private key (certificates with their keys)."""
        return tuple(sorted(n for n, content in self.files.items() if holds_private_key(content)))
