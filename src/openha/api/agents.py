"""/v2/agent/*: where agents register and heartbeat (authenticated by their host credential).

A heartbeat is the agent's truth about its instances, sent as what changed since
the report the API last acknowledged (now and then in full, see
`HeartbeatReport`): an idle host costs one row write per beat, whatever it
carries. The API writes only what changed: an instance's health when it differs
from the stored one, an LB's listener counters when they moved. It marks the
LBs concerned for the controller: to observe (`health_generation`) when a
state changed, to reconcile (`reconcile_requested`) when an instance lost what
it had applied. The answer tells the agent which instances the controller still
wants there, when that changed (`Host.placement_version`), so a host that
returns after being declared dead removes what was rebuilt elsewhere.

Instances an agent runs that no row explains (orphans) are kept in the host's
report (`orphans`: load balancer, first seen) and shown with the host; each set
that appears or goes is an event. The agent removes an orphan only after its grace
period (`orphan_grace_seconds`), unless the answer names it superseded: another
instance of its load balancer runs, applied, on a host that is up.

Rows are written in one order, load balancers, then instances, then the host,
as the controller's placement does: two transactions never wait on each other
in opposite orders (PostgreSQL would abort one).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response, Security
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from openha import events, hosts
from openha.agent.protocol import (
    DELETED,
    HeartbeatReport,
    HeartbeatResponse,
    RegisterRequest,
    RegisterResponse,
)
from openha.api import limittrips
from openha.api.context import get_session
from openha.api.errors import Forbidden, Unauthorized
from openha.api.openapi import AGENT_BEARER
from openha.domain import constants as c
from openha.domain.capacity import capacity_for
from openha.domain.constants import HOST_UP
from openha.domain.observed import COUNTER_FIELDS, ListenerCounters
from openha.models import Host, Instance, Listener, ListenerStats, LoadBalancer, utcnow_precise

router = APIRouter(prefix="/agent", tags=["agent"])

# Parts of a reported status that are traffic counters, not state.
COUNTERS = "listeners"
# Orphans the host's report keeps (an agent gone wrong must not bloat the row).
MAX_ORPHANS_KEPT = 1000


def agent_host(
    request: Request,
    session: Session = Depends(get_session),
    _bearer: Any = Security(AGENT_BEARER),
) -> Host:
    return _authenticated(request, session)


def _authenticated(request: Request, session: Session) -> Host:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("Agents authenticate with their host credential (Bearer).")
    host = hosts.authenticate(session, secret)
    if host is None:
        raise Unauthorized("Unknown host credential.")
    return host


def _host_returns(session: Session, host: Host) -> None:
    """A host that was not UP beats again: what waited for it is tried at once."""
    if host.status == HOST_UP:
        return
    events.emit(session, "host.up", f"Host {host.name} is up (was {host.status})", host_id=host.id)
    # LBs waiting for capacity should not sit out their backoff: retry them now.
    session.execute(
        update(LoadBalancer)
        .where(LoadBalancer.provisioning_status == c.ERROR)
        .values(next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )
    # Its instances count as running again: their LBs' statuses are derived anew.
    on_host = select(Instance.load_balancer_id).where(Instance.host_id == host.id)
    _observe(session, on_host)


def _mark_alive(host: Host) -> None:
    host.status = HOST_UP
    host.last_heartbeat_at = utcnow_precise()


def _observe(session: Session, lb_ids: Any) -> None:
    """The controller derives these LBs' operating statuses again (its observation queue)."""
    session.execute(
        update(LoadBalancer)
        .where(LoadBalancer.id.in_(lb_ids))
        .values(health_generation=LoadBalancer.health_generation + 1)
        .execution_options(synchronize_session=False)
    )


def _repair(session: Session, lb_ids: Iterable[str]) -> None:
    """An instance lost what it had applied: the controller pushes it again."""
    session.execute(
        update(LoadBalancer)
        .where(LoadBalancer.id.in_(list(lb_ids)))
        .values(reconcile_requested=True)
        .execution_options(synchronize_session=False)
    )


