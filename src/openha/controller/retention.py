"""Housekeeping of the database: records past their retention period go, in batches.

The audit trail (`audit_retention_days`) and the event log (`event_retention_days`)
grow with every write and every transition; the controller removes what is older
than its setting (0 keeps everything), `retention_batch` rows per transaction, so a
first purge of a large backlog never holds a long write lock. An event's webhook
deliveries go with it. Deleted load balancers leave no rows to purge: the
controller removes them once their data plane is gone (`Reconciler.purge`), and
idempotency keys expire as keys are used.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from openha.db import transaction
from openha.models import AuditRecord, Event, WebhookDelivery, utcnow
from openha.settings import Settings

log = logging.getLogger(__name__)


def purge_expired(settings: Settings, sessions: sessionmaker[Session]) -> dict[str, int]:
    """Remove expired audit records and events; how many of each went."""
    removed: dict[str, int] = {}
    now = utcnow()
    for model, days in (
        (AuditRecord, settings.audit_retention_days),
        (Event, settings.event_retention_days),
    ):
        if days <= 0:
            continue
        cutoff = now - timedelta(days=days)
        total = 0
        while True:
            with transaction(sessions) as s:
                ids = list(
                    s.scalars(
                        select(model.id)
                        .where(model.created_at < cutoff)
                        .order_by(model.id)
                        .limit(settings.retention_batch)
                    )
                )
                if ids and model is Event:
                    s.execute(delete(WebhookDelivery).where(WebhookDelivery.event_id.in_(ids)))
                if ids:
                    s.execute(delete(model).where(model.id.in_(ids)))
            total += len(ids)
            if len(ids) < settings.retention_batch:
                break
        removed[model.__tablename__] = total
        if total:
            log.info(
                "retention: %d %s older than %g day(s) removed", total, model.__tablename__, days
            )
    return removed
