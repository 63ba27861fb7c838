"""Operating statuses, derived only for the load balancers whose inputs changed.

What an LB's statuses depend on changes in three places, and each bumps the
LB's `health_generation` (the observation queue, `due_for_observation`): the API
when a heartbeat changed one of its instances' reported state, the controller
after an apply (the tree changed) and when a host holding one of its instances
went down. `Observer.observe_due` derives the statuses of exactly those LBs and
writes only the ones that differ; an idle fleet costs one indexed query per pass.
Several controllers may observe: the LB's row is locked to record what was
observed, and an observation older than the recorded one is dropped.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from openha import events
from openha.controller import snapshot
from openha.db import ChangeWatch, reading, transaction
from openha.domain import constants as c
from openha.domain.observed import ObservedState
from openha.domain.status import status_severity
from openha.models import (
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    LoadBalancer,
    Member,
    Pool,
    due_for_observation,
)
from openha.providers.registry import ProviderRegistry
from openha.settings import Settings

log = logging.getLogger(__name__)

# The most LBs one pass observes: a burst of changes is worked off over a few passes.
BATCH = 200
# The longest an idle observer goes without a look (should a change slip past the watch).
IDLE_POLL = 1.0
DUE = (
    select(LoadBalancer.id, LoadBalancer.health_generation)
    .where(due_for_observation())
    .limit(BATCH)
)
QUEUED = select(LoadBalancer.id).where(due_for_observation()).limit(1)


class Observer:
    def __init__(
        self, settings: Settings, sessions: sessionmaker[Session], providers: ProviderRegistry
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.providers = providers
        # Nothing committed since the last pass: nothing to observe (see ChangeWatch).
        self._changes = ChangeWatch(sessions)
        self._left = False  # the last pass left work for the next one
        self._next_poll = 0.0

    def close(self) -> None:
        self._changes.close()

    def observe_due(self) -> int:
        """Observe every LB whose health changed since it was last observed; how many."""
        changed = self._changes.changed()
        if not changed and not self._left and time.monotonic() < self._next_poll:
            return 0
        self._next_poll = time.monotonic() + IDLE_POLL
        if not self._left and self._changes.finds_nothing(QUEUED):
            return 0  # a commit elsewhere (a heartbeat, a beat): the queue is empty
        with reading(self.sessions) as conn:
            due = conn.execute(DUE).all()
        self._left = len(due) == BATCH
        for lb_id, generation in due:
            try:
                self.observe(lb_id, generation)
            except Exception:
                # Recorded as observed all the same: a broken LB must not be retried in a
                # hot loop; its next change brings it back.
                log.exception("observing %s failed", lb_id)
                self.store(lb_id, generation, None)
        return len(due)

    def observe(self, lb_id: str, generation: int) -> None:
        with transaction(self.sessions) as s:
            lb = s.get(LoadBalancer, lb_id)
            if lb is None:
                return
            # Nothing applied yet, or on its way out: nothing to observe.
            idle = lb.provisioning_status == c.PENDING_DELETE or lb.applied_generation <= 0
            provider = self.providers.get(lb.provider)
            spec = None if idle else snapshot.build(s, lb_id, None)
        state = provider.observe(spec) if spec is not None else None
        self.store(lb_id, generation, state)

    def store(self, lb_id: str, generation: int, state: ObservedState | None) -> None:
        """Record `generation` as observed and write the statuses of `state` that changed."""
        with transaction(self.sessions) as s:
            lb = s.scalar(select(LoadBalancer).where(LoadBalancer.id == lb_id).with_for_update())
            if lb is None or lb.observed_generation >= generation:
                return  # gone, or another controller observed something as new
            lb.observed_generation = generation
            if state is None:
                return
            if lb.operating_status != state.load_balancer:
                before, after = lb.operating_status, state.load_balancer
                _status_event(s, lb, "loadbalancer", lb.id, before, after)
                lb.operating_status = state.load_balancer
            for model, statuses in (
                (Listener, state.listeners),
                (Pool, state.pools),
                (Member, state.members),
                (HealthMonitor, state.health_monitors),
                (L7Policy, state.l7policies),
                (L7Rule, state.l7rules),
            ):
                if not statuses:
                    continue
                stored: dict[str, str] = {
                    obj_id: status
                    for obj_id, status in s.execute(
                        select(model.id, model.operating_status).where(
                            model.load_balancer_id == lb_id
                        )
                    )
                }
                for obj_id, status in statuses.items():
                    if obj_id in stored and stored[obj_id] != status:
                        s.execute(
                            update(model)
                            .where(model.id == obj_id)
                            .values(operating_status=status)
                            .execution_options(synchronize_session=False)
                        )
                        if model in REPORTED:
                            _status_event(s, lb, REPORTED[model], obj_id, stored[obj_id], status)


# What HAProxy's checks decide (the rest follows admin state): their changes are events.
REPORTED: dict[type, str] = {Listener: "listener", Pool: "pool", Member: "member"}


def _status_event(
    s: Session, lb: LoadBalancer, what: str, obj_id: str, before: str, after: str
) -> None:
    events.emit(
        s,
        f"{what}.operating_status",
        f"{what} {obj_id}: {before} -> {after}",
        severity=status_severity(after),
        lb=lb,
        resource=(what, obj_id),
        details={"from": before, "to": after},
    )
