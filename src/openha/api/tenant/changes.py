"""The one way to change a load balancer's tree.

Every write to the tree (the LB, its listeners, pools, members, health monitors,
L7 policies and rules) goes through a `Change`, in the request's transaction:

1. Lock the load balancer row first (SELECT ... FOR UPDATE; on SQLite the
   transaction's BEGIN IMMEDIATE already serializes writers), so concurrent
   writers and the controller queue on that one row instead of deadlocking.
2. Only then read what the change acts on, fresh: what this session read before
   is expired, so a delete committed by the writer ahead in the queue is seen.
   An object gone is a 404, one being deleted refuses changes (409), and a
   delete of one already on its way out does nothing. A new object that takes the
   place of one being deleted (its port, its address, its pool's monitor) is
   accepted: the old one gives way (`Change.replaced`; members simply coexist).
3. Bump the LB's desired generation, mark it PENDING_UPDATE (a new LB stays
   PENDING_CREATE) and reset its backoff: the controller applies the newest
   tree at once. Changes made while the LB is pending are merged into the next
   apply: there is no 409 "immutable" here.
4. Mark what the change touches, as Octavia does: the object and the parents
   whose configuration holds it (member or health monitor -> pool -> listeners
   using the pool; pool -> listeners using it; L7 rule -> policy -> listener;
   L7 policy -> listener). A delete marks the object's subtree PENDING_DELETE
   (LB -> everything; listener -> L7 policies -> rules; pool -> members and
   health monitor, and listeners lose it as their default pool).

Only the controller settles statuses afterwards (ACTIVE, ERROR, rows removed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fastapi import Request
from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session, selectinload

from openha.api import dryrun
from openha.api.context import RequestContext
from openha.api.errors import Conflict, NotFound
from openha.api.resources import Deleter, Kind, Resource
from openha.domain import constants as c
from openha.models import (
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    ListenerStats,
    LoadBalancer,
    Member,
    Pool,
    Provisioned,
)

Row = TypeVar("Row", bound=Provisioned)
LB_LABEL = "Load Balancer"

# What `Pool.listeners` reads: eager loads for views, and a fresh read for changes.
POOL_REDIRECTS = (
    selectinload(Pool.redirect_policies).selectinload(L7Policy.rules),
    selectinload(Pool.redirect_policies).selectinload(L7Policy.listener),
)
POOL_USERS = (selectinload(Pool.default_listeners), *POOL_REDIRECTS)


def lock(session: Session, ctx: RequestContext, lb_id: str) -> LoadBalancer:
    """Lock the LB row for this transaction (404 when the caller cannot see it).

    Everything the session read before is expired: it is read again, after the lock.
    """
    session.expire_all()
    lb: LoadBalancer | None = session.scalar(
        ctx.visible(LoadBalancer).where(LoadBalancer.id == lb_id).with_for_update()
    )
    if lb is None:
        ctx.refuse_foreign(session, LoadBalancer, LoadBalancer.id == lb_id)
        raise NotFound.resource(LB_LABEL, lb_id)
    return lb


def refuse_if_deleting(obj: Provisioned, label: str) -> None:
    if obj.provisioning_status == c.PENDING_DELETE:
        raise Conflict(f"{label} {obj.id} is being deleted.")


def lb_of(
    session: Session, ctx: RequestContext, kind: Kind[Any], ident: str, parent_id: str | None = None
) -> str:
    """The id of the load balancer holding `ident` (404s as its show answers)."""
    model: Any = kind.model
    column = LoadBalancer.id if model is LoadBalancer else model.load_balancer_id
    lb_id = session.scalar(kind.query(session, ctx, ident, parent_id).with_only_columns(column))
    if lb_id is None:
        raise kind.missing_error(session, ctx, ident)
    return str(lb_id)


class Change:
    """One write to one load balancer's tree; its LB row is locked (see module docstring)."""

    def __init__(
        self, session: Session, ctx: RequestContext, lb: LoadBalancer, *, new: bool = False
    ) -> None:
        self.session = session
        self.ctx = ctx
        self.lb = lb
        self._parents_of: dict[tuple[type, str], list[Provisioned]] = {}
        dryrun.noted(session, lb.id, new=new)  # `?dry_run=true`: what it rendered before
        if new:
            # Nobody sees a new LB before the commit; its first generation is pending already.
            return
        refuse_if_deleting(lb, LB_LABEL)
        lb.desired_generation += 1
        if lb.provisioning_status != c.PENDING_CREATE:
            lb.provisioning_status = c.PENDING_UPDATE
        self._retry_now()

    def load(self, kind: Kind[Row], ident: str, parent_id: str | None = None) -> Row:
        """An object the change acts on, read now; refused (409) when it is being deleted."""
        obj = kind.find(self.session, self.ctx, ident, parent_id, fresh=True)
        refuse_if_deleting(obj, kind.label)
        return obj

    # --- what the change did ------------------------------------------------------------

    def created(self, obj: Provisioned) -> None:
        """`obj` is new (PENDING_CREATE): its parents change with it."""
        self._touch(*self._parents(obj))

    def updated(self, obj: Provisioned) -> None:
        self._touch(obj, *self._parents(obj))

    def restored(self, obj: Provisioned) -> None:
        """`obj` stays after all, even if it was on its way out (a batch lists it again)."""
        if obj.provisioning_status == c.PENDING_DELETE:
            obj.provisioning_status = c.PENDING_UPDATE
        self.updated(obj)

    def deleted(self, obj: Provisioned) -> None:
        parents = self._parents(obj)
        for row in self._subtree(obj):
            row.provisioning_status = c.PENDING_DELETE
        if isinstance(obj, Pool):
            users = select(Listener).where(Listener.default_pool_id == obj.id)
            for listener in self.session.scalars(users):
                listener.default_pool_id = None
        self._touch(*parents)

    def replaced(self, obj: Provisioned) -> None:
        """`obj`, on its way out (PENDING_DELETE), gives way now to a new object taking its
        place: a listener on its port, a pool's new health monitor. Octavia refuses the
        newcomer only because a pending load balancer is immutable, which this one is not
        (the merge, as for a member re-added while its deletion is pending). The rows of
        its subtree go at once: the next apply renders the newcomer and not the old one,
        exactly as it would have once the old one was purged."""
        assert obj.provisioning_status == c.PENDING_DELETE
        session = self.session
        rows = list(self._subtree(obj))
        session.flush()  # the change so far is kept through the expiry below
        if isinstance(obj, Listener):
            session.execute(
                delete(ListenerStats)
                .where(ListenerStats.listener_id == obj.id)
                .execution_options(synchronize_session=False)
            )
        for row in reversed(rows):  # children first
            session.delete(row)
        session.flush()
        # Relationships loaded before (a pool's monitor, an LB's listeners) read anew.
        session.expire_all()

    def request_failover(self) -> None:
        """The controller rebuilds the LB's instances (a pair moves its VIP first)."""
        self.lb.failover_requested = True
        self._retry_now()

    # --- the tree -----------------------------------------------------------------------

    def _retry_now(self) -> None:
        # A fresh change deserves an immediate attempt, whatever the backoff said.
        self.lb.attempts = 0
        self.lb.next_attempt_at = None

    @staticmethod
    def _touch(*objs: Provisioned) -> None:
        for obj in objs:
            if obj.provisioning_status not in (c.PENDING_CREATE, c.PENDING_DELETE):
                obj.provisioning_status = c.PENDING_UPDATE

    def _parents(self, obj: Provisioned) -> list[Provisioned]:
        key = (type(obj), obj.id)
        if key not in self._parents_of:
            self._parents_of[key] = self._find_parents(obj)
        return self._parents_of[key]

    def _find_parents(self, obj: Provisioned) -> list[Provisioned]:
        s = self.session
        parent: Provisioned | None
        if isinstance(obj, Member | HealthMonitor):
            parent = s.get(Pool, obj.pool_id)
        elif isinstance(obj, L7Rule):
            parent = s.get(L7Policy, obj.l7policy_id)
        elif isinstance(obj, L7Policy):
            parent = s.get(Listener, obj.listener_id)
        elif isinstance(obj, Pool):
            s.flush()  # the listeners' default pools as this change set them
            fresh = s.scalars(
                select(Pool)
                .where(Pool.id == obj.id)
                .options(*POOL_USERS)
                .execution_options(populate_existing=True)
            ).one()
            return list(fresh.listeners)
        else:
            return []  # listeners and the LB itself: the LB is marked by the bump
        return [parent, *self._parents(parent)] if parent is not None else []

    def _children(self, obj: Provisioned) -> list[Provisioned]:
        s = self.session
        if isinstance(obj, LoadBalancer):
            return [
                *s.scalars(select(Listener).where(Listener.load_balancer_id == obj.id)),
                *s.scalars(select(Pool).where(Pool.load_balancer_id == obj.id)),
            ]
        if isinstance(obj, Listener):
            return list(s.scalars(select(L7Policy).where(L7Policy.listener_id == obj.id)))
        if isinstance(obj, L7Policy):
            return list(s.scalars(select(L7Rule).where(L7Rule.l7policy_id == obj.id)))
        if isinstance(obj, Pool):
            return [
                *s.scalars(select(Member).where(Member.pool_id == obj.id)),
                *s.scalars(select(HealthMonitor).where(HealthMonitor.pool_id == obj.id)),
            ]
        return []

    def _subtree(self, obj: Provisioned) -> Iterator[Provisioned]:
        yield obj
        for child in self._children(obj):
            yield from self._subtree(child)


