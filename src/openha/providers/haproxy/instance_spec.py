"""What one instance of the haproxy provider runs: LoadBalancerSpec + placements -> InstanceSpec.

Pure: it renders the HAProxy (and, for a pair, keepalived) configuration and
lays out the namespace's interfaces from the LB's desired tree and where its
instances were placed. Nothing is read or written; the driver pushes the result.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from openha.agent.paths import (
    CHROOT_LOG_SOCKET,
    CHROOT_SYSLOG_SOCKET,
    InstancePaths,
    instance_paths,
    namespace_name,
)
from openha.domain import constants as c
from openha.domain.logtargets import parse_targets
from openha.domain.spec import InstanceSpec, LoadBalancerSpec, ResourceSpec
from openha.providers.haproxy import plumbing
from openha.providers.haproxy.placement import Placement
from openha.render import tls
from openha.render.haproxy import (
    HAProxyPaths,
    PeerSpec,
    PeersSpec,
    RenderError,
    render_haproxy,
)
from openha.render.keepalived import (
    BACKUP_PRIORITY,
    MASTER_PRIORITY,
    VrrpSpec,
    render_keepalived,
    render_notify_script,
)
from openha.render.protection import map_files
from openha.settings import Settings

PEER_PORT = 1024  # HAProxy peers listen on the instance address, never on the VIP
NOTIFY_SCRIPT = "vrrp_notify.sh"
# Flavor profile keys of an instance's resource walls (checked by the driver's
# validate_flavor; the agent's settings give the defaults).
RESOURCE_KEYS = ("cpu_weight", "cpu_max", "memory_max_mb", "pids_max")


def haproxy_paths(paths: InstancePaths) -> HAProxyPaths:
    return HAProxyPaths(
        stats_socket=str(paths.stats_socket),
        chroot=str(paths.chroot_dir),
        log_socket=CHROOT_LOG_SOCKET,
        syslog_socket=CHROOT_SYSLOG_SOCKET,
        state_dir=str(paths.state_dir),
        files_dir=str(paths.files_dir),
        protect_socket=str(paths.protect_socket),
    )


def build(
    spec: LoadBalancerSpec,
    placement: Placement,
    placements: Sequence[Placement],
    settings: Settings,
) -> InstanceSpec:
    """The spec of `placement`'s instance; `placements` are all the LB's instances.

    Raises RenderError for a tree HAProxy cannot express, and
    plumbing.UnsupportedNetwork for a network the agents cannot join.
    """
    paths = instance_paths(placement.agent_dir, placement.instance_id)
    interfaces = [
        plumbing.interface("eth0", spec.vip_subnet, placement.ip_address, default_route=True)
    ]
    subnets = {sub.id: sub for sub in spec.member_subnets}
    for n, (subnet_id, address) in enumerate(placement.member_legs, start=1):
        interfaces.append(
            plumbing.interface(f"eth{n}", subnets[subnet_id], address, default_route=False)
        )
    pair = len(placements) > 1
    peers = None
    keepalived = None
    files: dict[str, str] = {}
    if pair:
        others = [p for p in placements if p.instance_id != placement.instance_id]
        peers = PeersSpec(
            local_peer=namespace_name(placement.instance_id),
            peers=tuple(
                PeerSpec(name=namespace_name(p.instance_id), address=p.ip_address, port=PEER_PORT)
                for p in placements
            ),
        )
        files[NOTIFY_SCRIPT] = render_notify_script(str(paths.vrrp_state_file))
        keepalived = render_keepalived(
            VrrpSpec(
                lb_id=spec.id,
                instance_id=placement.instance_id,
                vrid=placement.vrid,
                priority=MASTER_PRIORITY if placement.role == c.ROLE_MASTER else BACKUP_PRIORITY,
                interface="eth0",
                local_address=placement.ip_address,
                peer_addresses=tuple(p.ip_address for p in others),
                vip=spec.vip_address,
                vip_prefixlen=ipaddress.ip_network(spec.vip_subnet.cidr).prefixlen,
                track_file=str(paths.haproxy_down),
                notify_script=str(paths.files_dir / NOTIFY_SCRIPT),
                advert_int=settings.vrrp_advert_interval,
                vrrp_version=settings.vrrp_version,
                auth_pass=placement.vrrp_secret,
            )
        )
    access_log = spec.flavor.get("access_log", settings.default_access_log)
    hpaths = haproxy_paths(paths)
    try:
        files |= tls.instance_files(spec, str(paths.files_dir))
    except tls.TlsError as exc:
        raise RenderError(str(exc)) from None
    config = render_haproxy(
        spec,
        hpaths,
        peers=peers,
        access_log=access_log,
        nbthread=settings.haproxy_nbthread,
        listener_maxconn=settings.haproxy_default_maxconn,
        instance_id=placement.instance_id,
        log_ring_size=settings.log_ring_size,
        request_id_header=bool(spec.flavor.get("request_id_header", False)),
        protection=spec.protection,
    )
    if spec.protection is not None:
        # The thresholds and lists, replaced at run time when only they change.
        files.update(map_files(spec.protection_runtime or spec.protection))
    return InstanceSpec(
        instance_id=placement.instance_id,
        load_balancer_id=spec.id,
        project_id=spec.project_id,
        generation=spec.generation,
        role=placement.role,
        namespace=namespace_name(placement.instance_id),
        interfaces=tuple(interfaces),
        vip_address=spec.vip_address,
        vip_interface="eth0",
        vip_managed_by_keepalived=pair,
        haproxy_config=config,
        keepalived_config=keepalived,
        files=files,
        log_targets=parse_targets(spec.flavor.get("log_targets")),
        resources=ResourceSpec(**{k: spec.flavor[k] for k in RESOURCE_KEYS if k in spec.flavor}),
        handoff_to=placement.handoff_to or None,
    )
