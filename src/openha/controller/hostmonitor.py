"""Host liveness and the failover circuit breaker: the controller's fleet-wide decisions.

A host that misses heartbeats for `host_down_after` seconds is DOWN. Whether
automatic failover is paused is decided here too, by the controller, and handed
to the provider with each `apply` rather than looked up by the provider: one
place decides (the same verdict picks the LBs due for repair and bounds what
their apply may do), a provider needs neither the fleet's hosts nor the
threshold, and providers never import the controller (they sit below it).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openha import events
from openha.db import transaction
from openha.domain.constants import HOST_DOWN, HOST_UP, SEVERITY_ERROR
from openha.models import Host, utcnow_precise
from openha.settings import Settings


def mark_silent_hosts_down(settings: Settings, sessions: sessionmaker[Session]) -> list[str]:
    """Declare DOWN every UP host whose last heartbeat is too old; return their ids."""
    cutoff = utcnow_precise() - timedelta(seconds=settings.host_down_after)
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
                severity=SEVERITY_ERROR,
                host_id=host.id,
            )
        return [h.id for h in silent]


def failover_pause_reason(settings: Settings, session: Session) -> str | None:
    """Why automatic failover is paused now, or None.

    When more than `failover_max_down_fraction` of the registered hosts are down
    together, the likelier story is a partition or a control-plane fault, not
    that many machines died: rebuilding everything at once (Octavia's failover
    storm) would make it worse, so the controller waits for an operator.
    Hosts already silent for half the down threshold count as down: the hosts of
    one outage miss their deadlines a heartbeat apart, and the first one must
    not be failed over before the others are noticed.
    """
    suspect_after = utcnow_precise() - timedelta(seconds=settings.host_down_after / 2)
    hosts = list(
        session.execute(
            select(Host.status, Host.last_heartbeat_at).where(Host.status.in_((HOST_UP, HOST_DOWN)))
        )
    )
    down = sum(
        1 for status, beat in hosts if status == HOST_DOWN or beat is None or beat < suspect_after
    )
    if len(hosts) < 2 or down == 0:
        return None
    if down / len(hosts) > settings.failover_max_down_fraction:
        return (
            f"automatic failover paused: {down} of {len(hosts)} hosts are down "
            f"(more than {settings.failover_max_down_fraction:.0%})"
        )
    return None