def _store_counters(session: Session, lb_ids: Iterable[str]) -> None:
    """Each listener's counters, summed over its LB's instances that report them."""
    lb_ids = list(lb_ids)
    totals: dict[str, ListenerCounters] = {}
    owner: dict[str, str] = {}
    rows = session.execute(
        select(Instance.load_balancer_id, Instance.health).where(
            Instance.load_balancer_id.in_(lb_ids)
        )
    )
    for lb_id, health in rows:
        if not health or int(health.get("applied_generation") or 0) <= 0:
            continue
        for listener_id, counters in (health.get(COUNTERS) or {}).items():
            totals[listener_id] = totals.get(
                listener_id, ListenerCounters()
            ) + ListenerCounters.model_validate(counters)
            owner[listener_id] = lb_id
    # Only listeners that still exist: a report may trail a listener's deletion.
    existing = set(
        session.scalars(
            select(Listener.id).where(
                Listener.load_balancer_id.in_(lb_ids), Listener.id.in_(list(totals))
            )
        )
    )
    stored = {
        row.listener_id: row
        for row in session.scalars(
            select(ListenerStats).where(ListenerStats.listener_id.in_(list(existing)))
        )
    }
    for listener_id in existing:
        row = stored.get(listener_id)
        if row is None:
            row = ListenerStats(listener_id=listener_id, load_balancer_id=owner[listener_id])
            session.add(row)
        for name in COUNTER_FIELDS:
            setattr(row, name, getattr(totals[listener_id], name))


def _state(health: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in health.items() if k not in (COUNTERS, limittrips.TRIPS)}


def _dropped(view: dict[str, Any] | None) -> dict[str, int]:
    """Lines dropped so far per syslog collector, and closed files an object store missed."""
    if not view:
        return {}
    out = {
        str(t.get("target")): int(t.get("dropped") or 0)
        for t in view.get("syslog", [])
        if isinstance(t, dict)
    }
    out["s3"] = int(view.get("dropped_segments") or 0)
    return out


def _log_delivery(session: Session, host: Host, view: dict[str, Any]) -> None:
    """Keep the host's log delivery state; a rise in what it dropped is an event."""
    before = _dropped((host.report or {}).get("log_delivery"))
    for target, count in _dropped(view).items():
        # Counters start again with a new agent: only a rise within one run counts.
        gained = count - before.get(target, 0)
        if gained > 0 and target in before:
            what = "closed log files" if target == "s3" else "log lines"
            events.emit(
                session,
                "logs.dropped",
                f"Host {host.name} dropped {gained} {what} for "
                f"{'its object stores' if target == 's3' else 'syslog target ' + target}"
                " (spool or disk quota full)",
                severity=c.SEVERITY_WARNING,
                host_id=host.id,
                details={"target": target, "dropped": gained, "total": count},
            )
    host.report = {**(host.report or {}), "log_delivery": view}


def _strays(session: Session, host: Host, view: dict[str, Any]) -> None:
    """Keep the host's strays (`agent.strays`); new ones and removed ones are events."""
    before = {(s["kind"], s["name"]) for s in (host.report or {}).get("strays") or []}
    current = view.get("current") or []
    found = [s for s in current if (s["kind"], s["name"]) not in before]
    if found:
        events.emit(
            session,
            "host.strays_found",
            f"Host {host.name} holds {len(found)} leftover(s) no instance explains "
            "(namespaces or processes of gone instance directories): removed after the "
            "grace period",
            severity=c.SEVERITY_WARNING,
            host_id=host.id,
            details={"strays": found[:100]},
        )
    reaped = view.get("reaped") or []
    if reaped:
        failed = [r for r in reaped if r.get("problems")]
        events.emit(
            session,
            "host.strays_removed",
            f"Host {host.name} removed {len(reaped)} leftover(s) no instance explained"
            + (f"; {len(failed)} not completely" if failed else ""),
            severity=c.SEVERITY_WARNING if failed else c.SEVERITY_INFO,
            host_id=host.id,
            details={"strays": reaped[:100]},
        )
    host.report = {**(host.report or {}), "strays": current}


@router.post("/register")
def register(
    body: RegisterRequest,
    session: Session = Depends(get_session),
    host: Host = Depends(agent_host),
) -> RegisterResponse:
    if body.name != host.name:
        raise Forbidden(f"This credential belongs to host {host.name}, not {body.name}.")
    _host_returns(session, host)
    host.management_url = body.management_url
    host.agent_secret = body.agent_secret
    # What the agent measures is kept apart from the operator's setting, which wins.
    host.reported_capacity = (
        body.capacity
        if body.capacity is not None
        else capacity_for(body.memory_bytes, body.fd_limit)
    )
    host.agent_version = body.version
    if body.availability_zone:
        host.availability_zone = body.availability_zone
    host.report = {
        **(host.report or {}),
        "agent_dir": body.agent_dir,
        "memory_bytes": body.memory_bytes,
        "fd_limit": body.fd_limit,
        "sandbox": body.sandbox,
    }
    _mark_alive(host)
    session.commit()
    return RegisterResponse(host_id=host.id)


