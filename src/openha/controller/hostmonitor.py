"""Host liveness and the failover circuit breaker: the controller's fleet-wide decisions.

A host is declared DOWN on evidence, never because nobody was listening:
- its silence counts only while an API was up to hear its heartbeats
  (`liveness.listening`): an API restart, or no API at all, silences every host
  at once and proves nothing about any of them;
- a host silent for `host_down_after` seconds of that is probed directly (its
  agent's /v1/healthz, within `agent_probe_timeout`): an agent that answers is
  alive, whatever became of its heartbeats, and nothing moves.
The LBs with an instance on a host declared down are queued for a reconcile pass
(the rebuild) and an observation (their statuses), in the same transaction.

Whether automatic failover is paused is decided here too, by the controller, and
handed to the provider with each `apply` rather than looked up by the provider:
one place decides (the same verdict decides which repairs wait and bounds what
an apply may do), a provider needs neither the fleet's hosts nor the threshold,
and providers never import the controller (they sit below it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session, sessionmaker

from openha import events, liveness
from openha.db import reading, transaction
from openha.domain.constants import HOST_DOWN, HOST_UP, SEVERITY_ERROR
from openha.models import Host, Instance, LoadBalancer, utcnow_precise
from openha.providers.haproxy import agent_client
from openha.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SilentHost:
    id: str
    name: str
    management_url: str
    agent_secret: str


@dataclass(frozen=True)
class Look:
    """One look at the fleet's liveness (one read of the services and hosts tables)."""

    # Hosts that last beat before this were silent for `host_down_after` while an API
    # was up to hear them; None: no host can be judged now.
    cutoff: datetime | None
    silent: list[SilentHost]
    paused: str | None  # the failover circuit breaker's reason, or None


def _cutoff(window: tuple[datetime, datetime] | None, silence: float) -> datetime | None:
    """The heartbeat time before which a host was silent `silence` seconds in `window`."""
    if window is None:
        return None
    since, until = window
    cutoff = until - timedelta(seconds=silence)
    return cutoff if since <= cutoff else None


JUDGED = select(
    Host.id,
    Host.name,
    Host.management_url,
    Host.agent_secret,
    Host.status,
    Host.last_heartbeat_at,
).where(Host.status.in_((HOST_UP, HOST_DOWN)))


def look(settings: Settings, db: Session | Connection) -> Look:
    now = utcnow_precise()
    window = liveness.listening(db, settings.service_dead_after, now)
    hosts = db.execute(JUDGED).all()
    cutoff = _cutoff(window, settings.host_down_after)
    silent = [
        SilentHost(h.id, h.name, h.management_url, h.agent_secret)
        for h in hosts
        if h.status == HOST_UP
        and cutoff is not None
        and (h.last_heartbeat_at is None or h.last_heartbeat_at < cutoff)
    ]
    # The breaker counts as down the hosts already silent for half the delay: the hosts
    # of one outage miss their deadlines a heartbeat apart, and the first one must not
    # be failed over before the others are noticed.
    suspect = _cutoff(window, settings.host_down_after / 2)
    down = sum(
        1
        for h in hosts
        if h.status == HOST_DOWN
        or (suspect is not None and (h.last_heartbeat_at is None or h.last_heartbeat_at < suspect))
    )
    return Look(cutoff, silent, _pause_reason(settings, len(hosts), down))


def _pause_reason(settings: Settings, hosts: int, down: int) -> str | None:
    """When more than `failover_max_down_fraction` of the registered hosts are down
    together, the likelier story is a partition or a control-plane fault, not that
    many machines died: rebuilding everything at once (Octavia's failover storm)
    would make it worse, so the controller waits for an operator."""
    if hosts < 2 or down == 0:
        return None
    if down / hosts > settings.failover_max_down_fraction:
        return (
            f"automatic failover paused: {down} of {hosts} hosts are down "
            f"(more than {settings.failover_max_down_fraction:.0%})"
        )
    return None


def agent_answers(settings: Settings) -> Callable[[SilentHost], bool]:
    def probe(host: SilentHost) -> bool:
        if not host.management_url:
            return False
        agent = agent_client.address(settings, host.management_url, host.agent_secret)
        return agent_client.answers(agent, settings.agent_probe_timeout)

    return probe


class HostMonitor:
    """Declares hosts down on evidence (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        probe: Callable[[SilentHost], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.probe = probe or agent_answers(settings)
        self._answering: set[str] = set()  # silent hosts whose agent answers (said once)

    def check(self, seen: Look | None = None) -> list[str]:
        """Declare DOWN every silent host whose agent does not answer; return their ids."""
        if seen is None:
            with reading(self.sessions) as conn:
                seen = look(self.settings, conn)
        if not seen.silent or seen.cutoff is None:
            self._answering.clear()
            return []
        silent = seen.silent
        with ThreadPoolExecutor(max_workers=min(len(silent), 16)) as pool:
            answered = dict(zip([h.id for h in silent], pool.map(self.probe, silent), strict=True))
        for host in silent:
            if answered[host.id] and host.id not in self._answering:
                log.warning(
                    "host %s sends no heartbeats but its agent answers: not declared down",
                    host.name,
                )
        self._answering = {h for h, ok in answered.items() if ok}
        dead = [h.id for h in silent if not answered[h.id]]
        return declare_down(self.sessions, dead, seen.cutoff) if dead else []


def declare_down(
    sessions: sessionmaker[Session], host_ids: list[str], cutoff: datetime
) -> list[str]:
    """Mark the hosts DOWN (those still silent since `cutoff`) and queue their LBs."""
    with transaction(sessions) as s:
        # Load balancers first, then hosts: the order every writer of both follows.
        on_them = select(Instance.load_balancer_id).where(Instance.host_id.in_(host_ids))
        s.execute(
            update(LoadBalancer)
            .where(LoadBalancer.id.in_(on_them))
            .values(
                reconcile_requested=True,
                next_attempt_at=None,
                attempts=0,
                health_generation=LoadBalancer.health_generation + 1,
            )
            .execution_options(synchronize_session=False)
        )
        hosts = list(
            s.scalars(
                select(Host)
                .where(
                    Host.id.in_(host_ids),
                    Host.status == HOST_UP,
                    Host.last_heartbeat_at < cutoff,
                )
                .with_for_update()
            )
        )
        for host in hosts:
            host.status = HOST_DOWN
            events.emit(
                s,
                "host.down",
                f"Host {host.name} missed heartbeats since {host.last_heartbeat_at}",
                severity=SEVERITY_ERROR,
                host_id=host.id,
            )
        return [h.id for h in hosts]


def mark_silent_hosts_down(
    settings: Settings,
    sessions: sessionmaker[Session],
    probe: Callable[[SilentHost], bool] | None = None,
) -> list[str]:
    """One liveness pass (what `HostMonitor.check` does, without its memory)."""
    return HostMonitor(settings, sessions, probe).check()


def failover_pause_reason(settings: Settings, db: Session | Connection) -> str | None:
    """Why automatic failover is paused now, or None (see `_pause_reason`)."""
    return look(settings, db).paused
