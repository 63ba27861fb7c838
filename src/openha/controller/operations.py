"""The operations engine: advances admin operations (migrate, drain, ...) step by step.

An operation row is desired state, like a load balancer's generation: the API
writes it (PENDING) and answers 202; the controller finds it due, claims it (a
lease, as for LBs: a controller that stopped beating loses its claims at once),
calls its kind's step function (`openha.controller.opkinds.KINDS`) once, writes
down what the step did and when the next call is due, and lets the claim go.
Nothing is remembered in memory between two calls, so a restarted controller (or
another one) resumes every open operation where it stood. A step that raises is
retried with backoff; one that raises `StepError` fails the operation for good.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from openha import liveness
from openha.db import transaction
from openha.domain import constants as c
from openha.domain.operations import Step, StepError
from openha.models import Operation, Service, utcnow, utcnow_precise
from openha.providers.registry import ProviderRegistry
from openha.settings import Settings

log = logging.getLogger(__name__)

MAX_RETRIES = 30  # consecutive unexpected errors before an operation fails
MAX_STEPS_KEPT = 500


@dataclass(frozen=True)
class OperationContext:
    settings: Settings
    sessions: sessionmaker[Session]
    providers: ProviderRegistry


@dataclass(frozen=True)
class OperationView:
    """What a step function sees of its operation (a copy: it answers with a `Step`)."""

    id: str
    kind: str
    target_type: str
    target_id: str
    params: Mapping[str, Any]
    data: Mapping[str, Any]
    requested_by: str


StepFunction = Callable[[OperationContext, OperationView], Step]


class OperationRunner:
    def __init__(
        self,
        context: OperationContext,
        kinds: Mapping[str, StepFunction],
        owner: str,
        workers: int = 4,
    ) -> None:
        self.context = context
        self.kinds = kinds
        self.owner = owner
        self.workers = workers
        self._inflight: set[str] = set()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="operation")

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def advance_due(self) -> int:
        """Start one step of each due operation on a free worker; how many were started.
        Without `start` (tests, tools) the steps run here, one after the other."""
        with self._lock:
            busy = set(self._inflight)
        free = self.workers - len(busy)
        if free <= 0:
            return 0
        now = utcnow_precise()
        with transaction(self.context.sessions) as s:
            due = list(
                s.scalars(
                    select(Operation.id)
                    .where(
                        Operation.state.in_(c.OPERATION_OPEN),
                        or_(Operation.next_attempt_at.is_(None), Operation.next_attempt_at <= now),
                        Operation.id.not_in(busy),
                        self._claimable(now),
                    )
                    .order_by(Operation.created_at)
                    .limit(free)
                )
            )
        started = 0
        for op_id in due:
            if not self._claim(op_id):
                continue
            with self._lock:
                self._inflight.add(op_id)
            if self._pool is not None:
                self._pool.submit(self._work, op_id)
            else:
                self._work(op_id)
            started += 1
        return started

    def _claimable(self, now: Any) -> Any:
        live = select(Service.id).where(
            Service.kind == liveness.KIND_CONTROLLER,
            Service.last_seen_at
            >= now - timedelta(seconds=self.context.settings.service_dead_after),
        )
        return or_(
            Operation.lease_owner.is_(None),
            Operation.lease_owner == self.owner,
            Operation.lease_until < now,
            Operation.lease_owner.not_in(live),
        )

    def _claim(self, op_id: str) -> bool:
        now = utcnow_precise()
        until = now + timedelta(seconds=self.context.settings.controller_lease_seconds)
        with transaction(self.context.sessions) as s:
            result = s.execute(
                update(Operation)
                .where(Operation.id == op_id, self._claimable(now))
                .values(lease_owner=self.owner, lease_until=until)
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def _work(self, op_id: str) -> None:
        try:
            self.advance(op_id)
        except Exception:
            log.exception("operation %s: bookkeeping failed", op_id)
        finally:
            with self._lock:
                self._inflight.discard(op_id)

    def advance(self, op_id: str) -> Step | None:
        """Call the operation's step function once and write down what it did."""
        with transaction(self.context.sessions) as s:
            op = s.get(Operation, op_id)
            if op is None or op.state not in c.OPERATION_OPEN:
                return None
            view = OperationView(
                id=op.id,
                kind=op.kind,
                target_type=op.target_type,
                target_id=op.target_id,
                params=dict(op.params or {}),
                data=dict(op.data or {}),
                requested_by=op.requested_by,
            )
        function = self.kinds.get(view.kind)
        retry_error = None
        try:
            if function is None:
                raise StepError(f"unknown operation kind {view.kind!r}")
            step = function(self.context, view)
        except StepError as exc:
            step = Step.failed(str(exc))
        except Exception as exc:  # an agent unreachable, a race: try again shortly
            log.warning("operation %s (%s): step failed: %s", op_id, view.kind, exc)
            retry_error = f"{type(exc).__name__}: {exc}"
            step = Step.waiting(retry_error, delay=1.0)
        self._record(op_id, step, retry_error)
        return step

    def _record(self, op_id: str, step: Step, retry_error: str | None) -> None:
        with transaction(self.context.sessions) as s:
            op = s.get(Operation, op_id)
            if op is None:
                return
            data = {**(op.data or {}), **step.data}
            retries = int(data.get("retries", 0))
            data["retries"] = retries + 1 if retry_error else 0
            op.error = retry_error
            if retry_error and retries + 1 >= MAX_RETRIES:
                step = Step.failed(f"gave up after {MAX_RETRIES} failed attempts: {retry_error}")
            if step.outcome != "waiting":
                at = utcnow().isoformat()
                done = [{"detail": "", **entry, "at": at} for entry in step.report]
                entry = {"step": step.name, "at": at, "detail": step.detail}
                op.steps = [*(op.steps or []), *done, entry][-MAX_STEPS_KEPT:]
            if step.outcome == "failed":
                op.state, op.error = c.OPERATION_FAILED, step.detail
            elif step.outcome == "succeeded":
                op.state = c.OPERATION_SUCCEEDED
            else:
                op.state = c.OPERATION_RUNNING
            if step.outcome == "waiting" and not retry_error:
                data["waiting_for"] = step.detail
            elif step.outcome != "waiting":
                data.pop("waiting_for", None)
            op.data = data
            delay = step.delay if step.outcome == "waiting" else 0.0
            if retry_error:
                delay = min(2.0 ** min(retries, 6) * 0.5, 30.0)
            op.next_attempt_at = utcnow_precise() + timedelta(seconds=delay) if delay else None
            op.lease_owner, op.lease_until = None, None
            op.updated_at = utcnow()


def start(
    session: Session,
    kind: str,
    target_type: str,
    target_id: str,
    params: Mapping[str, Any],
    requested_by: str,
    parent_id: str | None = None,
) -> Operation:
    """A new operation, in the caller's transaction: the controller takes it from there."""
    op = Operation(
        kind=kind,
        target_type=target_type,
        target_id=target_id,
        params=dict(params),
        data={},
        steps=[{"step": "requested", "at": utcnow().isoformat(), "detail": requested_by}],
        requested_by=requested_by,
        parent_id=parent_id,
        state=c.OPERATION_PENDING,
    )
    session.add(op)
    session.flush()
    return op
