"""The haproxy provider's driver: what the controller calls (apply, delete, failover, observe).

`apply` places the LB's instances (`allocation` commits what the pure
`placement` planner decides), builds each instance's spec and pushes the specs
to the agents in parallel; `observe` reads what the agents report in their
heartbeats back into operating statuses and counters.

Nothing lives in this object's memory: a failover in progress is written down
(`Instance.failover_requested_at` marks the instance being rebuilt,
`LoadBalancer.failover_left_host_id` the host its replacement should avoid), so
a restarted or a second controller carries on where this one stopped. Whether
automatic failover is paused is the controller's call (its circuit breaker),
handed to `apply`; the driver only obeys it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from openha import events, ipam
from openha.agent.protocol import VRRP_MASTER
from openha.db import transaction
from openha.domain import constants as c
from openha.domain.logtargets import InvalidLogTargets, parse_targets
from openha.domain.observed import ObservedState
from openha.domain.operations import Step
from openha.domain.protection import check_profile_name
from openha.domain.spec import InstanceSpec, LoadBalancerSpec
from openha.domain.status import derive
from openha.models import Host, Instance, LoadBalancer, VrrpRouterId, utcnow
from openha.providers.base import (
    ApplyResult,
    Capability,
    Provider,
    ProviderContext,
    RepairStep,
    UnsupportedOption,
)
from openha.providers.haproxy import agent_client, allocation, instance_spec, migration, plumbing
from openha.providers.haproxy.agent_client import AgentAddress, AgentError, AgentRejected
from openha.providers.haproxy.placement import NoCapacity, NoHostAvailable, Placement
from openha.render.haproxy import ACCESS_LOG_MODES, RenderError

# How an instance on a host declared down reads: nothing runs, no VIP held.
_SILENT: dict[str, Any] = {"haproxy_running": False, "vrrp_state": None, "members": {}}


def serving_view(healths: list[dict[str, Any]]) -> dict[str, Any]:
    """The instance whose view of the members decides their states: a running HAProxy
    first, the VRRP master among those (or an instance outside a pair), else any.

    Running comes first: the master of a host just declared down reports no VRRP state
    and no members, and judging by it would flash every member OFFLINE and every pool
    ERROR during a failover while the survivor, still reported BACKUP, checks them all.
    """
    return min(
        healths,
        key=lambda h: (
            not h.get("haproxy_running"),
            h.get("vrrp_state") not in (None, VRRP_MASTER),
        ),
    )


# Each resource key of a flavor profile: its bounds and the JSON types it takes.
RESOURCE_BOUNDS: dict[str, tuple[float, float, type | tuple[type, ...]]] = {
    "cpu_weight": (1, 10_000, int),
    "cpu_max": (0.01, 1024, (int, float)),
    "memory_max_mb": (16, 1 << 20, int),
    "pids_max": (16, 4_194_304, int),
}


class HAProxyProvider(Provider):
    """See the module docstring. Calls to one host's agent are bounded
    (`controller_workers_per_host` at once), so a hung agent holds that many
    reconciles at most; the others get "in progress" and come back shortly."""

    name = "haproxy"
    can_migrate = True
    description = "HAProxy in network namespaces on OpenHA agent hosts (SINGLE or ACTIVE_STANDBY)."
    unsupported: ClassVar[Mapping[str, frozenset[Any]]] = {
        # HAProxy speaks neither UDP nor SCTP.
        "listener.protocol": frozenset({"UDP", "SCTP"}),
        "pool.protocol": frozenset({"UDP", "SCTP"}),
        "pool.lb_algorithm": frozenset({"SOURCE_IP_PORT"}),
        "healthmonitor.type": frozenset({"UDP-CONNECT", "SCTP"}),
    }

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()

    def flavor_capabilities(self) -> list[Capability]:
        return [
            Capability("loadbalancer_topology", "SINGLE or ACTIVE_STANDBY (a VRRP pair)."),
            Capability(
                "access_log",
                "all: a log line per request; errors: only failed or abnormal requests "
                "(much cheaper on busy load balancers); none: no traffic logs.",
            ),
            Capability(
                "log_targets",
                'Where access logs also go: a list of {"type": "syslog", "host": H, '
                '"port": 514, "protocol": "tcp"|"tls"} (RFC 5424) and {"type": "s3", '
                '"endpoint": "https://host[:port]", "bucket": B, "region": R, '
                '"interval": seconds} (gzip\'d JSON lines per LB and interval).',
            ),
            Capability("cpu_weight", "CPU weight of each instance, 1-10000 (host default 100)."),
            Capability(
                "cpu_max", "CPU quota of each instance in cores, e.g. 0.5 (none by default)."
            ),
            Capability("memory_max_mb", "Memory limit of each instance in MiB, 16-1048576."),
            Capability("pids_max", "Task (process and thread) limit of each instance, 16-4194304."),
            Capability(
                "protection_profile",
                "The protection profile (name or id, /v2/manage/protection-profiles) of this "
                "flavor's load balancers: per-source limits, slowloris guards, deny and allow "
                "lists. An operator may give one load balancer another.",
            ),
            Capability(
                "request_id_header",
                "true: members get each HTTP request's id (the log lines' request_id) "
                "as X-Request-Id.",
            ),
        ]

    def availability_zone_capabilities(self) -> list[Capability]:
        return [Capability("host_zone", "Hosts whose agent reports this zone serve the LB.")]

    def validate_flavor(self, data: Mapping[str, Any]) -> None:
        super().validate_flavor(data)
        if data.get("access_log", "all") not in ACCESS_LOG_MODES:
            raise UnsupportedOption(f"access_log must be one of {', '.join(ACCESS_LOG_MODES)}")
        try:
            parse_targets(data.get("log_targets"))
        except InvalidLogTargets as exc:
            raise UnsupportedOption(str(exc)) from None
        profile = data.get("protection_profile")
        if profile is not None:
            try:
                check_profile_name(profile if isinstance(profile, str) else "")
            except ValueError as exc:
                raise UnsupportedOption(f"protection_profile {exc}") from None
        if not isinstance(data.get("request_id_header", False), bool):
            raise UnsupportedOption("request_id_header must be true or false")
        for key, (low, high, kinds) in RESOURCE_BOUNDS.items():
            value = data.get(key)
            if value is None:
                continue
            ok = isinstance(value, kinds) and not isinstance(value, bool)
            if not (ok and low <= float(value) <= high):
                what = "an integer" if kinds is int else "a number"
                raise UnsupportedOption(f"{key} must be {what} from {low:g} to {high:g}")
        topology = data.get("loadbalancer_topology", c.TOPOLOGY_SINGLE)
        if topology not in (c.TOPOLOGY_SINGLE, c.TOPOLOGY_ACTIVE_STANDBY):
            raise UnsupportedOption(
                f"loadbalancer_topology must be {c.TOPOLOGY_SINGLE} or {c.TOPOLOGY_ACTIVE_STANDBY}"
            )

    # --- apply -------------------------------------------------------------------------

    def apply(self, spec: LoadBalancerSpec, *, failover_paused: str | None) -> ApplyResult:
        try:
            with transaction(self.context.session_factory) as s:
                placements = allocation.place(s, spec, failover_paused=failover_paused)
        except NoCapacity as exc:
            return ApplyResult.out_of_capacity(str(exc))
        except (NoHostAvailable, ipam.AddressError) as exc:
            return ApplyResult.failed(str(exc))
        try:
            specs = [
                instance_spec.build(spec, p, placements, self.context.settings) for p in placements
            ]
        except RenderError as exc:
            return ApplyResult.failed(f"cannot render the HAProxy configuration: {exc}")
        except plumbing.UnsupportedNetwork as exc:
            return ApplyResult.failed(str(exc))
        slots = self._take_slots({p.host_id for p in placements})
        if slots is None:
            # Enough calls to one of its hosts are under way (a slow or hung agent holds
            # them): free this worker for other hosts' LBs and try again shortly.
            return ApplyResult.in_progress()
        try:
            errors = self._push_all(placements, specs)
        finally:
            for slot in slots:
                slot.release()
        if errors:
            return ApplyResult.failed("; ".join(errors))
        return ApplyResult.applied()

    def _push_all(self, placements: list[Placement], specs: list[InstanceSpec]) -> list[str]:
        """Push every instance's spec; the errors.

        Instances that already run get theirs first, new ones (a failover's rebuild)
        only then: a new keepalived that heard no advert from its peer for three
        intervals would take the VIP the peer still holds (two MASTERs, then a second
        outage when one yields). Told of the newcomer first, the serving peer is
        already advertising to it when it starts; with nopreempt it stays BACKUP.
        """
        running = [(p, s) for p, s in zip(placements, specs, strict=True) if p.applied_generation]
        fresh = [(p, s) for p, s in zip(placements, specs, strict=True) if not p.applied_generation]
        errors: list[str] = []
        for batch in (running, fresh) if running and fresh else (running + fresh,):
            if len(batch) == 1:
                error = self._push(*batch[0])
                errors += [error] if error else []
                continue
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                errors += [e for e in pool.map(lambda ps: self._push(*ps), batch) if e]
            if errors:
                break  # the newcomer would not hear a peer that failed to take it in
        return errors

    def _take_slots(self, host_ids: set[str]) -> list[threading.BoundedSemaphore] | None:
        """A call slot on every host, or None (and nothing taken) if one has none free."""
        with self._slots_lock:
            wanted = [
                self._slots.setdefault(
                    host_id,
                    threading.BoundedSemaphore(self.context.settings.controller_workers_per_host),
                )
                for host_id in sorted(host_ids)
            ]
        taken: list[threading.BoundedSemaphore] = []
        for slot in wanted:
            if not slot.acquire(blocking=False):
                for held in taken:
                    held.release()
                return None
            taken.append(slot)
        return taken

    def _push(self, placement: Placement, spec: InstanceSpec, force: bool = False) -> str | None:
        agent = self._agent(placement.management_url, placement.agent_secret)
        try:
            status = agent_client.put_instance(agent, spec, force=force)
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
                inst.status = c.INSTANCE_ACTIVE
            inst.last_error = error[:4000] if error else None
            if error:
                inst.status = c.INSTANCE_ERROR

    def _agent(self, url: str, secret: str) -> AgentAddress:
        return agent_client.address(self.context.settings, url, secret)

    def _host_agent(self, host: Host | None) -> tuple[AgentAddress | None, bool]:
        """How to reach a host's agent, and whether it is up to be reached."""
        if host is None:
            return None, False
        return self._agent(host.management_url, host.agent_secret), host.status == c.HOST_UP

    # --- failover ----------------------------------------------------------------------

    def failover(self, load_balancer_id: str) -> None:
        """Rebuild one instance elsewhere: the one an admin marked, else the VIP holder.

        Deleting the VIP holder first stops its keepalived gracefully (a priority 0
        advert), so the peer takes the VIP within one advert interval; only then
        is the lost half rebuilt by the apply that follows, on another host.
        Each step is written down before the next: the target is marked, then
        deleted, then forgotten with the host it left, so a controller that stops
        midway resumes with the same target and never fails over the survivor.
        """
        with transaction(self.context.session_factory) as s:
            lb = s.get(LoadBalancer, load_balancer_id)
            # A migration's staged and retiring instances are the operation's to remove.
            instances = list(
                s.scalars(
                    select(Instance).where(
                        Instance.load_balancer_id == load_balancer_id,
                        Instance.migration.is_(None),
                    )
                )
            )
            if lb is None or not instances:
                return
            requested = sorted(
                (i for i in instances if i.failover_requested_at is not None),
                key=lambda i: i.failover_requested_at or utcnow(),
            )
            if not requested and lb.failover_left_host_id is not None:
                # The last failover's replacement is not placed yet: failing over its
                # peer now would leave nothing serving.
                events.emit(
                    s,
                    "instance.failover_deferred",
                    "A failover is already under way: its replacement is not placed yet",
                    severity=c.SEVERITY_WARNING,
                    lb=lb,
                )
                return
            if requested:
                target = requested[0]
            else:
                holders = [
                    i for i in instances if (i.health or {}).get("vrrp_state") == VRRP_MASTER
                ]
                target = (holders or sorted(instances, key=lambda i: i.role != c.ROLE_MASTER))[0]
                target.failover_requested_at = utcnow()
                target.status = c.INSTANCE_PENDING_FAILOVER
            host = s.get(Host, target.host_id) if target.host_id else None
            agent, reachable = self._host_agent(host)
            target_id, host_id = target.id, target.host_id
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
                allocation.forget(s, inst)
            lb = s.get(LoadBalancer, load_balancer_id)
            if lb is not None and host_id:
                lb.failover_left_host_id = host_id

    def migrate_step(
        self, spec: LoadBalancerSpec, params: Mapping[str, Any], memory: Mapping[str, Any]
    ) -> Step:
        return migration.step(self, spec, dict(params), dict(memory))

    # --- operators' repairs -----------------------------------------------------------

    def sync(self, spec: LoadBalancerSpec) -> list[RepairStep]:
        with transaction(self.context.session_factory) as s:
            placements = allocation.current(s, spec)
            up = {h.id for h in s.scalars(select(Host).where(Host.status == c.HOST_UP))}
        if not placements:
            return [
                RepairStep("sync", detail="no instance is placed yet: the controller places them")
            ]
        try:
            specs = [
                instance_spec.build(spec, p, placements, self.context.settings) for p in placements
            ]
        except (RenderError, plumbing.UnsupportedNetwork) as exc:
            return [RepairStep("render", False, str(exc))]
        rendered = f"generation {spec.generation} for {len(specs)} instance(s)"
        steps = [RepairStep("render", detail=rendered)]
        for placement, ispec in zip(placements, specs, strict=True):
            where = {"instance_id": placement.instance_id, "host": placement.host_name}
            if placement.host_id not in up:
                steps.append(RepairStep("push", False, "its host is not up: fail it over", **where))
                continue
            error = self._push(placement, ispec, force=True)
            steps.append(
                RepairStep("push", error is None, error or "pushed and reloaded (forced)", **where)
            )
        return steps

    def reload(self, load_balancer_id: str) -> list[RepairStep]:
        with transaction(self.context.session_factory) as s:
            targets = [
                (inst.id, host.name, *self._host_agent(host))
                for inst, host in s.execute(
                    select(Instance, Host)
                    .join(Host, Host.id == Instance.host_id)
                    .where(Instance.load_balancer_id == load_balancer_id)
                    .order_by(Instance.role.desc())
                )
            ]
        if not targets:
            return [RepairStep("reload", False, "no instance is placed yet")]
        steps = []
        for inst_id, host_name, agent, reachable in targets:
            where = {"instance_id": inst_id, "host": host_name}
            if agent is None or not reachable:
                steps.append(RepairStep("reload", False, "its host is not up", **where))
                continue
            try:
                status = agent_client.reload_instance(agent, inst_id)
            except AgentError as exc:
                steps.append(RepairStep("reload", False, str(exc), **where))
                continue
            error = status.get("last_error")
            detail = f"haproxy {status.get('haproxy_pid')} serving"
            steps.append(RepairStep("reload", not error, str(error or detail), **where))
        return steps

    def render(self, session: Session, spec: LoadBalancerSpec, *, place: bool) -> dict[str, str]:
        placements = allocation.current(session, spec)
        if place and not placements:
            try:
                with session.begin_nested():
                    placements = allocation.place(session, spec, failover_paused=None)
            except (NoHostAvailable, ipam.AddressError):
                placements = []
        specs = [
            instance_spec.build(spec, p, placements, self.context.settings) for p in placements
        ]
        out: dict[str, str] = {}
        for p, ispec in zip(placements, specs, strict=True):
            out[f"{p.role} {p.instance_id} haproxy.cfg"] = ispec.haproxy_config
            if ispec.keepalived_config:
                out[f"{p.role} {p.instance_id} keepalived.conf"] = ispec.keepalived_config
        return out

    def running(self, load_balancer_id: str) -> dict[str, str | None]:
        with transaction(self.context.session_factory) as s:
            targets = [
                (inst.id, inst.role, *self._host_agent(host))
                for inst, host in s.execute(
                    select(Instance, Host)
                    .join(Host, Host.id == Instance.host_id)
                    .where(Instance.load_balancer_id == load_balancer_id)
                )
            ]
        out: dict[str, str | None] = {}
        for inst_id, role, agent, reachable in targets:
            found: dict[str, Any] = {}
            if agent is not None and reachable:
                with contextlib.suppress(AgentError):
                    found = agent_client.get_config(agent, inst_id)
            out[f"{role} {inst_id} haproxy.cfg"] = found.get("haproxy_config")
            if found.get("keepalived_config") is not None:
                out[f"{role} {inst_id} keepalived.conf"] = found["keepalived_config"]
        return out

    # --- delete, observe ---------------------------------------------------------------

    def delete(self, load_balancer_id: str) -> bool:
        with transaction(self.context.session_factory) as s:
            targets = [
                (inst.id, *self._host_agent(s.get(Host, inst.host_id) if inst.host_id else None))
                for inst in s.scalars(
                    select(Instance).where(Instance.load_balancer_id == load_balancer_id)
                )
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
                    allocation.forget(s, inst)
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
            rows = s.execute(
                select(Instance.health, Host.status)
                .outerjoin(Host, Host.id == Instance.host_id)
                .where(Instance.load_balancer_id == spec.id)
            )
            # What a host declared down last reported is no longer true: it runs nothing.
            healths = [
                dict(health or {}) if status == c.HOST_UP else {**(health or {}), **_SILENT}
                for health, status in rows
            ]
        # A heartbeat taken while the instance was still being built (nothing applied
        # yet) says nothing about its health: judging by it would flash ERROR.
        reported = [h for h in healths if h and int(h.get("applied_generation") or 0) > 0]
        if not reported:
            return None
        primary = serving_view(reported)
        running = any(h.get("haproxy_running") for h in reported)
        return derive(spec, primary.get("members") or {}, running)
