"""Operators' repairs of one load balancer: sync, reload, force-recover, diff.

Each action is one function of (sessions, providers, lb id), idempotent and safe to
repeat, returning the steps it took (`providers.base.RepairStep`). Each is an
operation kind (`as_kind`, registered in `openha.controller.opkinds`): the API
answers `POST /v2/manage/loadbalancers/{id}/{sync,reload,force-recover}` with an
operation, and the controller runs the action once, writes each of its steps down
on the operation, and ends it SUCCEEDED, or FAILED when a step failed. A controller
that dies meanwhile leaves the operation to another, which runs the action again:
safe, since it is idempotent. What the actions leave to the reconcile loop (placing
and rebuilding instances, settling statuses) they ask for through the LB's row, as
every other change does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openha import events
from openha.certstore import keys as key_managers
from openha.certstore.keys import KeyManager
from openha.controller import snapshot
from openha.controller.operations import OperationContext, OperationView, StepFunction
from openha.db import transaction
from openha.domain import constants as c
from openha.domain.configdiff import unified
from openha.domain.operations import Step, StepError
from openha.models import Host, Instance, LoadBalancer, utcnow
from openha.providers.base import RepairStep
from openha.providers.registry import ProviderRegistry

RepairAction = Callable[[sessionmaker[Session], ProviderRegistry, str], list[RepairStep]]


class NoSuchLoadBalancer(LookupError):
    """The load balancer does not exist (the API answers 404)."""


def as_kind(action: RepairAction) -> StepFunction:
    """The operation kind that runs `action` on the operation's load balancer once."""

    def step(ctx: OperationContext, op: OperationView) -> Step:
        try:
            steps = action(ctx.sessions, ctx.providers, op.target_id)
        except NoSuchLoadBalancer:
            raise StepError("the load balancer was deleted") from None
        report = tuple(_entry(s) for s in steps)
        failed = [s for s in steps if not s.ok]
        if failed:
            return Step.failed(
                "; ".join(f"{s.action}: {s.detail}" for s in failed)[:2000], report=report
            )
        return Step.succeeded(f"{len(steps)} step(s) done", report=report)

    step.__name__ = step.__qualname__ = f"{action.__name__}_step"
    return step


def _entry(step: RepairStep) -> dict[str, Any]:
    entry: dict[str, Any] = {"step": step.action, "ok": step.ok, "detail": step.detail}
    entry.update({k: v for k in ("instance_id", "host") if (v := getattr(step, k)) is not None})
    return entry


def _keys(providers: ProviderRegistry) -> KeyManager:
    """Reads the certificates a pushed or compared config needs (see `snapshot.build`)."""
    return key_managers.from_settings(providers.context.settings)


def _lb(session: Session, lb_id: str, *, lock: bool = False) -> LoadBalancer:
    stmt = select(LoadBalancer).where(LoadBalancer.id == lb_id)
    lb = session.scalar(stmt.with_for_update() if lock else stmt)
    if lb is None:
        raise NoSuchLoadBalancer(lb_id)
    return lb


def _deleting(lb: LoadBalancer, action: str) -> list[RepairStep] | None:
    if lb.provisioning_status == c.PENDING_DELETE:
        return [RepairStep(action, False, "the load balancer is being deleted")]
    return None


def _note(sessions: sessionmaker[Session], lb_id: str, kind: str, steps: list[RepairStep]) -> None:
    failed = [s for s in steps if not s.ok]
    with transaction(sessions) as s:
        lb = s.get(LoadBalancer, lb_id)
        events.emit(
            s,
            kind,
            f"{len(steps) - len(failed)} step(s) done, {len(failed)} failed",
            severity=c.SEVERITY_WARNING if failed else c.SEVERITY_INFO,
            lb=lb,
            details={"steps": [asdict(step) for step in steps]},
        )


def sync(
    sessions: sessionmaker[Session], providers: ProviderRegistry, lb_id: str
) -> list[RepairStep]:
    """Render the desired tree again and push it to every instance, even one that
    reports it applied already: a config edited by hand, a deleted namespace, a
    process started by hand are put back as the database says."""
    with transaction(sessions) as s:
        lb = _lb(s, lb_id)
        if refused := _deleting(lb, "sync"):
            return refused
        provider = providers.get(lb.provider)
        spec = snapshot.build(s, lb_id, _keys(providers))
    steps = provider.sync(spec)
    _note(sessions, lb_id, "loadbalancer.synced", steps)
    return steps


