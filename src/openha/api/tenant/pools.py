"""/v2/lbaas/pools, as Octavia's v2 API: create and update here, the rest from the table.

A pool belongs to a load balancer; created with `listener_id` it also becomes
that listener's default pool. Exports for the fully populated LB create:
`PoolCreate` (parent ids optional at schema level), `add_pool` (validation and
insert within a change) and `PoolView`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import AliasPath, Field, SerializerFunctionWrapHandler, model_serializer
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session, selectinload

from openha.api import certrefs, idempotency
from openha.api.context import RequestContext, get_context, get_session
from openha.api.errors import BadRequest, Conflict
from openha.api.resources import RelatedIds, Resource
from openha.api.tenant import changes, common
from openha.api.tenant.changes import POOL_REDIRECTS, POOL_USERS, Change
from openha.api.tenant.listeners import LISTENERS
from openha.api.types import (
    DEFAULT_POOL_ALPN,
    DEFAULT_TLS_CIPHERS,
    DEFAULT_TLS_VERSIONS,
    AlpnProtocol,
    ContainerRef,
    Int32,
    StrictModel,
    TlsCiphers,
    TlsVersion,
    check_pool_protocol,
    check_tls_lists,
    one_of,
    with_defaults,
)
from openha.api.views import NullIfEmpty, OneRef, Ref, TreeView, View
from openha.domain import constants as c
from openha.domain.grammar import FreeText, IPAddress, Tags, Token
from openha.models import HealthMonitor, L7Policy, L7Rule, Listener, LoadBalancer, Member, Pool

PoolProtocol = Annotated[str, one_of(c.POOL_PROTOCOLS)]
LbAlgorithm = Annotated[str, one_of(c.LB_ALGORITHMS)]
PersistenceType = Annotated[str, one_of(c.SESSION_PERSISTENCE_TYPES)]

# --- bodies -----------------------------------------------------------------------------


class SessionPersistenceUpdate(StrictModel):
    type: PersistenceType | None = None
    # A cookie name ends up in the HAProxy config: an HTTP token, nothing else.
    cookie_name: Token | None = None
    persistence_timeout: Annotated[Int32, Field(ge=0)] | None = None
    persistence_granularity: IPAddress | None = None


class SessionPersistenceCreate(SessionPersistenceUpdate):
    type: PersistenceType


class PoolUpdate(StrictModel):
    """The PUT body; a create may send every one of these too."""

    name: FreeText | None = None
    description: FreeText | None = None
    admin_state_up: bool | None = None
    lb_algorithm: LbAlgorithm | None = None
    session_persistence: SessionPersistenceUpdate | None = None
    tags: Tags | None = None
    tls_container_ref: ContainerRef | None = None
    ca_tls_container_ref: ContainerRef | None = None
    crl_container_ref: ContainerRef | None = None
    tls_enabled: bool | None = None
    tls_ciphers: TlsCiphers | None = None
    tls_versions: list[TlsVersion] | None = None
    alpn_protocols: list[AlpnProtocol] | None = None


class PoolCreate(PoolUpdate):
    protocol: PoolProtocol
    lb_algorithm: LbAlgorithm
    session_persistence: SessionPersistenceCreate | None = None
    admin_state_up: bool = True
    # One of the two is required by the route; optional here for the fully populated create.
    listener_id: str | None = None
    loadbalancer_id: str | None = None
    # Accepted for compatibility (deprecated in Octavia): a pool takes its LB's project.
    project_id: str | None = None


class PoolCreateBody(StrictModel):
    pool: PoolCreate


class PoolUpdateBody(StrictModel):
    pool: PoolUpdate


# Null means the column's default (`with_defaults`), except for these.
NOT_NULL = ("admin_state_up", "lb_algorithm", "tags")
# What a create body sets on the row (the graph create extends the body with children).
COLUMNS = set(PoolCreate.model_fields) - {"listener_id", "loadbalancer_id", "project_id"}


# --- the answer -------------------------------------------------------------------------


class SessionPersistenceView(View):
    type: str | None = None
    cookie_name: str | None = None
    persistence_timeout: int | None = None
    persistence_granularity: str | None = None


class PoolView(TreeView):
    name: str
    description: str
    protocol: str
    lb_algorithm: str
    session_persistence: Annotated[SessionPersistenceView | None, NullIfEmpty]
    loadbalancers: OneRef = Field(validation_alias="load_balancer_id")
    listeners: Sequence[Ref]
    healthmonitor_id: str | None = Field(None, validation_alias=AliasPath("health_monitor", "id"))
    members: Sequence[Ref]
    tls_enabled: bool
    tls_container_ref: str | None
    ca_tls_container_ref: str | None
    crl_container_ref: str | None
    tls_ciphers: str | None
    tls_versions: list[str] | None
    alpn_protocols: list[str] | None

    @model_serializer(mode="wrap")
    def _without_missing_monitor(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        # Octavia leaves the key out when the pool has no monitor (PoolResponse.from_db_obj).
        if "healthmonitor_id" in out and out["healthmonitor_id"] is None:
            del out["healthmonitor_id"]
        return out


def _refuse_if_redirected(change: Change, pool: Pool, request: Request) -> None:
    """A pool an L7 policy redirects to cannot go (Octavia)."""
    policy = change.session.scalars(
        select(L7Policy)
        .where(
            L7Policy.redirect_pool_id == pool.id,
            L7Policy.provisioning_status != c.PENDING_DELETE,
        )
        .order_by(L7Policy.created_at)
    ).first()
    if policy is not None:
        raise Conflict(f"Pool {pool.id} is in use by L7 policy {policy.id}")


def used_by_listeners(listener_ids: list[str]) -> ColumnElement[bool]:
    """Pools one of these listeners uses, as `Pool.listeners` counts: as its default
    pool, or through an enabled L7 policy with rules that redirects to it."""
    by_default = (
        select(Listener.id)
        .where(Listener.default_pool_id == Pool.id, Listener.id.in_(listener_ids))
        .exists()
    )
    has_rules = select(L7Rule.id).where(L7Rule.l7policy_id == L7Policy.id).exists()
    by_policy = (
        select(L7Policy.id)
        .where(
            L7Policy.redirect_pool_id == Pool.id,
            L7Policy.listener_id.in_(listener_ids),
            L7Policy.admin_state_up.is_(True),
            has_rules,
        )
        .exists()
    )
    return or_(by_default, by_policy)


POOLS: Resource[Pool] = Resource(
    model=Pool,
    path="/pools",
    singular="pool",
    plural="pools",
    label="Pool",
    view=PoolView,
    aliases={"loadbalancer_id": Pool.load_balancer_id},
    # Octavia 19 refuses it; openstacksdk sends it (Pool's query mapping), and it is
    # how an operator finds what a listener sends traffic to.
    filters={"listener_id": used_by_listeners},
    options=(selectinload(Pool.members), selectinload(Pool.health_monitor), *POOL_USERS),
    # Pool.listeners reads the default listeners (ids, here) and the redirecting policies.
    list_options=POOL_REDIRECTS,
    related_ids={
        "default_listeners": RelatedIds(
            Listener.default_pool_id, Listener.id, (Listener.created_at, Listener.id)
        ),
        "members": RelatedIds(Member.pool_id, Member.id, (Member.created_at,)),
        "health_monitor": RelatedIds(HealthMonitor.pool_id, HealthMonitor.id, one=True),
    },
    delete=changes.deleting(_refuse_if_redirected),
)
router = POOLS.router()


# --- validation ---------------------------------------------------------------------------


def _check_persistence(pool: Pool) -> None:
    sp = pool.session_persistence
    if not sp:
        return
    sp_type = sp.get("type")
    cookie = sp.get("cookie_name")
    if pool.protocol in c.LVS_PROTOCOLS:
        if sp_type != "SOURCE_IP":
            raise BadRequest(
                f"Validation failure: Session persistence of type {sp_type} is not supported "
                f"for {pool.protocol} protocol pools."
            )
        if cookie:
            raise BadRequest(
                f"Validation failure: Cookie names are not supported for {pool.protocol} pools."
            )
    elif sp.get("persistence_timeout") is not None or sp.get("persistence_granularity"):
        raise BadRequest(
            "Validation failure: persistence_timeout and persistence_granularity is only for "
            "UDP and SCTP protocol pools."
        )
    if cookie and sp_type != "APP_COOKIE":
        raise BadRequest(
            'Validation failure: Field "cookie_name" can only be specified with session '
            'persistence of type "APP_COOKIE".'
        )
    if sp_type == "APP_COOKIE" and not cookie:
        raise BadRequest(
            'Validation failure: Field "cookie_name" must be specified when using the '
            '"APP_COOKIE" session persistence type.'
        )


def _check_tls(pool: Pool) -> None:
    if pool.crl_container_ref and not pool.ca_tls_container_ref:
        raise BadRequest(
            "Validation failure: A CA certificate reference is required to specify a "
            "revocation list."
        )
    if pool.tls_enabled:
        if pool.protocol in c.LVS_PROTOCOLS:
            raise BadRequest(
                f"Validation failure: TLS is not supported for {pool.protocol} protocol pools."
            )
        check_tls_lists(pool.tls_versions, pool.alpn_protocols)
        # Octavia's [api_settings] defaults for pools speaking TLS to members.
        if pool.tls_ciphers is None:
            pool.tls_ciphers = DEFAULT_TLS_CIPHERS
        if pool.tls_versions is None:
            pool.tls_versions = list(DEFAULT_TLS_VERSIONS)
        if pool.alpn_protocols is None:
            pool.alpn_protocols = list(DEFAULT_POOL_ALPN)


def _validate(request: Request, lb: LoadBalancer, pool: Pool) -> None:
    common.check_option(request, lb, "pool.lb_algorithm", pool.lb_algorithm)
    _check_persistence(pool)
    _check_tls(pool)


def add_pool(
    request: Request, change: Change, body: PoolCreate, listener: Listener | None = None
) -> Pool:
    """Validate and insert a pool on the change's LB; with `listener` (on that LB), it
    becomes the listener's default pool."""
    lb = change.lb
    common.check_option(request, lb, "pool.protocol", body.protocol)
    values = body.model_dump(include=COLUMNS)
    pool = Pool(
        load_balancer_id=lb.id,
        project_id=lb.project_id,
        provisioning_status=c.PENDING_CREATE,
        operating_status=c.OFFLINE,
        **with_defaults(values, Pool),
    )
    _validate(request, lb, pool)
    certrefs.check_pool(request, change.session, change.ctx, pool)
    if listener is not None:
        if listener.load_balancer_id != lb.id:
            raise BadRequest(
                f"Validation failure: Listener {listener.id} is not on Load Balancer {lb.id}."
            )
        check_pool_protocol(listener.protocol, pool.protocol)
        if listener.default_pool_id:
            raise Conflict("This listener already has a default pool")
    common.check_quota(request, change.session, lb.project_id, "pool")
    change.session.add(pool)
    change.session.flush()
    if listener is not None:
        listener.default_pool_id = pool.id
    change.created(pool)
    return pool


