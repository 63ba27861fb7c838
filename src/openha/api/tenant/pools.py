"""/v2/lbaas/pools: create, show, list, update and delete, as Octavia's v2 API.

A pool belongs to a load balancer; created with `listener_id` it also becomes
that listener's default pool. Exports for the fully populated LB create:
`PoolCreate` (parent ids optional at schema level), `add_pool` (validation and
insert, without `begin_change` or commit) and `serialize`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session, selectinload

from openha.api.context import RequestContext, get_context, get_session
from openha.api.errors import BadRequest, Conflict, NotFound
from openha.api.query import list_collection, requested_fields, select_fields
from openha.api.tenant import common
from openha.api.tenant.common import StrictModel, base_fields
from openha.api.tenant.listeners import (
    DEFAULT_TLS_CIPHERS,
    DEFAULT_TLS_VERSIONS,
    AlpnProtocol,
    ContainerRef,
    TlsCiphers,
    TlsVersion,
    check_pool_protocol,
    check_tls_lists,
    one_of,
    touch,
)
from openha.domain import constants as c
from openha.domain.grammar import FreeText, IPAddress, Tag, Token
from openha.models import L7Policy, L7Rule, Listener, LoadBalancer, Pool

router = APIRouter(prefix="/lbaas/pools", tags=["pools"])
LABEL = "Pool"

DEFAULT_POOL_ALPN = ("http/1.1", "http/1.0")
UDP_LIKE = ("UDP", "SCTP")

PoolProtocol = Annotated[str, one_of(c.POOL_PROTOCOLS)]
LbAlgorithm = Annotated[str, one_of(c.LB_ALGORITHMS)]
PersistenceType = Annotated[str, one_of(c.SESSION_PERSISTENCE_TYPES)]


class SessionPersistenceCreate(StrictModel):
    type: PersistenceType
    # A cookie name ends up in the HAProxy config: an HTTP token, nothing else.
    cookie_name: Token | None = None
    persistence_timeout: Annotated[int, Field(ge=0)] | None = None
    persistence_granularity: IPAddress | None = None


class SessionPersistenceUpdate(StrictModel):
    type: PersistenceType | None = None
    cookie_name: Token | None = None
    persistence_timeout: Annotated[int, Field(ge=0)] | None = None
    persistence_granularity: IPAddress | None = None


class PoolCreate(StrictModel):
    name: FreeText | None = None
    description: FreeText | None = None
    admin_state_up: bool = True
    # One of the two is required by the route; optional here for the fully populated create.
    listener_id: str | None = None
    loadbalancer_id: str | None = None
    protocol: PoolProtocol
    lb_algorithm: LbAlgorithm
    session_persistence: SessionPersistenceCreate | None = None
    # Accepted for compatibility (deprecated in Octavia): a pool takes its LB's project.
    project_id: str | None = None
    tags: list[Tag] | None = None
    tls_container_ref: ContainerRef | None = None
    ca_tls_container_ref: ContainerRef | None = None
    crl_container_ref: ContainerRef | None = None
    tls_enabled: bool | None = False
    tls_ciphers: TlsCiphers | None = None
    tls_versions: list[TlsVersion] | None = None
    alpn_protocols: list[AlpnProtocol] | None = None


class PoolCreateBody(StrictModel):
    pool: PoolCreate


class PoolUpdate(StrictModel):
    name: FreeText | None = None
    description: FreeText | None = None
    admin_state_up: bool | None = None
    lb_algorithm: LbAlgorithm | None = None
    session_persistence: SessionPersistenceUpdate | None = None
    tags: list[Tag] | None = None
    tls_container_ref: ContainerRef | None = None
    ca_tls_container_ref: ContainerRef | None = None
    crl_container_ref: ContainerRef | None = None
    tls_enabled: bool | None = None
    tls_ciphers: TlsCiphers | None = None
    tls_versions: list[TlsVersion] | None = None
    alpn_protocols: list[AlpnProtocol] | None = None


class PoolUpdateBody(StrictModel):
    pool: PoolUpdate


# --- serialization ------------------------------------------------------------------------


def listener_ids(session: Session, pool: Pool) -> list[str]:
    """Listeners using the pool: by default, or (as Octavia counts) through an enabled L7
    policy with rules that redirects to it."""
    ids = list(
        session.scalars(
            select(Listener.id)
            .where(Listener.default_pool_id == pool.id)
            .order_by(Listener.created_at, Listener.id)
        )
    )
    through_l7 = session.scalars(
        select(L7Policy.listener_id)
        .where(
            L7Policy.redirect_pool_id == pool.id,
            L7Policy.admin_state_up.is_(True),
            select(L7Rule.id).where(L7Rule.l7policy_id == L7Policy.id).exists(),
        )
        .order_by(L7Policy.created_at, L7Policy.id)
    )
    for lid in through_l7:
        if lid not in ids:
            ids.append(lid)
    return ids


def _persistence(sp: dict[str, Any] | None) -> dict[str, Any] | None:
    if not sp:
        return None
    keys = ("type", "cookie_name", "persistence_timeout", "persistence_granularity")
    return {k: sp.get(k) for k in keys}


def serialize(pool: Pool) -> dict[str, Any]:
    session = object_session(pool)
    assert session is not None, "serialize needs a pool attached to a session"
    hm = pool.health_monitor
    out = base_fields(pool)
    out.update(
        name=pool.name,
        description=pool.description,
        protocol=pool.protocol,
        lb_algorithm=pool.lb_algorithm,
        session_persistence=_persistence(pool.session_persistence),
        loadbalancers=[{"id": pool.load_balancer_id}],
        listeners=[{"id": lid} for lid in listener_ids(session, pool)],
        healthmonitor_id=hm.id if hm is not None else None,
        members=[{"id": m.id} for m in pool.members],
        tls_enabled=bool(pool.tls_enabled),
        tls_container_ref=pool.tls_container_ref,
        ca_tls_container_ref=pool.ca_tls_container_ref,
        crl_container_ref=pool.crl_container_ref,
        tls_ciphers=pool.tls_ciphers,
        tls_versions=list(pool.tls_versions) if pool.tls_versions is not None else None,
        alpn_protocols=list(pool.alpn_protocols) if pool.alpn_protocols is not None else None,
    )
    return out


# --- validation ---------------------------------------------------------------------------


def _check_persistence(pool: Pool) -> None:
    sp = pool.session_persistence
    if not sp:
        return
    sp_type = sp.get("type")
    cookie = sp.get("cookie_name")
    if pool.protocol in UDP_LIKE:
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
        if pool.protocol in UDP_LIKE:
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
    request: Request,
    session: Session,
    ctx: RequestContext,
    lb: LoadBalancer,
    body: PoolCreate,
    listener: Listener | None = None,
) -> Pool:
    """Validate and insert a pool on `lb`; with `listener`, it becomes its default pool.

    The caller has called begin_change for `lb` and resolved `listener` (on `lb`).
    """
    common.check_option(request, lb, "pool.protocol", body.protocol)
    sp = body.session_persistence.model_dump() if body.session_persistence else None
    pool = Pool(
        load_balancer_id=lb.id,
        project_id=lb.project_id,
        name=body.name or "",
        description=body.description or "",
        admin_state_up=body.admin_state_up,
        protocol=body.protocol,
        lb_algorithm=body.lb_algorithm,
        session_persistence=sp,
        tls_enabled=bool(body.tls_enabled),
        tls_container_ref=body.tls_container_ref,
        ca_tls_container_ref=body.ca_tls_container_ref,
        crl_container_ref=body.crl_container_ref,
        tls_ciphers=body.tls_ciphers,
        tls_versions=body.tls_versions,
        alpn_protocols=body.alpn_protocols,
        tags=list(body.tags or []),
        provisioning_status=c.PENDING_CREATE,
        operating_status=c.OFFLINE,
    )
    _validate(request, lb, pool)
    if listener is not None:
        if listener.load_balancer_id != lb.id:
            raise BadRequest(
                f"Validation failure: Listener {listener.id} is not on Load Balancer {lb.id}."
            )
        common.refuse_if_deleting(listener, "Listener")
        check_pool_protocol(listener.protocol, pool.protocol)
        if listener.default_pool_id:
            raise Conflict("This listener already has a default pool")
    common.check_quota(request, session, lb.project_id, "pool")
    session.add(pool)
    session.flush()
    if listener is not None:
        listener.default_pool_id = pool.id
        touch(listener)
        session.flush()
    return pool


# --- routes -------------------------------------------------------------------------------


def _options() -> list[Any]:
    return [selectinload(Pool.members), selectinload(Pool.health_monitor)]


def _load(session: Session, ctx: RequestContext, pool_id: str) -> Pool:
    return ctx.get(session, Pool, pool_id, LABEL)


@router.get("")
def list_pools(
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    stmt = ctx.visible(Pool).options(*_options())
    return list_collection(
        request,
        session,
        stmt,
        Pool,
        "pools",
        serialize,
        aliases={"loadbalancer_id": Pool.load_balancer_id},
    )


@router.get("/{pool_id}")
def show_pool(
    pool_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    pool = _load(session, ctx, pool_id)
    return {"pool": select_fields(serialize(pool), requested_fields(request))}


@router.post("", status_code=201)
def create_pool(
    payload: PoolCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    body = payload.pool
    listener = None
    if body.listener_id:
        found = session.scalar(ctx.visible(Listener).where(Listener.id == body.listener_id))
        if found is None:
            raise NotFound.resource("Listener", body.listener_id)
        listener = found
    if body.loadbalancer_id:
        lb_id = body.loadbalancer_id
    elif listener is not None:
        lb_id = listener.load_balancer_id
    else:
        raise BadRequest(
            "Validation failure: Must provide at least one of: loadbalancer_id, listener_id"
        )
    lb = common.begin_change(session, ctx, lb_id)
    pool = add_pool(request, session, ctx, lb, body, listener)
    session.commit()
    return {"pool": serialize(_load(session, ctx, pool.id))}


def affected_listeners(session: Session, pool: Pool) -> list[Listener]:
    ids = listener_ids(session, pool)
    if not ids:
        return []
    return list(session.scalars(select(Listener).where(Listener.id.in_(ids))))


@router.put("/{pool_id}")
def update_pool(
    pool_id: str,
    payload: PoolUpdateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    pool = _load(session, ctx, pool_id)
    lb = common.begin_change(session, ctx, pool.load_balancer_id)
    common.refuse_if_deleting(pool, LABEL)
    update = payload.pool
    changes = update.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key in ("admin_state_up", "lb_algorithm", "tags"):
            raise BadRequest(f"Invalid input for field/attribute {key}. Value: 'None'.")
        if key == "session_persistence":
            value = _merge_persistence(pool.session_persistence, update.session_persistence)
        elif value is None and key in ("name", "description"):
            value = ""
        elif value is None and key == "tls_enabled":
            value = False
        setattr(pool, key, value)
    _validate(request, lb, pool)
    touch(pool)
    for listener in affected_listeners(session, pool):
        touch(listener)
    session.commit()
    return {"pool": serialize(_load(session, ctx, pool_id))}


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


def mark_pool_deleted(session: Session, pool: Pool) -> list[Listener]:
    """The pool, its members and health monitor go; listeners using it by default lose it.

    Returns the listeners that lost their default pool (already marked updated)."""
    common.mark_deleted(pool)
    for member in pool.members:
        common.mark_deleted(member)
    if pool.health_monitor is not None:
        common.mark_deleted(pool.health_monitor)
    users = list(session.scalars(select(Listener).where(Listener.default_pool_id == pool.id)))
    for listener in users:
        listener.default_pool_id = None
        touch(listener)
    return users


@router.delete("/{pool_id}", status_code=204)
def delete_pool(
    pool_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> Response:
    pool = _load(session, ctx, pool_id)
    if pool.provisioning_status == c.PENDING_DELETE:
        return Response(status_code=204)
    common.begin_change(session, ctx, pool.load_balancer_id)
    policy = session.scalars(
        select(L7Policy)
        .where(
            L7Policy.redirect_pool_id == pool.id,
            L7Policy.provisioning_status != c.PENDING_DELETE,
        )
        .order_by(L7Policy.created_at)
    ).first()
    if policy is not None:
        raise Conflict(f"Pool {pool.id} is in use by L7 policy {policy.id}")
    mark_pool_deleted(session, pool)
    session.commit()
    return Response(status_code=204)