@router.post("/heartbeat", response_model=HeartbeatResponse)
def heartbeat(
    report: HeartbeatReport,
    request: Request,
    _bearer: Any = Security(AGENT_BEARER),
) -> Response:
    # Every agent calls this every second: its session and host are had here, in the
    # one worker thread the endpoint runs in, not as dependencies (a thread each), and
    # the answer goes out as built (FastAPI would validate it again in another thread).
    session: Session = request.app.state.session_factory()
    try:
        answer = _heartbeat(report, session, _authenticated(request, session))
    finally:
        session.rollback()
        session.close()
    return Response(answer.model_dump_json(), media_type="application/json")


def _sandbox_event(
    session: Session, host: Host, inst: Instance, before: str | None, now: str | None
) -> None:
    """A wall the agent could not raise (a limit, a cgroup) is an event, and so is its repair."""
    if now == before:
        return
    if now:
        events.emit(
            session,
            "instance.sandbox_degraded",
            f"Instance {inst.id} on host {host.name}: {now}",
            severity=c.SEVERITY_WARNING,
            host_id=host.id,
            instance_id=inst.id,
            lb=session.get(LoadBalancer, inst.load_balancer_id),
            details={"problems": now},
        )
    elif before:
        events.emit(
            session,
            "instance.sandbox_restored",
            f"Instance {inst.id} on host {host.name}: every resource limit applies",
            host_id=host.id,
            instance_id=inst.id,
            lb=session.get(LoadBalancer, inst.load_balancer_id),
        )


def _heartbeat(report: HeartbeatReport, session: Session, host: Host) -> HeartbeatResponse:
    # Read first, write in the module's lock order (LBs, instances, host).
    mine = Instance.host_id == host.id
    if report.full:
        rows = {i.id: i for i in session.scalars(select(Instance).where(mine))}
    else:
        asked = [s.instance_id for s in report.instances] + list(report.gone)
        rows = (
            {i.id: i for i in session.scalars(select(Instance).where(mine, Instance.id.in_(asked)))}
            if asked
            else {}
        )
    changes: list[tuple[Instance, dict[str, Any] | None, int]] = []
    observe: set[str] = set()
    counters: set[str] = set()
    repair: set[str] = set()
    seen: set[str] = set()
    orphans: dict[str, str] = {}  # instance id -> its load balancer's id
    trips: dict[str, int] = {}
    for status in report.instances:
        inst = rows.get(status.instance_id)
        if inst is None:
            if status.state != DELETED:
                orphans[status.instance_id] = status.load_balancer_id
            continue
        seen.add(inst.id)
        health = status.model_dump(mode="json")
        old = inst.health or {}
        if health == old:
            continue  # a resync of an unchanged instance writes nothing
        if _state(health) != _state(old):
            observe.add(inst.load_balancer_id)
        if health.get(COUNTERS) != old.get(COUNTERS):
            counters.add(inst.load_balancer_id)
        if rise := limittrips.gained(health, old):
            trips[inst.load_balancer_id] = trips.get(inst.load_balancer_id, 0) + rise
        # The agent's word wins: a lower generation means it lost state and needs a re-push.
        if status.applied_generation < inst.applied_generation:
            repair.add(inst.load_balancer_id)
        _sandbox_event(session, host, inst, old.get("sandbox_error"), status.sandbox_error)
        changes.append((inst, health, status.applied_generation))
    gone_ids = (set(rows) - seen) if report.full else set(report.gone)
    for inst_id in gone_ids:
        inst = rows.get(inst_id)
        if inst is None or (inst.applied_generation <= 0 and not inst.health):
            continue
        # Gone from the host: the controller rebuilds it.
        changes.append((inst, None, 0))
        observe.add(inst.load_balancer_id)
        repair.add(inst.load_balancer_id)
    _host_returns(session, host)
    superseded = _track_orphans(session, host, report, set(rows), orphans)
    if report.log_delivery is not None:
        _log_delivery(session, host, report.log_delivery)
    if report.strays is not None:
        _strays(session, host, report.strays)
    if report.sandbox is not None and report.sandbox != (host.report or {}).get("sandbox"):
        host.report = {**(host.report or {}), "sandbox": report.sandbox}
    if observe:
        _observe(session, list(observe))
    if repair:
        _repair(session, repair)
    for inst, reported, generation in changes:
        inst.health = reported or {}
        inst.applied_generation = generation
        if reported is not None and reported.get("last_error"):
            inst.last_error = reported["last_error"]
    if counters:
        session.flush()
        _store_counters(session, counters)
    if trips:
        limittrips.record(session, trips)
    _mark_alive(host)
    session.commit()
    if report.wanted_version is not None and report.wanted_version == host.placement_version:
        return HeartbeatResponse(wanted_version=host.placement_version)
    wanted = list(rows) if report.full else list(session.scalars(select(Instance.id).where(mine)))
    return HeartbeatResponse(
        wanted_instance_ids=wanted,
        wanted_version=host.placement_version,
        superseded_instance_ids=superseded,
    )


