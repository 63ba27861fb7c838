"""The reconcile loop: the one place that decides what happens to each load balancer.

Level-triggered and idempotent, like a Kubernetes controller: on every pass it
compares desired (the database) with applied (what providers report) and acts
on the difference. Nothing it does depends on remembering the previous pass, so
any process can be restarted at any moment and the loop converges again.
A lease per LB lets several controllers share one PostgreSQL database.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import case, delete, exists, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from openha import events, ipam
from openha.controller import hostmonitor, snapshot
from openha.db import transaction
from openha.domain import constants as c
from openha.domain.observed import COUNTER_FIELDS, ObservedState
from openha.models import (
    HealthMonitor,
    Host,
    Instance,
    L7Policy,
    L7Rule,
    Listener,
    ListenerStats,
    LoadBalancer,
    Member,
    Pool,
    utcnow,
)
from openha.providers.base import ApplyResult
from openha.providers.registry import ProviderRegistry
from openha.settings import Settings

log = logging.getLogger(__name__)

# Children first, so foreign keys never point at a removed row.
DELETE_ORDER = (L7Rule, L7Policy, HealthMonitor, Member, Listener, Pool)
# Nothing checks these: their operating status follows their admin state, set in the
# write that makes them ACTIVE (Octavia's Mark{HealthMonitor,L7Policy,L7Rule}ActiveInDB).
BY_ADMIN_STATE = (HealthMonitor, L7Policy, L7Rule)
IN_PROGRESS_RECHECK = timedelta(seconds=0.5)


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        providers: ProviderRegistry,
    ) -> None:
        self.settings = settings
        self.sessions = session_factory
        self.providers = providers
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._paused: str | None = None

    # --- the loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        log.info("controller %s reconciling", self.owner)
        # Observation has its own thread: a sweep over many LBs must never delay a change.
        observer = threading.Thread(
            target=self._observe_loop, args=(stop,), daemon=True, name="observe"
        )
        observer.start()
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("reconcile pass failed; retrying")
            stop.wait(self.settings.controller_interval)
        observer.join(timeout=10)

    def _observe_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.observe_interval):
            try:
                self.observe_all()
            except Exception:
                log.exception("observation pass failed; retrying")

    def tick(self) -> None:
        hostmonitor.mark_silent_hosts_down(self.settings, self.sessions)
        for lb_id in self.due():
            if self.claim(lb_id):
                try:
                    self.reconcile(lb_id)
                except Exception as exc:  # one broken LB must not stall the others
                    log.exception("reconcile of %s failed", lb_id)
                    self.record_failure(lb_id, None, f"internal error: {exc}")
                finally:
                    self.release(lb_id)

    def due(self) -> list[str]:
        """LBs whose data plane differs from what is wanted, and whose backoff has expired."""
        now = utcnow()
        # An instance that lags the LB's generation, or sits on a host that is not UP,
        # needs repair even when nobody changed the LB (host loss, agent lost state).
        with transaction(self.sessions) as s:
            paused = hostmonitor.failover_pause_reason(self.settings, s)
        self._note_pause(paused)
        lagging = Instance.applied_generation < LoadBalancer.desired_generation
        lost_host = or_(
            Instance.host_id.is_(None),
            ~exists().where(Host.id == Instance.host_id, Host.status == c.HOST_UP),
        )
        needs_repair = exists().where(
            Instance.load_balancer_id == LoadBalancer.id,
            lagging if paused else or_(lagging, lost_host),
        )
        with transaction(self.sessions) as s:
            return list(
                s.scalars(
                    select(LoadBalancer.id)
                    .where(
                        or_(
                            LoadBalancer.desired_generation > LoadBalancer.applied_generation,
                            LoadBalancer.provisioning_status == c.PENDING_DELETE,
                            LoadBalancer.failover_requested.is_(True),
                            # A failed apply is retried (with backoff) even when nothing
                            # changed: the cause may have gone (a host came back).
                            LoadBalancer.provisioning_status == c.ERROR,
                            needs_repair,
                        ),
                        or_(
                            LoadBalancer.next_attempt_at.is_(None),
                            LoadBalancer.next_attempt_at <= now,
                        ),
                    )
                    .order_by(LoadBalancer.next_attempt_at, LoadBalancer.created_at)
                )
            )

    def _note_pause(self, reason: str | None) -> None:
        """Emit an event when the failover circuit breaker opens or closes."""
        if bool(reason) == bool(self._paused):
            self._paused = reason
            return
        with transaction(self.sessions) as s:
            if reason:
                events.emit(s, "failover.paused", reason, severity=c.SEVERITY_ERROR)
            else:
                events.emit(s, "failover.resumed", "Enough hosts are back: failover resumes")
        self._paused = reason

    def claim(self, lb_id: str) -> bool:
        now = utcnow()
        until = now + timedelta(seconds=self.settings.controller_lease_seconds)
        with transaction(self.sessions) as s:
            result = s.execute(
                update(LoadBalancer)
                .where(
                    LoadBalancer.id == lb_id,
                    or_(
                        LoadBalancer.lease_until.is_(None),
                        LoadBalancer.lease_until < now,
                        LoadBalancer.lease_owner == self.owner,
                    ),
                )
                .values(lease_owner=self.owner, lease_until=until)
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def release(self, lb_id: str) -> None:
        with transaction(self.sessions) as s:
            s.execute(
                update(LoadBalancer)
                .where(LoadBalancer.id == lb_id, LoadBalancer.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )

    # --- one load balancer -----------------------------------------------------------

    def reconcile(self, lb_id: str) -> None:
        with transaction(self.sessions) as s:
            lb = s.get(LoadBalancer, lb_id)
            if lb is None:
                return
            provider = self.providers.get(lb.provider)
            if lb.provisioning_status == c.PENDING_DELETE:
                deleting = True
                spec = None
            else:
                deleting = False
                spec = snapshot.build(s, lb_id)
            failover = lb.failover_requested
            # The circuit breaker is decided here, with the snapshot its apply works from.
            paused = hostmonitor.failover_pause_reason(self.settings, s)
        # Provider calls happen outside any transaction: they may take seconds.
        if deleting:
            if provider.delete(lb_id):
                self.purge(lb_id)
            else:
                self.recheck_soon(lb_id)
            return
        assert spec is not None
        if failover:
            provider.failover(lb_id)
            with transaction(self.sessions) as s:
                s.execute(
                    update(LoadBalancer)
                    .where(LoadBalancer.id == lb_id)
                    .values(failover_requested=False)
                    .execution_options(synchronize_session=False)
                )
        result: ApplyResult = provider.apply(spec, failover_paused=paused)
        if result.done:
            self.finalize(lb_id, spec.generation)
        elif result.error:
            self.record_failure(lb_id, spec.generation, result.error)
        else:
            self.recheck_soon(lb_id)

    def finalize(self, lb_id: str, generation: int) -> None:
        """Mark `generation` applied; settle child statuses only if nothing newer arrived."""
        with transaction(self.sessions) as s:
            lb = s.scalar(select(LoadBalancer).where(LoadBalancer.id == lb_id).with_for_update())
            if lb is None:
                return
            # ERROR may already read PENDING_UPDATE (the tenant's fix): last_error remembers.
            was_error = lb.last_error is not None
            lb.applied_generation = max(lb.applied_generation, generation)
            if lb.desired_generation != generation:
                return  # a newer change is waiting: the next pass applies it
            if lb.provisioning_status in (c.PENDING_CREATE, c.PENDING_UPDATE, c.ERROR):
                lb.provisioning_status = c.ACTIVE
            lb.last_error = None
            lb.attempts = 0
            lb.next_attempt_at = None
            for model in DELETE_ORDER:
                doomed = select(model.id).where(
                    model.load_balancer_id == lb_id,
                    model.provisioning_status == c.PENDING_DELETE,
                )
                if model is Pool:
                    s.execute(
                        update(Listener)
                        .where(Listener.default_pool_id.in_(doomed))
                        .values(default_pool_id=None)
                        .execution_options(synchronize_session=False)
                    )
                if model is Listener:
                    s.execute(
                        delete(ListenerStats)
                        .where(ListenerStats.listener_id.in_(doomed))
                        .execution_options(synchronize_session=False)
                    )
                if model is HealthMonitor:
                    # Octavia's monitor delete flow: nothing checks the pool's members now.
                    s.execute(
                        update(Member)
                        .where(
                            Member.pool_id.in_(
                                select(HealthMonitor.pool_id).where(HealthMonitor.id.in_(doomed))
                            )
                        )
                        .values(operating_status=c.NO_MONITOR)
                        .execution_options(synchronize_session=False)
                    )
                s.execute(
                    delete(model)
                    .where(model.id.in_(doomed))
                    .execution_options(synchronize_session=False)
                )
                settled: dict[str, Any] = {"provisioning_status": c.ACTIVE}
                if model in BY_ADMIN_STATE:
                    settled["operating_status"] = case(
                        (model.admin_state_up, c.ONLINE), else_=c.OFFLINE
                    )
                s.execute(
                    update(model)
                    .where(
                        model.load_balancer_id == lb_id,
                        model.provisioning_status.in_(
                            (c.PENDING_CREATE, c.PENDING_UPDATE, c.ERROR)
                        ),
                    )
                    .values(settled)
                    .execution_options(synchronize_session=False)
                )
            if was_error:
                events.emit(s, "loadbalancer.recovered", "Apply succeeded again", lb=lb)

    def record_failure(self, lb_id: str, generation: int | None, error: str) -> None:
        with transaction(self.sessions) as s:
            lb = s.scalar(select(LoadBalancer).where(LoadBalancer.id == lb_id).with_for_update())
            if lb is None:
                return
            if generation is not None and generation < lb.desired_generation:
                # A newer change arrived while this one failed: apply that one at once
                # rather than marking the LB ERROR for a tree nobody wants any more.
                lb.next_attempt_at = None
                return
            first = lb.provisioning_status != c.ERROR or lb.last_error != error
            lb.attempts += 1
            backoff = min(2.0 ** min(lb.attempts, 10) * 0.5, self.settings.retry_backoff_max)
            lb.next_attempt_at = utcnow() + timedelta(seconds=backoff)
            lb.last_error = error[:4000]
            if lb.provisioning_status == c.PENDING_DELETE:
                return
            lb.provisioning_status = c.ERROR
            for model in DELETE_ORDER:
                s.execute(
                    update(model)
                    .where(
                        model.load_balancer_id == lb_id,
                        model.provisioning_status.in_((c.PENDING_CREATE, c.PENDING_UPDATE)),
                    )
                    .values(provisioning_status=c.ERROR)
                    .execution_options(synchronize_session=False)
                )
            if first:
                events.emit(
                    s,
                    "loadbalancer.apply_failed",
                    error[:1000],
                    severity=c.SEVERITY_ERROR,
                    lb=lb,
                    details={"generation": generation, "attempts": lb.attempts},
                )

    def recheck_soon(self, lb_id: str) -> None:
        with transaction(self.sessions) as s:
            s.execute(
                update(LoadBalancer)
                .where(LoadBalancer.id == lb_id)
                .values(next_attempt_at=utcnow() + IN_PROGRESS_RECHECK)
                .execution_options(synchronize_session=False)
            )

    def purge(self, lb_id: str) -> None:
        """The data plane is gone: remove the LB's rows and free its addresses."""
        with transaction(self.sessions) as s:
            lb = s.get(LoadBalancer, lb_id)
            if lb is None:
                return
            s.execute(
                update(Listener)
                .where(Listener.load_balancer_id == lb_id)
                .values(default_pool_id=None)
                .execution_options(synchronize_session=False)
            )
            s.execute(
                delete(ListenerStats)
                .where(ListenerStats.load_balancer_id == lb_id)
                .execution_options(synchronize_session=False)
            )
            for model in DELETE_ORDER:
                s.execute(
                    delete(model)
                    .where(model.load_balancer_id == lb_id)
                    .execution_options(synchronize_session=False)
                )
            for inst in s.scalars(select(Instance).where(Instance.load_balancer_id == lb_id)):
                ipam.release_device(s, inst.id)
                s.delete(inst)
            ipam.release_device(s, lb_id)
            events.emit(s, "loadbalancer.deleted", f"Load balancer {lb_id} deleted", lb=lb)
            s.flush()
            s.delete(lb)

    # --- observation -----------------------------------------------------------------

    def observe_all(self) -> None:
        with transaction(self.sessions) as s:
            ids = list(
                s.scalars(
                    select(LoadBalancer.id).where(
                        LoadBalancer.provisioning_status != c.PENDING_DELETE,
                        LoadBalancer.applied_generation > 0,
                    )
                )
            )
        for lb_id in ids:
            try:
                self.observe(lb_id)
            except Exception:
                log.exception("observing %s failed", lb_id)

    def observe(self, lb_id: str) -> None:
        with transaction(self.sessions) as s:
            lb = s.get(LoadBalancer, lb_id)
            if lb is None or lb.provisioning_status == c.PENDING_DELETE:
                return
            provider = self.providers.get(lb.provider)
            spec = snapshot.build(s, lb_id)
        state = provider.observe(spec)
        if state is not None:
            self.store_observation(lb_id, state)

    def store_observation(self, lb_id: str, state: ObservedState) -> None:
        with transaction(self.sessions) as s:
            lb = s.get(LoadBalancer, lb_id)
            if lb is None:
                return
            if lb.operating_status != state.load_balancer:
                severity = (
                    c.SEVERITY_INFO if state.load_balancer == c.ONLINE else c.SEVERITY_WARNING
                )
                events.emit(
                    s,
                    "loadbalancer.operating_status",
                    f"{lb.operating_status} -> {state.load_balancer}",
                    severity=severity,
                    lb=lb,
                )
                lb.operating_status = state.load_balancer
            for model, statuses in (
                (Listener, state.listeners),
                (Pool, state.pools),
                (Member, state.members),
                (HealthMonitor, state.health_monitors),
                (L7Policy, state.l7policies),
                (L7Rule, state.l7rules),
            ):
                for obj_id, status in statuses.items():
                    s.execute(
                        update(model)
                        .where(model.id == obj_id, model.operating_status != status)
                        .values(operating_status=status)
                        .execution_options(synchronize_session=False)
                    )
            for listener_id, counters in state.listener_stats.items():
                row = s.get(ListenerStats, listener_id)
                if row is None:
                    row = ListenerStats(listener_id=listener_id, load_balancer_id=lb_id)
                    s.add(row)
                for name in COUNTER_FIELDS:
                    setattr(row, name, getattr(counters, name))