# --- entry points -----------------------------------------------------------------------


def begin(session: Session, ctx: RequestContext, lb_id: str) -> Change:
    """A change of the LB `lb_id` or of what it holds (a new listener, a new pool)."""
    return Change(session, ctx, lock(session, ctx, lb_id))


def edit(
    session: Session, ctx: RequestContext, kind: Kind[Row], ident: str, parent_id: str | None = None
) -> tuple[Change, Row]:
    """A change of the existing object `ident` (or of what it holds): lock its LB, then
    read it fresh; 404 when it is gone, 409 when it is being deleted."""
    change = Change(session, ctx, lock(session, ctx, lb_of(session, ctx, kind, ident, parent_id)))
    return change, change.load(kind, ident, parent_id)


def reapply(session: Session, which: ColumnElement[bool]) -> None:
    """Push the LBs matching `which` again though their trees did not change (a subnet's
    gateway moved): a new generation, tried at once; statuses stay as they are."""
    session.execute(
        update(LoadBalancer)
        .where(which, LoadBalancer.provisioning_status != c.PENDING_DELETE)
        .values(
            desired_generation=LoadBalancer.desired_generation + 1, next_attempt_at=None, attempts=0
        )
        .execution_options(synchronize_session=False)
    )


def deleting(before: Callable[[Change, Any, Request], None] | None = None) -> Deleter:
    """The delete rule of tree objects: idempotent, and `before` may refuse (or add to) it."""

    def delete(
        resource: Resource[Any], request: Request, session: Session, ctx: RequestContext, ident: str
    ) -> None:
        parent_id = resource.parent_id(request)
        lb = lock(session, ctx, lb_of(session, ctx, resource, ident, parent_id))
        obj = resource.find(session, ctx, ident, parent_id, fresh=True)
        if obj.provisioning_status == c.PENDING_DELETE:
            return  # already on its way out
        change = Change(session, ctx, lb)
        if before is not None:
            before(change, obj, request)
        change.deleted(obj)

    return delete