def _track_orphans(
    session: Session,
    host: Host,
    report: HeartbeatReport,
    known_here: set[str],
    reported: dict[str, str],
) -> list[str]:
    """Keep the host's orphans up to date from this report (`reported`: the orphans it
    shows, by load balancer); an event for those that appear and those that go. The
    answer: the orphans another instance of their LB has taken over (`_superseded`)."""
    before: dict[str, dict[str, str]] = dict((host.report or {}).get("orphans") or {})
    now: dict[str, dict[str, str]] = {} if report.full else dict(before)
    wanted_again = {i for i in known_here if i in before}
    for inst_id in [*report.gone, *(s.instance_id for s in report.instances)]:
        now.pop(inst_id, None)
    for inst_id, lb_id in reported.items():
        now[inst_id] = before.get(inst_id) or {"load_balancer_id": lb_id, "since": _stamp()}
    if now and not report.full:  # a row may explain one now that this report did not show
        placed = select(Instance.id).where(Instance.host_id == host.id, Instance.id.in_(now))
        for inst_id in session.scalars(placed):
            now.pop(inst_id, None)
            wanted_again.add(inst_id)
    now = dict(sorted(now.items())[:MAX_ORPHANS_KEPT])
    superseded = _superseded(session, now) if now else []
    if now == before:
        return superseded
    host.report = {**(host.report or {}), "orphans": now}
    found = sorted(set(now) - set(before))
    if found:
        events.emit(
            session,
            "host.orphans_found",
            f"Host {host.name} runs {len(found)} instance(s) no load balancer wants: removed "
            "after the grace period, at once where another instance took over",
            severity=c.SEVERITY_WARNING,
            host_id=host.id,
            details={
                "instance_ids": found[:100],
                "load_balancer_ids": sorted({now[i]["load_balancer_id"] for i in found})[:100],
                "superseded": [i for i in found if i in superseded][:100],
            },
        )
    gone = sorted(set(before) - set(now) - wanted_again)
    if gone:
        events.emit(
            session,
            "host.orphans_removed",
            f"Host {host.name} removed {len(gone)} instance(s) nobody wanted",
            host_id=host.id,
            details={"instance_ids": gone[:100]},
        )
    reclaimed = sorted(set(before) & wanted_again)
    if reclaimed:
        events.emit(
            session,
            "host.orphans_reclaimed",
            f"Host {host.name}: {len(reclaimed)} instance(s) kept as orphans are wanted again",
            host_id=host.id,
            details={"instance_ids": reclaimed[:100]},
        )
    return superseded


def _superseded(session: Session, orphans: dict[str, dict[str, str]]) -> list[str]:
    """The orphans whose load balancer runs another instance, applied, on a host that is
    up: removing them at once loses nothing, and keeping them would put its VIP twice
    on the wire."""
    lb_ids = {o["load_balancer_id"] for o in orphans.values() if o.get("load_balancer_id")}
    if not lb_ids:
        return []
    running = set(
        session.scalars(
            select(Instance.load_balancer_id)
            .join(Host, Host.id == Instance.host_id)
            .where(
                Instance.load_balancer_id.in_(lb_ids),
                Instance.id.not_in(list(orphans)),
                Instance.applied_generation > 0,
                Host.status == HOST_UP,
            )
        )
    )
    return sorted(i for i, o in orphans.items() if o.get("load_balancer_id") in running)


def _stamp() -> str:
    return utcnow_precise().replace(microsecond=0).isoformat() + "Z"