def reload(
    sessions: sessionmaker[Session], providers: ProviderRegistry, lb_id: str
) -> list[RepairStep]:
    """A hitless reload of every instance from the configuration it holds."""
    with transaction(sessions) as s:
        lb = _lb(s, lb_id)
        if refused := _deleting(lb, "reload"):
            return refused
        provider = providers.get(lb.provider)
    steps = provider.reload(lb_id)
    _note(sessions, lb_id, "loadbalancer.reloaded", steps)
    return steps


def force_recover(
    sessions: sessionmaker[Session], providers: ProviderRegistry, lb_id: str
) -> list[RepairStep]:
    """Whatever state the LB is in: clear its error and backoff, have the reconcile
    loop apply its tree afresh (a new generation, settled ACTIVE once applied),
    rebuild on other hosts the instances whose host is lost (the failover path), and
    push the desired config, forced, to the others."""
    steps: list[RepairStep] = []
    with transaction(sessions) as s:
        lb = _lb(s, lb_id, lock=True)
        if refused := _deleting(lb, "force-recover"):
            return refused
        was = f"was {lb.provisioning_status}" + (f": {lb.last_error}" if lb.last_error else "")
        lb.last_error = None
        lb.attempts = 0
        lb.next_attempt_at = None
        lb.lease_owner = lb.lease_until = None  # a reconcile stuck holding it gives way
        lb.desired_generation += 1
        if lb.provisioning_status != c.PENDING_CREATE:
            lb.provisioning_status = c.PENDING_UPDATE
        lb.reconcile_requested = True
        steps.append(RepairStep("clear_error", detail=f"{was}; generation {lb.desired_generation}"))
        up = set(s.scalars(select(Host.id).where(Host.status == c.HOST_UP)))
        for inst in s.scalars(select(Instance).where(Instance.load_balancer_id == lb_id)):
            if inst.host_id in up:
                continue
            inst.status = c.INSTANCE_PENDING_FAILOVER
            inst.failover_requested_at = inst.failover_requested_at or utcnow()
            lb.failover_requested = True
            steps.append(
                RepairStep(
                    "rebuild",
                    detail="its host is lost: rebuilt on another host by the controller",
                    instance_id=inst.id,
                    host=inst.host_id,
                )
            )
        provider = providers.get(lb.provider)
        spec = snapshot.build(s, lb_id, _keys(providers))
    steps += provider.sync(spec)
    steps.append(RepairStep("reconcile", detail="the controller applies and settles the tree"))
    _note(sessions, lb_id, "loadbalancer.force_recovered", steps)
    return steps


def rendered(
    session: Session, providers: ProviderRegistry, lb_id: str, *, place: bool = False
) -> dict[str, str]:
    """The config files the LB's tree in `session` renders for each instance ({} for an
    LB being deleted): see `Provider.render`."""
    lb = session.get(LoadBalancer, lb_id)
    if lb is None or lb.provisioning_status == c.PENDING_DELETE:
        return {}
    spec = snapshot.build(session, lb_id, _keys(providers))
    return providers.get(lb.provider).render(session, spec, place=place)


def diff(
    sessions: sessionmaker[Session], providers: ProviderRegistry, lb_id: str
) -> dict[str, Any]:
    """What the instances have (their agents' files) against what the database renders."""
    session = sessions()
    try:
        lb = _lb(session, lb_id)
        provider = providers.get(lb.provider)
        desired = rendered(session, providers, lb_id)
    finally:
        session.rollback()  # rendering may hold addresses it would place: never kept
        session.close()
    running = provider.running(lb_id)
    return {
        "load_balancer_id": lb_id,
        "in_sync": all(running.get(k) == v for k, v in desired.items())
        and set(running) <= set(desired),
        "unreachable": sorted(k for k, v in running.items() if v is None),
        "diff": unified(running, desired),
    }
