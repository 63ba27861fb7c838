"""The `haproxy` provider: each load balancer as HAProxy in network namespaces on agent hosts.

SINGLE places one STANDALONE instance; ACTIVE_STANDBY (flavor key
`loadbalancer_topology`) places a MASTER and a BACKUP on two hosts. The
controller calls `apply` with the LB's whole desired tree; this module decides
placement, renders each instance's files and pushes them to the agents, and
reads what the agents report in their heartbeats back into operating statuses.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import delete, func, select

from openha import ipam
from openha.agent.paths import InstancePaths, instance_paths, namespace_name
from openha.controller import events, hostmonitor
from openha.controller.scheduler import HostView, NoHostAvailable, choose_host
from openha.db import transaction
from openha.domain import constants as c
from openha.domain.observed import ListenerCounters
from openha.domain.spec import InstanceSpec, LoadBalancerSpec
from openha.domain.status import derive
from openha.models import (
    AvailabilityZone,
    AvailabilityZoneProfile,
    Host,
    Instance,
    LoadBalancer,
    Port,
    Subnet,
    VrrpRouterId,
)
from openha.providers.base import (
    ApplyResult,
    Capability,
    ObservedState,
    Provider,
    UnsupportedOption,
)
from openha.providers.haproxy import agent_client, plumbing
from openha.providers.haproxy.agent_client import AgentAddress, AgentError, AgentRejected
from openha.render.haproxy import (
    ACCESS_LOG_MODES,
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
    render_check_script,
    render_keepalived,
)

HOST_UP = "UP"
INSTANCE_OWNER = "openha:instance"
PEER_PORT = 1024  # HAProxy peers listen on the instance address, never on the VIP
CHECK_SCRIPT = "check_haproxy.sh"
COUNTERS = ("bytes_in", "bytes_out", "active_connections", "total_connections", "request_errors")


@dataclass(frozen=True)
class Placement:
    instance_id: str
    role: str
    host_id: str
    host_name: str
    agent: AgentAddress
    agent_dir: str
    ip_address: str
    applied_generation: int
    vrid: int = 0
    vrrp_secret: str = ""
    # (subnet id, instance address) on each member subnet other than the VIP's.
    member_legs: tuple[tuple[str, str], ...] = ()


def haproxy_paths(paths: InstancePaths) -> HAProxyPaths:
    return HAProxyPaths(
        stats_socket=str(paths.stats_socket),
        log_socket=str(paths.log_socket),
        state_dir=str(paths.state_dir),
    )


class HAProxyProvider(Provider):
    name = "haproxy"
    description = "HAProxy in network namespaces on OpenHA agent hosts (SINGLE or ACTIVE_STANDBY)."
    unsupported: ClassVar[Mapping[str, frozenset[Any]]] = {
        # HAProxy speaks neither UDP nor SCTP; TLS termination arrives with the TLS work.
        "listener.protocol": frozenset({"UDP", "SCTP", "PROMETHEUS", "TERMINATED_HTTPS"}),
        "pool.protocol": frozenset({"UDP", "SCTP"}),
        "pool.lb_algorithm": frozenset({"SOURCE_IP_PORT"}),
        "healthmonitor.type": frozenset({"UDP-CONNECT", "SCTP"}),
    }

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        # LB id -> host an instance just left by failover: a placement hint only.
        self._leaving: dict[str, str] = {}

    def flavor_capabilities(self) -> list[Capability]:
        return [
            Capability("loadbalancer_topology", "SINGLE or ACTIVE_STANDBY (a VRRP pair)."),
            Capability(
                "access_log",
                "all: a log line per request; errors: only failed or abnormal requests "
                "(much cheaper on busy load balancers); none: no traffic logs.",
            ),
        ]

    def availability_zone_capabilities(self) -> list[Capability]:
        return [Capability("host_zone", "Hosts whose agent reports this zone serve the LB.")]

    def validate_flavor(self, data: Mapping[str, Any]) -> None:
        super().validate_flavor(data)
        if data.get("access_log", "all") not in ACCESS_LOG_MODES:
            raise UnsupportedOption(f"access_log must be one of {', '.join(ACCESS_LOG_MODES)}")
        topology = data.get("loadbalancer_topology", c.TOPOLOGY_SINGLE)
        if topology not in (c.TOPOLOGY_SINGLE, c.TOPOLOGY_ACTIVE_STANDBY):
            raise UnsupportedOption(
                f"loadbalancer_topology must be {c.TOPOLOGY_SINGLE} or {c.TOPOLOGY_ACTIVE_STANDBY}"
            )

    # --- apply -------------------------------------------------------------------------

    def apply(self, spec: LoadBalancerSpec) -> ApplyResult:
        try:
            placements = self.place(spec)
        except NoHostAvailable as exc:
            return ApplyResult.failed(str(exc))
        except plumbing.UnsupportedNetwork as exc:
            return ApplyResult.failed(str(exc))
        try:
            specs = [self.instance_spec(spec, p, placements) for p in placements]
        except RenderError as exc:
            return ApplyResult.failed(f"cannot render the HAProxy configuration: {exc}")
        with ThreadPoolExecutor(max_workers=max(len(specs), 1)) as pool:
            errors = [e for e in pool.map(self._push, placements, specs) if e]
        if errors:
            return ApplyResult.failed("; ".join(errors))
        return ApplyResult.applied()

    def _push(self, placement: Placement, spec: InstanceSpec) -> str | None:
        try:
            status = agent_client.put_instance(placement.agent, spec)
        except AgentRejected as exc:
            self._record(placement.instance_id, None, str(exc))
            return f"host {placement.host_name} rejected the configuration: {exc}"
        except AgentError as exc:
            self._record(placement.instance_id, None, str(exc))
            return str(exc)
        self._record(
            placement.instance_id, int(status.get("applied_generation", spec.generation)), None
        )
        return None

    def _record(self, instance_id: str, generation: int | None, error: str | None) -> None:
        with transaction(self.context.session_factory) as s:
            inst = s.get(Instance, instance_id)
            if inst is None:
                return
            if generation is not None:
                inst.applied_generation = generation
                inst.status = "ACTIVE"
            inst.last_error = error[:4000] if error else None
            if error:
                inst.status = "ERROR"

    def place(self, spec: LoadBalancerSpec) -> list[Placement]:
        """Make sure every role has an instance on a healthy host; return where they are."""
        roles = (
            [c.ROLE_MASTER, c.ROLE_BACKUP]
            if spec.topology == c.TOPOLOGY_ACTIVE_STANDBY
            else [c.ROLE_STANDALONE]
        )
        with transaction(self.context.session_factory) as s:
            lb = s.get(LoadBalancer, spec.id)
            assert lb is not None
            hosts = {h.id: h for h in s.scalars(select(Host))}
            instances = {
                i.role: i
                for i in s.scalars(select(Instance).where(Instance.load_balancer_id == spec.id))
            }
            for role, inst in list(instances.items()):
                if role not in roles:
                    self._forget(s, inst)
                    del instances[role]
            for role in roles:
                inst = instances.get(role)
                host = hosts.get(inst.host_id) if inst and inst.host_id else None
                if inst is not None and host is not None and host.status == HOST_UP:
                    continue
                if inst is not None and host is not None:
                    paused = hostmonitor.failover_pause_reason(self.context.settings, s)
                    if paused:
                        raise NoHostAvailable(paused)
                if inst is not None:
                    # Its host is gone: the host removes the orphan itself when it returns.
                    events.emit(
                        s,
                        "instance.rescheduled",
                        f"{role} instance {inst.id} left host {host.name if host else '?'}",
                        severity="WARNING",
                        lb=lb,
                        instance_id=inst.id,
                        host_id=inst.host_id,
                    )
                    self._forget(s, inst)
                others = [i.host_id for r, i in instances.items() if r != role and i.host_id]
                # After a failover, prefer any host but the one just left.
                left = self._leaving.pop(lb.id, None)
                views = self._host_views(hosts.values())
                try:
                    chosen = choose_host(
                        views,
                        self._load(s),
                        availability_zone=self._zone(s, lb),
                        avoid=[*others, *([left] if left else [])],
                    )
                except NoHostAvailable:
                    chosen = choose_host(
                        views, self._load(s), availability_zone=self._zone(s, lb), avoid=others
                    )
                inst = Instance(
                    load_balancer_id=lb.id, host_id=chosen.id, role=role, status="ALLOCATED"
                )
                s.add(inst)
                s.flush()
                subnet = s.get(Subnet, spec.vip_subnet.id)
                assert subnet is not None
                port = ipam.allocate(
                    s,
                    subnet,
                    project_id=lb.project_id,
                    device_owner=INSTANCE_OWNER,
                    device_id=inst.id,
                    name=f"openha-instance-{inst.id}",
                )
                inst.port_id, inst.ip_address = port.id, port.ip_address
                instances[role] = inst
                events.emit(
                    s,
                    "instance.scheduled",
                    f"{role} instance on host {chosen.name}",
                    lb=lb,
                    instance_id=inst.id,
                    host_id=chosen.id,
                )
            vrid = self._vrid(s, lb, spec) if len(roles) > 1 else 0
            # VRRPv2's PASS travels in clear text: it only guards against cross-talk
            # between pairs, so a value derived from the LB id is as good as any.
            secret = hashlib.sha256(lb.id.encode()).hexdigest()[:8]
            out = []
            for role in roles:
                inst = instances[role]
                host = hosts[inst.host_id or ""]
                legs = self._member_legs(s, lb, inst, spec)
                out.append(
                    Placement(
                        instance_id=inst.id,
                        role=role,
                        host_id=host.id,
                        host_name=host.name,
                        agent=self._agent(host),
                        agent_dir=str(host.report.get("agent_dir", "")),
                        ip_address=inst.ip_address or "",
                        applied_generation=inst.applied_generation,
                        vrid=vrid,
                        vrrp_secret=secret,
                        member_legs=legs,
                    )
                )
            return out

    def _agent(self, host: Host) -> AgentAddress:
        ca = self.context.settings.agent_ca_file
        return AgentAddress(host.management_url, host.agent_secret, str(ca) if ca else True)

    @staticmethod
    def _member_legs(
        s: Any, lb: LoadBalancer, inst: Instance, spec: LoadBalancerSpec
    ) -> tuple[tuple[str, str], ...]:
        """An address for the instance on every member subnet; drop the ones not needed."""
        wanted = [sub.id for sub in spec.member_subnets]
        ports = {
            p.subnet_id: p
            for p in s.scalars(select(Port).where(Port.device_id == inst.id))
            if p.subnet_id != spec.vip_subnet.id
        }
        for subnet_id, port in ports.items():
            if subnet_id not in wanted:
                s.delete(port)
        legs = []
        for subnet_id in wanted:
            port = ports.get(subnet_id)
            if port is None:
                subnet = s.get(Subnet, subnet_id)
                assert subnet is not None
                port = ipam.allocate(
                    s,
                    subnet,
                    project_id=lb.project_id,
                    device_owner=INSTANCE_OWNER,
                    device_id=inst.id,
                    name=f"openha-instance-{inst.id}",
                )
            legs.append((subnet_id, port.ip_address))
        return tuple(legs)

    @staticmethod
    def _vrid(s: Any, lb: LoadBalancer, spec: LoadBalancerSpec) -> int:
        """This LB's VRRP router id on its VIP network, allocated once (1-255 per segment)."""
        network_id = spec.vip_subnet.network_id
        held = s.scalar(select(VrrpRouterId).where(VrrpRouterId.load_balancer_id == lb.id))
        if held is not None:
            return int(held.vrid)
        used = set(
            s.scalars(select(VrrpRouterId.vrid).where(VrrpRouterId.network_id == network_id))
        )
        free = next((v for v in range(1, 256) if v not in used), None)
        if free is None:
            raise NoHostAvailable(
                f"All 255 VRRP router ids are in use on network {network_id}: "
                "no more ACTIVE_STANDBY load balancers fit on this segment"
            )
        s.add(VrrpRouterId(network_id=network_id, vrid=free, load_balancer_id=lb.id))
        s.flush()
        return free

    @staticmethod
    def _forget(s: Any, inst: Instance) -> None:
        ipam.release_device(s, inst.id)
        s.delete(inst)
        s.flush()

    @staticmethod
    def _zone(s: Any, lb: LoadBalancer) -> str | None:
        """The host zone an LB's instances must run in: its AZ profile's `host_zone`, or the
        AZ's own name (agents report their zone with OPENHA_AVAILABILITY_ZONE)."""
        if not lb.availability_zone:
            return None
        zone = s.get(AvailabilityZone, lb.availability_zone)
        profile = (
            s.get(AvailabilityZoneProfile, zone.availability_zone_profile_id) if zone else None
        )
        data = json.loads(profile.availability_zone_data or "{}") if profile else {}
        return str(data.get("host_zone") or lb.availability_zone)

    @staticmethod
    def _load(s: Any) -> dict[str, int]:
        rows = s.execute(select(Instance.host_id, func.count()).group_by(Instance.host_id))
        return {host_id: count for host_id, count in rows if host_id}

    @staticmethod
    def _host_views(hosts: Any) -> list[HostView]:
        return [
            HostView(
                id=h.id,
                name=h.name,
                availability_zone=h.availability_zone,
                capacity=h.capacity,
                # An agent that never registered (no URL, no directory) cannot take work.
                schedulable=h.status == HOST_UP
                and h.admin_state == "ENABLED"
                and bool(h.management_url and (h.report or {}).get("agent_dir")),
            )
            for h in hosts
        ]

    def instance_spec(
        self, spec: LoadBalancerSpec, placement: Placement, placements: list[Placement]
    ) -> InstanceSpec:
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
                    PeerSpec(
                        name=namespace_name(p.instance_id), address=p.ip_address, port=PEER_PORT
                    )
                    for p in placements
                ),
            )
            check = str(paths.files_dir / CHECK_SCRIPT)
            files[CHECK_SCRIPT] = render_check_script(str(paths.stats_socket))
            settings = self.context.settings
            keepalived = render_keepalived(
                VrrpSpec(
                    lb_id=spec.id,
                    instance_id=placement.instance_id,
                    vrid=placement.vrid,
                    priority=MASTER_PRIORITY
                    if placement.role == c.ROLE_MASTER
                    else BACKUP_PRIORITY,
                    interface="eth0",
                    local_address=placement.ip_address,
                    peer_addresses=tuple(p.ip_address for p in others),
                    vip=spec.vip_address,
                    vip_prefixlen=ipaddress.ip_network(spec.vip_subnet.cidr).prefixlen,
                    check_script=check,
                    advert_int=settings.vrrp_advert_interval,
                    vrrp_version=settings.vrrp_version,
                    auth_pass=placement.vrrp_secret,
                )
            )
        access_log = spec.flavor.get("access_log", self.context.settings.default_access_log)
        config = render_haproxy(spec, haproxy_paths(paths), peers=peers, access_log=access_log)  # type: ignore[arg-type]
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
            log_tags={"load_balancer_id": spec.id, "project_id": spec.project_id},
        )

    # --- failover ----------------------------------------------------------------------

    def failover(self, load_balancer_id: str) -> None:
        """Rebuild one instance elsewhere; for a pair, the one holding the VIP.

        Deleting the VIP holder first stops its keepalived gracefully (a priority 0
        advert), so the peer takes the VIP within one advert interval; only then
        is the lost half rebuilt by the apply that follows, on another host.
        """
        with transaction(self.context.session_factory) as s:
            instances = list(
                s.scalars(select(Instance).where(Instance.load_balancer_id == load_balancer_id))
            )
            if not instances:
                return
            requested = [i for i in instances if i.status == "PENDING_FAILOVER"]
            holders = [i for i in instances if (i.health or {}).get("vrrp_state") == "MASTER"]
            target = (
                requested or holders or sorted(instances, key=lambda i: i.role != c.ROLE_MASTER)
            )[0]
            host = s.get(Host, target.host_id) if target.host_id else None
            agent = self._agent(host) if host else None
            reachable = bool(host and host.status == HOST_UP)
            target_id, host_id = target.id, target.host_id
            lb = s.get(LoadBalancer, load_balancer_id)
            events.emit(
                s,
                "instance.failover",
                f"Rebuilding {target.role} instance {target.id}",
                lb=lb,
                instance_id=target.id,
                host_id=host_id,
            )
        if agent is not None and reachable:
            # If this fails, the host drops it as an orphan once it is no longer wanted.
            with contextlib.suppress(AgentError):
                agent_client.delete_instance(agent, target_id)
        with transaction(self.context.session_factory) as s:
            inst = s.get(Instance, target_id)
            if inst is not None:
                self._forget(s, inst)
        if host_id:
            self._leaving[load_balancer_id] = host_id

    # --- delete, observe ---------------------------------------------------------------

    def delete(self, load_balancer_id: str) -> bool:
        with transaction(self.context.session_factory) as s:
            rows = [
                (inst.id, host)
                for inst in s.scalars(
                    select(Instance).where(Instance.load_balancer_id == load_balancer_id)
                )
                for host in [s.get(Host, inst.host_id) if inst.host_id else None]
            ]
            targets = [
                (
                    inst_id,
                    self._agent(h) if h else None,
                    bool(h and h.status == HOST_UP),
                )
                for inst_id, h in rows
            ]
        done = True
        for inst_id, agent, reachable in targets:
            if agent is not None and reachable:
                try:
                    agent_client.delete_instance(agent, inst_id)
                except AgentError:
                    done = False
                    continue
            # A down host drops the instance itself: it is no longer wanted when it returns.
            with transaction(self.context.session_factory) as s:
                inst = s.get(Instance, inst_id)
                if inst is not None:
                    self._forget(s, inst)
        if done:
            with transaction(self.context.session_factory) as s:
                s.execute(
                    delete(VrrpRouterId)
                    .where(VrrpRouterId.load_balancer_id == load_balancer_id)
                    .execution_options(synchronize_session=False)
                )
        return done

    def observe(self, spec: LoadBalancerSpec) -> ObservedState | None:
        with transaction(self.context.session_factory) as s:
            instances = list(
                s.scalars(select(Instance).where(Instance.load_balancer_id == spec.id))
            )
            healths = [dict(i.health or {}) for i in instances]
        # A heartbeat taken while the instance was still being built (nothing applied
        # yet) says nothing about its health: judging by it would flash ERROR.
        reported = [h for h in healths if h and int(h.get("applied_generation") or 0) > 0]
        if not reported:
            return None
        # The serving instance's view decides member states: the VRRP master (or the
        # only instance), else any running one.
        reported.sort(
            key=lambda h: (
                h.get("vrrp_state") not in (None, "MASTER"),
                not h.get("haproxy_running"),
            )
        )
        primary = reported[0]
        running = any(h.get("haproxy_running") for h in reported)
        state = derive(spec, primary.get("members") or {}, running)
        for health in reported:
            for listener_id, counters in (health.get("listeners") or {}).items():
                total = state.listener_stats.setdefault(listener_id, ListenerCounters())
                for key in COUNTERS:
                    setattr(total, key, getattr(total, key) + int(counters.get(key, 0)))
        return state
