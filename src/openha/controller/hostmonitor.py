"""Host liveness and the failover circuit breaker: the controller's fleet-wide decisions.

A host is declared DOWN on evidence, never because nobody was listening:
- its silence counts only from the moment an API was up to hear its heartbeats
  (`liveness.listening_since`): an API restart, or no API at all, silences every
  host at once and proves nothing about any of them;
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

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from openha import events, liveness
from openha.db import transaction
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


def silence_cutoff(
    settings: Settings, session: Session, now: datetime, silence: float
) -> datetime | None:
    """Hosts whose last heartbeat is older than this were silent `silence` seconds while an
    API was up to hear them; None when no host can be judged (no API up long enough)."""
    since = liveness.listening_since(session, settings.service_dead_after, now)
    cutoff = now - timedelta(seconds=silence)
    if since is None or since > cutoff:
        return None
    return cutoff


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

    def check(self) -> list[str]:
        """Declare DOWN every silent host whose agent does not answer; return their ids."""
        now = utcnow_precise()
        with transaction(self.sessions) as s:
            cutoff = silence_cutoff(self.settings, s, now, self.settings.host_down_after)
            if cutoff is None:
                return []
            silent = [
                SilentHost(h.id, h.name, h.management_url, h.agent_secret)
                for h in s.scalars(
                    select(Host).where(Host.status == HOST_UP, Host.last_heartbeat_at < cutoff)
                )
            ]
        if not silent:
            self._answering.clear()
            return []
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
        return declare_down(self.sessions, dead, cutoff) if dead else []


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


def failover_pause_reason(settings: Settings, session: Session) -> str | None:
    """Why automatic failover is paused now, or None.

    When more than `failover_max_down_fraction` of the registered hosts are down
    together, the likelier story is a partition or a control-plane fault, not
    that many machines died: rebuilding everything at once (Octavia's failover
    storm) would make it worse, so the controller waits for an operator.
    Hosts already silent for half the down threshold (while an API listened)
    count as down: the hosts of one outage miss their deadlines a heartbeat
    apart, and the first one must not be failed over before the others are noticed.
    """
    now = utcnow_precise()
    suspect_cutoff = silence_cutoff(settings, session, now, settings.host_down_after / 2)
    hosts = list(
        session.execute(
            select(Host.status, Host.last_heartbeat_at).where(Host.status.in_((HOST_UP, HOST_DOWN)))
        )
    )
    down = sum(
        1
        for status, beat in hosts
        if status == HOST_DOWN
        or (suspect_cutoff is not None and (beat is None or beat < suspect_cutoff))
    )
    if len(hosts) < 2 or down == 0:
        return None
    if down / len(hosts) > settings.failover_max_down_fraction:
        return (
            f"automatic failover paused: {down} of {len(hosts)} hosts are down "
            f"(more than {settings.failover_max_down_fraction:.0%})"
        )
    return None
