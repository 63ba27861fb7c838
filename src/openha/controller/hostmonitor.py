"""Host liveness: a host that misses heartbeats for `host_down_after` seconds is DOWN."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openha.controller import events
from openha.db import transaction
from openha.models import Host, utcnow
from openha.settings import Settings

HOST_UP = "UP"
HOST_DOWN = "DOWN"


def mark_silent_hosts_down(settings: Settings, sessions: sessionmaker[Session]) -> list[str]:
    """Declare DOWN every UP host whose last heartbeat is too old; return their ids."""
    cutoff = utcnow() - timedelta(seconds=settings.host_down_after)
    with transaction(sessions) as s:
        silent = list(
            s.scalars(
                select(Host)
                .where(Host.status == HOST_UP, Host.last_heartbeat_at < cutoff)
                .with_for_update()
            )
        )
        for host in silent:
            host.status = HOST_DOWN
            events.emit(
                s,
                "host.down",
                f"Host {host.name} missed heartbeats since {host.last_heartbeat_at}",
                severity="ERROR",
                host_id=host.id,
            )
        return [h.id for h in silent]


def failover_pause_reason(settings: Settings, session: Session) -> str | None:
    """Why automatic failover is paused now, or None.

    When more than `failover_max_down_fraction` of the registered hosts are down
    together, the likelier story is a partition or a control-plane fault, not
    that many machines died: rebuilding everything at once (Octavia's failover
    storm) would make it worse, so the controller waits for an operator.
    """
    statuses = list(
        session.scalars(select(Host.status).where(Host.status.in_((HOST_UP, HOST_DOWN))))
    )
    down = statuses.count(HOST_DOWN)
    if len(statuses) < 2 or down == 0:
        return None
    if down / len(statuses) > settings.failover_max_down_fraction:
        return (
            f"automatic failover paused: {down} of {len(statuses)} hosts are down "
            f"(more than {settings.failover_max_down_fraction:.0%})"
        )
    return None
