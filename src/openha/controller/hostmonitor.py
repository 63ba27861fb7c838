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
and providers never import the controller (they sit below it). The breaker
counts a host as down early (silent for half the delay) but on the same evidence:
a suspect whose agent answers the probe is not counted.
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
    # Hosts silent for half that delay: the breaker counts them as down already (the
    # hosts of one outage miss their deadlines a heartbeat apart, and the first one
    # must not be failed over before the others are noticed), unless their agent
    # answers (`answering`): a busy host's late heartbeat is not an outage.
    suspects: list[SilentHost]
    hosts: int  # hosts the breaker weighs (UP or DOWN)
    down: int  # of which DOWN

    def paused(self, settings: Settings, answering: frozenset[str] = frozenset()) -> str | None:
        """The failover circuit breaker's reason, or None."""
        down = self.down + sum(1 for h in self.suspects if h.id not in answering)
        return _pause_reason(settings, self.hosts, down)


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

    def silent_since(limit: datetime | None) -> list[SilentHost]:
        return [
            SilentHost(h.id, h.name, h.management_url, h.agent_secret)
            for h in hosts
            if h.status == HOST_UP
            and limit is not None
            and (h.last_heartbeat_at is None or h.last_heartbeat_at < limit)
        ]

    return Look(
        cutoff=cutoff,
        silent=silent_since(cutoff),
        suspects=silent_since(_cutoff(window, settings.host_down_after / 2)),
        hosts=len(hosts),
        down=sum(1 for h in hosts if h.status == HOST_DOWN),
    )


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
        # Suspect or silent hosts whose agent answered the last probe: alive, whatever
        # became of their heartbeats. Replaced whole, read by reconciles in other threads.
        self.answering: frozenset[str] = frozenset()

    def check(self, seen: Look | None = None) -> list[str]:
        """Probe the suspect hosts; declare DOWN every silent one whose agent does not
        answer; return their ids."""
        if seen is None:
            with reading(self.sessions) as conn:
                seen = look(self.settings, conn)
        if not seen.suspects:
            self.answering = frozenset()
            return []
        # Silent hosts are suspects too (silent for longer): one probe each.
        suspects = seen.suspects
        with ThreadPoolExecutor(max_workers=min(len(suspects), 16)) as pool:
            answered = dict(
                zip([h.id for h in suspects], pool.map(self.probe, suspects), strict=True)
            )
        for host in seen.silent:
            if answered[host.id] and host.id not in self.answering:
                log.warning(
                    "host %s sends no heartbeats but its agent answers: not declared down",
                    host.name,
                )
        self.answering = frozenset(h for h, ok in answered.items() if ok)
        dead = [h.id for h in seen.silent if not answered[h.id]]
        if not dead or seen.cutoff is None:
            return []
        return declare_down(self.sessions, dead, seen.cutoff)

    def pause_reason(self, db: Session | Connection) -> str | None:
        """Why automatic failover is paused now, or None (see `_pause_reason`)."""
        return look(self.settings, db).paused(self.settings, self.answering)


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
