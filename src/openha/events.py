"""Events: the audit trail of what happened to load balancers, hosts and instances.

A neutral module: the API, the controller and providers all record events, in
the caller's transaction. The log line that mirrors an event is written once
that transaction commits, so the log never tells of a change that was rolled back.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from openha.domain import constants as c
from openha.models import Event, LoadBalancer

log = logging.getLogger("openha.events")

# Log lines waiting for their session's commit, kept in `Session.info`.
_PENDING = "openha.events.pending"


def emit(
    session: Session,
    kind: str,
    message: str,
    *,
    severity: str = c.SEVERITY_INFO,
    lb: LoadBalancer | None = None,
    host_id: str | None = None,
    instance_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record an event in the caller's transaction (it lands only if the change does)."""
    session.add(
        Event(
            kind=kind,
            message=message,
            severity=severity,
            project_id=lb.project_id if lb is not None else None,
            load_balancer_id=lb.id if lb is not None else None,
            host_id=host_id,
            instance_id=instance_id,
            details=details or {},
        )
    )
    warns = severity in (c.SEVERITY_WARNING, c.SEVERITY_ERROR)
    level = logging.WARNING if warns else logging.INFO
    session.info.setdefault(_PENDING, []).append((level, kind, message))


@event.listens_for(Session, "after_commit")
def _log_committed(session: Session) -> None:
    for level, kind, message in session.info.pop(_PENDING, ()):
        log.log(level, "%s: %s", kind, message)


@event.listens_for(Session, "after_transaction_end")
def _forget_rolled_back(session: Session, transaction: SessionTransaction) -> None:
    # After a commit nothing is left; after a rollback of the whole transaction (a
    # savepoint's is not one) its events are gone, and so are their log lines.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
