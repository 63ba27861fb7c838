"""Protection limit trips reported by agents become events, at most one per LB per interval.

An agent reports, with an instance's counters, how many times sources went over its
protection limits (`InstanceStatus.limit_trips`, the instance's trips table). A rise
is an event (`loadbalancer.limits_tripped`, a warning), but a flood trips limits
thousands of times a second: one event per load balancer per `EVENT_INTERVAL` says
it, with the trips counted since, and no more. The cost follows change: nothing is
read unless a count rose.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from openha import events
from openha.domain import constants as c
from openha.models import Event, LoadBalancer, utcnow

KIND = "loadbalancer.limits_tripped"
EVENT_INTERVAL = timedelta(seconds=60)
# The key of an instance's health that holds its trips (`InstanceStatus.limit_trips`).
TRIPS = "limit_trips"


def gained(health: dict[str, object], old: dict[str, object]) -> int:
    """Trips since the last report; a count that went down (a new process) counts anew."""
    now, before = health.get(TRIPS), old.get(TRIPS)
    if not isinstance(now, int) or now <= 0:
        return 0
    if not isinstance(before, int) or before > now:
        return now if isinstance(before, int) else 0
    return now - before


def record(session: Session, rises: dict[str, int]) -> None:
    """An event per load balancer in `rises` (LB id -> trips) not told within the interval."""
    since = utcnow() - EVENT_INTERVAL
    told = set(
        session.scalars(
            select(Event.load_balancer_id).where(
                Event.kind == KIND,
                Event.load_balancer_id.in_(list(rises)),
                Event.created_at >= since,
            )
        )
    )
    for lb_id, count in sorted(rises.items()):
        if lb_id in told:
            continue
        lb = session.get(LoadBalancer, lb_id)
        if lb is None:
            continue
        events.emit(
            session,
            KIND,
            f"Load balancer {lb_id}: sources went over its protection limits {count} time(s)",
            severity=c.SEVERITY_WARNING,
            lb=lb,
            details={"trips": count, "interval_seconds": int(EVENT_INTERVAL.total_seconds())},
        )