# --- routes -------------------------------------------------------------------------------


@router.post("", status_code=201, response_model=None, responses=POOLS.answered(201))
def create_pool(
    payload: PoolCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> dict[str, Any]:
    body = payload.pool
    lb_id = body.loadbalancer_id
    if body.listener_id:
        lb_id = lb_id or changes.lb_of(session, ctx, LISTENERS, body.listener_id)
    if not lb_id:
        raise BadRequest(
            "Validation failure: Must provide at least one of: loadbalancer_id, listener_id"
        )
    change = changes.begin(session, ctx, lb_id)
    listener = change.load(LISTENERS, body.listener_id) if body.listener_id else None
    pool = add_pool(request, change, body, listener)
    session.flush()
    answer = POOLS.show(session, ctx, pool.id)
    idempotency.commit(session, keyed, answer)
    return answer


@router.put("/{pool_id}", response_model=None, responses=POOLS.answered(200))
def update_pool(
    pool_id: str,
    payload: PoolUpdateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    change, pool = changes.edit(session, ctx, POOLS, pool_id)
    update = payload.pool
    given = with_defaults(update.model_dump(exclude_unset=True), Pool, NOT_NULL)
    for key, value in given.items():
        if key == "session_persistence":
            value = _merge_persistence(pool.session_persistence, update.session_persistence)
        setattr(pool, key, value)
    _validate(request, change.lb, pool)
    certrefs.check_pool(request, session, ctx, pool)
    change.updated(pool)
    session.flush()
    answer = POOLS.show(session, ctx, pool_id)
    session.commit()
    return answer


def _merge_persistence(
    current: dict[str, Any] | None, given: SessionPersistenceUpdate | None
) -> dict[str, Any] | None:
    """Octavia's PUT: null removes persistence; otherwise the given object replaces the old
    one, except that a missing type keeps the current type."""
    if given is None:
        return None
    new = given.model_dump()
    if not new["type"]:
        new["type"] = (current or {}).get("type")
    if not new["type"]:
        raise BadRequest("Mandatory field missing: session_persistence.type.")
    return new
