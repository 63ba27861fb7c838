"""Event retention: the controller purges events older than `event_retention_days`.

In batches of `event_purge_batch` rows, each its own short transaction (deliveries of
those events first), so a large backlog never holds the database for long; a pass
stops after `MAX_BATCHES` and the next one goes on.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from openha.db import transaction
from openha.models import Event, WebhookDelivery, utcnow
from openha.settings import Settings

# How often the controller purges, and the most batches one pass removes.
INTERVAL = 60.0
MAX_BATCHES = 20


def purge_events(settings: Settings, sessions: sessionmaker[Session]) -> int:
    """Remove events past retention (and their deliveries); how many events went."""
    if settings.event_retention_days <= 0:
        return 0
    cutoff = utcnow() - timedelta(days=settings.event_retention_days)
    batch = settings.event_purge_batch
    removed = 0
    for _ in range(MAX_BATCHES):
        with transaction(sessions) as s:
            ids = list(
                s.scalars(
                    select(Event.id)
                    .where(Event.created_at < cutoff)
                    .order_by(Event.id)
                    .limit(batch)
                )
            )
            if ids:
                s.execute(delete(WebhookDelivery).where(WebhookDelivery.event_id.in_(ids)))
                s.execute(delete(Event).where(Event.id.in_(ids)))
        removed += len(ids)
        if len(ids) < batch:
            break
    return removed
