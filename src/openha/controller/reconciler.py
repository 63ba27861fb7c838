"""The reconcile loop: the one place that decides what happens to each load balancer.

Level-triggered and idempotent, like a Kubernetes controller: on every pass it
compares desired (the database) with applied (what providers report) and acts
on the difference. Nothing it does depends on remembering the previous pass, so
any process can be restarted at any moment and the loop converges again.

The work queue lives in the load balancers' rows (`due_for_reconcile`, a partial
index): a newer desired generation, a failover request, or `reconcile_requested`,
set by whoever learns the data plane may differ (a host declared down, an
instance that lost its state, a failed apply to retry with backoff). Fresh
changes go before LBs coming out of backoff. An idle fleet costs one indexed
query per pass, and a slow sweep (`resync`) catches what nobody flagged.

Reconciles run on a bounded pool of workers (`controller_workers`), at most
`controller_workers_per_host` of them on LBs of one host, and agents are called
with short deadlines: a slow or dead agent holds back only its own host's LBs.

Several controllers share one PostgreSQL database: each claims an LB (a lease)
before working on it. A controller beats in the `services` table while it
lives; the claims of one that stopped beating are taken over at once, not when
they expire, and a controller that could not beat stops claiming, so no LB is
ever applied by two at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, delete, exists, not_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from openha import events, ipam, liveness
from openha.certstore import keys as key_managers
from openha.controller import certificates, hostmonitor, opkinds, retention, snapshot
from openha.controller import stats as outcome
from openha.controller.hostmonitor import HostMonitor
from openha.controller.observer import Observer
from openha.controller.operations import OperationContext, OperationRunner
from openha.controller.stats import ReconcileStats
from openha.controller.webhooks import Dispatcher
from openha.db import ChangeWatch, reading, transaction
from openha.domain import constants as c
from openha.models import (
    Event,
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
    Service,
    due_for_reconcile,
    utcnow,
    utcnow_precise,
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
# Host liveness, the circuit breaker and lease upkeep run this often.
HOUSEKEEPING_INTERVAL = 1.0
# The longest an idle controller goes without looking at its queues.
IDLE_POLL = 1.0
# Admin operations (`openha.controller.operations`) are looked at this often.
OPERATIONS_INTERVAL = 0.2

# The work queue: LBs of the partial index `ix_load_balancers_due` whose backoff
# expired, a fresh change (no backoff: NULL) first, which PostgreSQL does only when
# told, as it sorts NULLs last.
DUE = (
    select(LoadBalancer.id)
    .where(
        due_for_reconcile(),
        or_(
            LoadBalancer.next_attempt_at.is_(None),
            LoadBalancer.next_attempt_at <= bindparam("now"),
        ),
        LoadBalancer.id.not_in(bindparam("exclude", expanding=True)),
        ~exists().where(
            Instance.load_balancer_id == LoadBalancer.id,
            Instance.host_id.in_(bindparam("avoid_hosts", expanding=True)),
        ),
    )
    .order_by(LoadBalancer.next_attempt_at.nulls_first(), LoadBalancer.created_at)
    .limit(bindparam("limit"))
)
# Whether the work queue holds anything at all, backoff or not (the partial index).
QUEUED = select(LoadBalancer.id).where(due_for_reconcile()).limit(1)
# The rows of processes gone this long are removed (they no longer decide anything).
FORGET_SERVICES_AFTER = timedelta(hours=1)


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
        # Opens the certificate store's payloads for the trees it applies.
        self.keys = key_managers.from_settings(settings)
        self.liveness = liveness.Beater(
            session_factory,
            liveness.KIND_CONTROLLER,
            interval=settings.service_beat_interval,
            dead_after=settings.service_dead_after,
        )
        self.owner = self.liveness.id
        self.stats = ReconcileStats()
        self.liveness.report = self.stats.snapshot
        self.observer = Observer(settings, session_factory, providers)
        self.hosts = HostMonitor(settings, session_factory)
        self.operations = OperationRunner(
            OperationContext(settings, session_factory, providers),
            opkinds.KINDS,
            self.owner,
            workers=max(4, settings.drain_concurrency + 2),
        )
        self._paused: str | None = None
        # LB id -> the hosts its instances were on when its reconcile started.
        self._inflight: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._next_resync = 0.0
        self._next_retention = 0.0
        # An idle pass asks the database only when something was committed, or once
        # per IDLE_POLL (backoffs expire without any commit).
        self._changes = ChangeWatch(session_factory)
        self._next_poll = 0.0

    # --- the loops --------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        log.info("controller %s reconciling", self.owner)
        self.liveness.start()  # others see us alive before we claim anything
        self._pool = ThreadPoolExecutor(
            max_workers=self.settings.controller_workers,
            thread_name_prefix=f"reconcile-{self.owner}",
        )
        # Observation and housekeeping have threads of their own: neither a sweep nor
        # a probe of a silent host ever delays a change.
        loops = [
            threading.Thread(
                target=self._every,
                args=(stop, self.settings.observe_interval, self.observer.observe_due),
                daemon=True,
                name="observe",
            ),
            threading.Thread(
                target=self._every,
                args=(stop, HOUSEKEEPING_INTERVAL, self.housekeeping),
                daemon=True,
                name="housekeeping",
            ),
            # Webhook deliveries: a slow receiver never holds a reconcile back.
            threading.Thread(
                target=Dispatcher(self.settings, self.sessions, self.stats.deliveries).run,
                args=(stop,),
                daemon=True,
                name="webhooks",
            ),
            threading.Thread(
                target=self._every,
                args=(stop, OPERATIONS_INTERVAL, self._advance_operations),
                daemon=True,
                name="operations",
            ),
        ]
        self.operations.start()
        for thread in loops:
            thread.start()
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:
                    log.exception("reconcile pass failed; retrying")
                stop.wait(self.settings.controller_interval)
        finally:
            for thread in loops:
                thread.join(timeout=10)
            self.operations.stop()
            # Reconciles under way finish and release their claims; then we are gone.
            self._pool.shutdown(wait=True)
            self._pool = None
            self.liveness.stop()
            self._changes.close()
            self.observer.close()

    def _advance_operations(self) -> None:
        if self.liveness.alive:  # others may be taking our claims over
            self.operations.advance_due()

    @staticmethod
    def _every(stop: threading.Event, interval: float, work: Callable[[], object]) -> None:
        while not stop.wait(interval):
            try:
                work()
            except Exception:
                log.exception("%s failed; retrying", getattr(work, "__name__", work))

    def tick(self) -> int:
        """Start reconciles of due LBs on free workers; how many were started.

        Without `run` (tests, tools) the reconciles run here, one after the other.
        """
        if not self.liveness.alive:
            return 0  # others may be taking our claims over: claim nothing now
        with self._lock:
            busy = dict(self._inflight)
        changed = self._changes.changed()
        if not busy and not changed and time.monotonic() < self._next_poll:
            return 0
        self._next_poll = time.monotonic() + IDLE_POLL
        if not busy and self._changes.finds_nothing(QUEUED):
            return 0  # a commit elsewhere (a heartbeat, a beat): the queue is empty
        free = self.settings.controller_workers - len(busy)
        if free <= 0:
            return 0
        if busy:
            # Reconciles under way place instances as they go (a new LB, a failover's
            # rebuild on another host): count each on the hosts it has now, or the
            # hosts taking a failover over would look idle and every reconcile started
            # for them would find no call slot there (`in_progress`) and start over.
            placed = self._hosts_of(list(busy))
            with self._lock:
                for lb_id, hosts in placed.items():
                    if lb_id in self._inflight:
                        self._inflight[lb_id] = busy[lb_id] = hosts
        per_host = Counter(h for hosts in busy.values() for h in hosts)
        limit = self.settings.controller_workers_per_host
        full = {h for h, n in per_host.items() if n >= limit}
        due = self.due(limit=free, exclude=busy, avoid_hosts=full)
        if not due:
            return 0
        hosts_of = self._hosts_of(due)
        started = 0
        for lb_id in due:
            hosts = hosts_of.get(lb_id, frozenset())
            if any(per_host[h] >= limit for h in hosts):
                continue  # its host has enough reconciles under way: next pass
            per_host.update(hosts)
            with self._lock:
                self._inflight[lb_id] = hosts
            if self._pool is not None:
                self._pool.submit(self._work, lb_id)
            else:
                self._work(lb_id)
            started += 1
        return started

    def _work(self, lb_id: str) -> None:
        try:
            if self.claim(lb_id):
                started, result = time.monotonic(), outcome.ERROR
                try:
                    result = self.reconcile(lb_id)
                except Exception as exc:  # one broken LB must not stall the others
                    log.exception("reconcile of %s failed", lb_id)
                    self.record_failure(lb_id, None, f"internal error: {exc}")
                finally:
                    self.stats.observe(result, time.monotonic() - started)
                    self.release(lb_id)
        except Exception:
            log.exception("reconcile of %s: bookkeeping failed", lb_id)
        finally:
            with self._lock:
                self._inflight.pop(lb_id, None)

    def due(
        self,
        limit: int = 100,
        exclude: Collection[str] = (),
        avoid_hosts: Collection[str] = (),
    ) -> list[str]:
        """LBs to reconcile now: the work queue, fresh changes first, then expired backoffs;
        not those in `exclude` (under way here) nor those on `avoid_hosts` (enough under
        way there). The idle controller's most frequent query: built once, read-only."""
        with reading(self.sessions) as conn:
            return list(
                conn.execute(
                    DUE,
                    {
                        "now": utcnow(),
                        "limit": limit,
                        "exclude": list(exclude),
                        "avoid_hosts": list(avoid_hosts),
                    },
                ).scalars()
            )

    def _hosts_of(self, lb_ids: list[str]) -> dict[str, frozenset[str]]:
        """The hosts a reconcile of each LB may call: those of its instances, but not a
        host declared down (nothing calls it: its instances are rebuilt elsewhere and
        it drops them itself when it returns). Counting a dead host would cap a whole
        failover at `controller_workers_per_host` LBs at a time, every one of them
        having had an instance there."""
        with transaction(self.sessions) as s:
            rows = s.execute(
                select(Instance.load_balancer_id, Instance.host_id)
                .join(Host, Host.id == Instance.host_id)
                .where(Instance.load_balancer_id.in_(lb_ids), Host.status != c.HOST_DOWN)
            )
            found: dict[str, set[str]] = {}
            for lb_id, host_id in rows:
                if host_id:
                    found.setdefault(lb_id, set()).add(host_id)
        return {lb_id: frozenset(hosts) for lb_id, hosts in found.items()}

    # --- housekeeping -----------------------------------------------------------------

    def housekeeping(self) -> None:
        """Host liveness, the circuit breaker, our leases, dead controllers, the resync."""
        with reading(self.sessions) as conn:
            seen = hostmonitor.look(self.settings, conn)
        self.hosts.check(seen)
        paused = seen.paused(self.settings, self.hosts.answering)
        self._note_pause(paused)
        self.renew_leases()
        if time.monotonic() >= self._next_resync:
            self._next_resync = time.monotonic() + self.settings.controller_resync_interval
            self.release_dead_controllers()
            self.resync(paused)
            with transaction(self.sessions) as s:
                certificates.check_expiry(s, self.settings.certificate_warning_days)
        if time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + self.settings.retention_interval
            retention.purge_expired(self.settings, self.sessions)

    def _note_pause(self, reason: str | None) -> None:
        """Emit an event when the failover circuit breaker opens or closes."""
        self.stats.failover_paused = bool(reason)
        if bool(reason) == bool(self._paused):
            self._paused = reason
            return
        with transaction(self.sessions) as s:
            if reason:
                events.emit(s, "failover.paused", reason, severity=c.SEVERITY_ERROR)
            else:
                events.emit(s, "failover.resumed", "Enough hosts are back: failover resumes")
                # The repairs that waited for the breaker are due now.
                s.execute(
                    update(LoadBalancer)
                    .where(LoadBalancer.id.in_(select(Instance.load_balancer_id).where(_lost())))
                    .values(reconcile_requested=True)
                    .execution_options(synchronize_session=False)
                )
        self._paused = reason

    def resync(self, paused: str | None) -> int:
        """Queue every LB whose data plane lags though nobody asked for a pass (a safety
        net: whatever changes the data plane flags its LBs as it goes); how many."""
        lagging = Instance.applied_generation < LoadBalancer.desired_generation
        needs_repair = exists().where(
            Instance.load_balancer_id == LoadBalancer.id,
            lagging if paused else or_(lagging, _lost()),
        )
        with transaction(self.sessions) as s:
            result = s.execute(
                update(LoadBalancer)
                .where(
                    not_(due_for_reconcile()),
                    LoadBalancer.provisioning_status != c.PENDING_DELETE,
                    or_(LoadBalancer.provisioning_status == c.ERROR, needs_repair),
                )
                .values(reconcile_requested=True)
                .execution_options(synchronize_session=False)
            )
            count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        if count:
            log.info("resync: %d load balancer(s) lagging without a request", count)
        return count

    # --- claims -----------------------------------------------------------------------

    def claim(self, lb_id: str) -> bool:
        """Take the LB's lease (free, expired, ours, or held by a controller that stopped
        beating) and dequeue its reconcile request: whatever asks again later is kept."""
        now = utcnow_precise()
        until = now + timedelta(seconds=self.settings.controller_lease_seconds)
        live = select(Service.id).where(
            Service.kind == liveness.KIND_CONTROLLER,
            Service.last_seen_at >= now - timedelta(seconds=self.settings.service_dead_after),
        )
        with transaction(self.sessions) as s:
            result = s.execute(
                update(LoadBalancer)
                .where(
                    LoadBalancer.id == lb_id,
                    or_(
                        LoadBalancer.lease_owner.is_(None),
                        LoadBalancer.lease_owner == self.owner,
                        LoadBalancer.lease_until < now,
                        LoadBalancer.lease_owner.not_in(live),
                    ),
                )
                .values(lease_owner=self.owner, lease_until=until, reconcile_requested=False)
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

    def renew_leases(self) -> None:
        """Keep the leases of reconciles under way (an apply may outlast a lease)."""
        with self._lock:
            held = list(self._inflight)
        if not held:
            return
        until = utcnow_precise() + timedelta(seconds=self.settings.controller_lease_seconds)
        with transaction(self.sessions) as s:
            s.execute(
                update(LoadBalancer)
                .where(LoadBalancer.id.in_(held), LoadBalancer.lease_owner == self.owner)
                .values(lease_until=until)
                .execution_options(synchronize_session=False)
            )

    def release_dead_controllers(self) -> list[str]:
        """Free the claims of controllers that stopped beating and forget old processes."""
        now = utcnow_precise()
        dead_after = timedelta(seconds=self.settings.service_dead_after)
        with transaction(self.sessions) as s:
            dead = list(
                s.scalars(
                    select(Service.id).where(
                        Service.kind == liveness.KIND_CONTROLLER,
                        Service.last_seen_at < now - dead_after,
                        # Never itself: on a starved machine its own beat can lag past
                        # `dead_after` while its reconciles are under way; others take
                        # its claims over if it is really gone, and meanwhile it claims
                        # nothing new (`tick`).
                        Service.id != self.owner,
                    )
                )
            )
            if dead:
                s.execute(
                    update(LoadBalancer)
                    .where(LoadBalancer.lease_owner.in_(dead))
                    .values(lease_owner=None, lease_until=None)
                    .execution_options(synchronize_session=False)
                )
                s.execute(delete(Service).where(Service.id.in_(dead)))
                log.warning("controller(s) %s stopped beating: claims released", ", ".join(dead))
            s.execute(delete(Service).where(Service.last_seen_at < now - FORGET_SERVICES_AFTER))
        return dead

    # --- one load balancer -----------------------------------------------------------

    def reconcile(self, lb_id: str) -> str:
        """One pass over an LB; what it ended with (`openha.controller.stats`)."""
        with transaction(self.sessions) as s:
            lb = s.get(LoadBalancer, lb_id)
            if lb is None or lb.lease_owner != self.owner:
                return outcome.SKIPPED  # gone, or taken over by a controller that judged us dead
            provider = self.providers.get(lb.provider)
            deleting = lb.provisioning_status == c.PENDING_DELETE
            failover = lb.failover_requested
            # The circuit breaker is decided here, with the snapshot its apply works from.
            paused = self.hosts.pause_reason(s)
            if paused and not (deleting or failover) and _waits_for_failover(s, lb):
                return outcome.SKIPPED  # only a lost host to rebuild from, failover paused
            spec = None if deleting else snapshot.build(s, lb_id, self.keys)
            if spec is not None:
                certificates.record_expiry(s, lb, spec)
            if not deleting and (failover or _has_lost(s, lb_id)):
                _failover_started(s, lb, "requested by an admin" if failover else "host lost")
        # Provider calls happen outside any transaction: they may take seconds.
        if not self.liveness.alive:
            # Our beat lagged (a starved process): others may take this LB over at any
            # moment, so we call no agent for it now; it stays queued for whoever holds it.
            self.recheck_soon(lb_id)
            return outcome.REQUEUED
        if deleting:
            if provider.delete(lb_id):
                self.purge(lb_id)
                return outcome.DELETED
            self.recheck_soon(lb_id)
            return outcome.REQUEUED
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
            return outcome.APPLIED
        if result.error:
            kind = "loadbalancer.no_capacity" if result.no_capacity else None
            self.record_failure(lb_id, spec.generation, result.error, kind=kind)
            return outcome.FAILED
        self.recheck_soon(lb_id)
        return outcome.REQUEUED

    def finalize(self, lb_id: str, generation: int) -> None:
        """Mark `generation` applied; settle child statuses only if nothing newer arrived."""
        with transaction(self.sessions) as s:
            lb = s.scalar(select(LoadBalancer).where(LoadBalancer.id == lb_id).with_for_update())
            if lb is None or not self._holds(lb):
                return
            # ERROR may already read PENDING_UPDATE (the tenant's fix): last_error remembers.
            was_error = lb.last_error is not None
            lb.applied_generation = max(lb.applied_generation, generation)
            lb.health_generation += 1  # the tree changed: its statuses are derived again
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
                elif model is Member:
                    # A disabled member is OFFLINE for good (HAProxy holds it in MAINT,
                    # `domain.status.member_status`): said in this write, not by the
                    # first observation a moment after ACTIVE (the plugin's member list
                    # compares what it saw at ACTIVE with what it lists next).
                    settled["operating_status"] = case(
                        (model.admin_state_up, model.operating_status), else_=c.OFFLINE
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
            if _failover_open(s, lb_id) and not _has_lost(s, lb_id):
                events.emit(s, "failover.finished", "Every instance runs on a live host", lb=lb)

    def record_failure(
        self, lb_id: str, generation: int | None, error: str, *, kind: str | None = None
    ) -> None:
        """Retry with backoff; the first failure of its kind marks ERROR with an event
        (`kind`: "loadbalancer.apply_failed" unless said otherwise)."""
        with transaction(self.sessions) as s:
            lb = s.scalar(select(LoadBalancer).where(LoadBalancer.id == lb_id).with_for_update())
            if lb is None or not self._holds(lb):
                return
            lb.reconcile_requested = True  # tried again once the backoff expires
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
                    kind or "loadbalancer.apply_failed",
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
                .values(next_attempt_at=utcnow() + IN_PROGRESS_RECHECK, reconcile_requested=True)
                .execution_options(synchronize_session=False)
            )

    def _holds(self, lb: LoadBalancer) -> bool:
        """Whether this controller may still write the outcome of its pass: a controller
        that was taken for dead and lost its claim leaves the outcome to the new owner."""
        return lb.lease_owner in (None, self.owner)

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


def _lost() -> ColumnElement[bool]:
    """An instance whose host is gone or not UP."""
    return or_(
        Instance.host_id.is_(None),
        ~exists().where(Host.id == Instance.host_id, Host.status == c.HOST_UP),
    )


def _has_lost(session: Session, lb_id: str) -> bool:
    return bool(session.scalar(select(exists().where(Instance.load_balancer_id == lb_id, _lost()))))


FAILOVER_KINDS = ("failover.started", "failover.finished")


def _failover_open(session: Session, lb_id: str) -> bool:
    """A failover of the LB started and has not finished (its events say: they survive
    restarts, so a retried rebuild is not announced twice)."""
    last = session.scalar(
        select(Event.kind)
        .where(Event.load_balancer_id == lb_id, Event.kind.in_(FAILOVER_KINDS))
        .order_by(Event.id.desc())
        .limit(1)
    )
    return last == "failover.started"


def _failover_started(session: Session, lb: LoadBalancer, why: str) -> None:
    if not _failover_open(session, lb.id):
        events.emit(
            session,
            "failover.started",
            f"Failover {why}",
            severity=c.SEVERITY_WARNING,
            lb=lb,
            details={"reason": why},
        )


def _waits_for_failover(session: Session, lb: LoadBalancer) -> bool:
    """The LB's tree is applied and only instances on lost hosts could need a rebuild:
    nothing to do while failover is paused (an instance lagging on a live host would be)."""
    if lb.applied_generation < lb.desired_generation or lb.provisioning_status == c.ERROR:
        return False
    lagging_on_live_host = session.scalar(
        select(
            exists().where(
                Instance.load_balancer_id == lb.id,
                Instance.applied_generation < lb.desired_generation,
                not_(_lost()),
            )
        )
    )
    return not lagging_on_live_host
