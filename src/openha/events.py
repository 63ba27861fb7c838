"""Events: the audit trail of what happened to load balancers, hosts and instances.

A neutral module: the API, the controller and providers all record events, in
the caller's transaction, through `emit` alone. The log line that mirrors an event
is written once that transaction commits, so the log never tells of a change that
was rolled back; the webhook deliveries of the event (the outbox, see
`openha.controller.webhooks`) are written in that same transaction, so a delivery
exists exactly when its event does and no restart loses one.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session, SessionTransaction

from openha.domain import constants as c
from openha.domain.webhooks import hears
from openha.models import Event, LoadBalancer, Webhook, WebhookDelivery

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
    resource: tuple[str, str] | None = None,
    project_id: str | None = None,
) -> Event:
    """Record an event in the caller's transaction (it lands only if the change does),
    with a delivery for every enabled webhook that hears it.

    `resource` is the object concerned when narrower than `lb`: ("member", id) …;
    `project_id` the project of an event without a load balancer (a refused quota)."""
    row = Event(
        kind=kind,
        message=message,
        severity=severity,
        project_id=lb.project_id if lb is not None else project_id,
        load_balancer_id=lb.id if lb is not None else None,
        host_id=host_id,
        instance_id=instance_id,
        details=details or {},
        resource_type=resource[0] if resource else None,
        resource_id=resource[1] if resource else None,
    )
    session.add(row)
    _fan_out(session, row)
    warns = severity in (c.SEVERITY_WARNING, c.SEVERITY_ERROR)
    level = logging.WARNING if warns else logging.INFO
    session.info.setdefault(_PENDING, []).append((level, kind, message))
    return row


def _fan_out(session: Session, row: Event) -> None:
    """The outbox: one pending delivery per enabled webhook hearing `row`."""
    with session.no_autoflush:
        hooks = session.execute(
            select(
                Webhook.id,
                Webhook.kinds,
                Webhook.min_severity,
                Webhook.load_balancer_id,
                Webhook.project_id,
                Webhook.all_projects,
            ).where(Webhook.enabled)
        ).all()
    for hook in hooks:
        if hears(
            kinds=hook.kinds or [],
            min_severity=hook.min_severity,
            load_balancer_id=hook.load_balancer_id,
            project_id=hook.project_id,
            all_projects=hook.all_projects,
            event_kind=row.kind,
            event_severity=row.severity,
            event_project_id=row.project_id,
            event_load_balancer_id=row.load_balancer_id,
        ):
            session.add(WebhookDelivery(webhook_id=hook.id, event=row))


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


def document(row: Event) -> dict[str, Any]:
    """An event as the API and webhook payloads render it."""
    return {
        "id": row.id,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "severity": row.severity,
        "kind": row.kind,
        "project_id": row.project_id,
        "load_balancer_id": row.load_balancer_id,
        "host_id": row.host_id,
        "instance_id": row.instance_id,
        "resource_type": row.resource_type,
        "resource_id": row.resource_id,
        "message": row.message,
        "details": row.details or {},
    }
