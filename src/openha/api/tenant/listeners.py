"""/v2/lbaas/listeners, as Octavia's v2 API: create and update here, the rest from the table.

Exports for the fully populated LB create: `ListenerCreate` (its `loadbalancer_id`
is optional at schema level and checked by the route), `add_listener` (validation
and insert within a change) and `ListenerView`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openha.api import certrefs, idempotency
from openha.api.context import RequestContext, get_context, get_session
from openha.api.errors import BadRequest, Conflict, NotFound, quote_input
from openha.api.resources import Resource
from openha.api.tenant import changes, common
from openha.api.tenant.changes import Change
from openha.api.types import (
    DEFAULT_LISTENER_ALPN,
    DEFAULT_TLS_CIPHERS,
    DEFAULT_TLS_VERSIONS,
    AlpnProtocol,
    ContainerRef,
    Int32,
    PortNumber,
    StrictModel,
    Timeout,
    TlsCiphers,
    TlsVersion,
    check_pool_protocol,
    check_tls_lists,
    one_of,
    with_defaults,
)
from openha.api.views import NullIfEmpty, OneRef, Ref, StringMap, Strings, TreeView
from openha.domain import constants as c
from openha.domain.grammar import Cidr, FreeText, Tags
from openha.models import Listener, ListenerStats, LoadBalancer, Pool

ListenerProtocol = Annotated[str, one_of(c.LISTENER_PROTOCOLS)]
ClientAuthentication = Annotated[str, one_of(c.CLIENT_AUTHENTICATION_MODES)]
CLIENT_AUTHENTICATION_NONE = c.CLIENT_AUTHENTICATION_MODES[0]

# --- bodies -----------------------------------------------------------------------------


class ListenerUpdate(StrictModel):
    """The PUT body; a create may send every one of these too."""

    name: FreeText | None = None
    description: FreeText | None = None
    admin_state_up: bool | None = None
    connection_limit: Annotated[Int32, Field(ge=-1)] | None = None
    default_tls_container_ref: ContainerRef | None = None
    sni_container_refs: list[ContainerRef] | None = None
    default_pool_id: str | None = None
    insert_headers: dict[str, Annotated[str, Field(max_length=255)]] | None = None
    timeout_client_data: Timeout | None = None
    timeout_member_connect: Timeout | None = None
    timeout_member_data: Timeout | None = None
    timeout_tcp_inspect: Timeout | None = None
    tags: Tags | None = None
    client_ca_tls_container_ref: ContainerRef | None = None
    client_authentication: ClientAuthentication | None = None
    client_crl_container_ref: ContainerRef | None = None
    allowed_cidrs: list[Cidr] | None = None
    tls_ciphers: TlsCiphers | None = None
    tls_versions: list[TlsVersion] | None = None
    alpn_protocols: list[AlpnProtocol] | None = None
    hsts_max_age: Annotated[Int32, Field(ge=0)] | None = None
    hsts_include_subdomains: bool | None = None
    hsts_preload: bool | None = None


class ListenerCreate(ListenerUpdate):
    protocol: ListenerProtocol
    protocol_port: PortNumber
    admin_state_up: bool = True
    # Required by the route; optional here so the fully populated create can reuse this.
    loadbalancer_id: str | None = None
    # Accepted for compatibility (deprecated in Octavia): a listener takes its LB's project.
    project_id: str | None = None


class ListenerCreateBody(StrictModel):
    listener: ListenerCreate


class ListenerUpdateBody(StrictModel):
    listener: ListenerUpdate


# Null means the column's default (`with_defaults`), except for these.
NOT_NULL = ("admin_state_up", "tags")
# What a create body sets on the row (the graph create extends the body with children).
COLUMNS = set(ListenerCreate.model_fields) - {"loadbalancer_id", "project_id"}


# --- the answer -------------------------------------------------------------------------


class ListenerView(TreeView):
    name: str
    description: str
    protocol: str
    protocol_port: int
    connection_limit: int
    default_tls_container_ref: str | None
    sni_container_refs: Strings
    default_pool_id: str | None
    l7policies: Sequence[Ref]
    insert_headers: StringMap
    loadbalancers: OneRef = Field(validation_alias="load_balancer_id")
    timeout_client_data: int
    timeout_member_connect: int
    timeout_member_data: int
    timeout_tcp_inspect: int
    client_ca_tls_container_ref: str | None
    client_authentication: str
    client_crl_container_ref: str | None
    # Octavia answers null, not [], when no CIDR restricts the listener.
    allowed_cidrs: Annotated[list[str] | None, NullIfEmpty]
    tls_ciphers: str | None
    tls_versions: list[str] | None
    alpn_protocols: list[str] | None
    hsts_max_age: int | None
    hsts_include_subdomains: bool
    hsts_preload: bool


LISTENERS: Resource[Listener] = Resource(
    model=Listener,
    path="/listeners",
    singular="listener",
    plural="listeners",
    label="Listener",
    view=ListenerView,
    aliases={"loadbalancer_id": Listener.load_balancer_id},
    options=(selectinload(Listener.l7policies),),
    delete=changes.deleting(),
)
router = LISTENERS.router()


# --- validation ---------------------------------------------------------------------------

L4_PROTOCOL = {
    "HTTP": "TCP",
    "HTTPS": "TCP",
    "TCP": "TCP",
    "TERMINATED_HTTPS": "TCP",
    "PROMETHEUS": "TCP",
    "UDP": "UDP",
    "SCTP": "SCTP",
}
HEADER_INSERTION_PROTOCOLS = ("HTTP", "TERMINATED_HTTPS", "PROMETHEUS")
HTTP_HEADERS = ("X-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Proto")
SSL_HEADERS = tuple(h for h in c.INSERT_HEADERS if h not in HTTP_HEADERS)
TLS = "TERMINATED_HTTPS"


def _check_insert_headers(headers: dict[str, str], protocol: str) -> None:
    if not headers:
        return
    if protocol not in HEADER_INSERTION_PROTOCOLS:
        raise BadRequest(
            f"insert-headers is not a valid option for a {protocol} protocol listener."
        )
    unknown = sorted(set(headers) - set(c.INSERT_HEADERS))
    if unknown:
        raise BadRequest(f"{unknown} is not a valid option for insert_headers")
    ssl = sorted(h for h in headers if h in SSL_HEADERS)
    if ssl and protocol != TLS:
        raise BadRequest(f"{ssl} is not a valid option for {protocol} protocol listener.")
    for key, value in headers.items():
        # The renderer only ever compares against these two words.
        if value.lower() not in ("true", "false"):
            raise BadRequest(
                f"Invalid input for field/attribute insert_headers. Value: '{quote_input(value)}'. "
                f"The value of {quote_input(key)} must be 'true' or 'false'."
            )


def _check_tls(listener: Listener) -> None:
    protocol = listener.protocol
    has_certs = bool(
        listener.default_tls_container_ref
        or listener.client_ca_tls_container_ref
        or listener.sni_container_refs
    )
    if protocol in c.LVS_PROTOCOLS and (has_certs or listener.insert_headers):
        raise BadRequest(f"Validation failure: {protocol} protocol listener does not support TLS.")
    if protocol != TLS and has_certs:
        raise BadRequest(
            "Validation failure: Certificate container references are only allowed on "
            f"{TLS} protocol listeners."
        )
    has_server_cert = bool(listener.default_tls_container_ref or listener.sni_container_refs)
    if listener.client_ca_tls_container_ref and not has_server_cert:
        raise BadRequest(
            "Validation failure: An SNI or default certificate container reference must be "
            "provided with a client CA container reference."
        )
    if protocol == TLS and not has_server_cert:
        raise BadRequest(
            "Validation failure: An SNI or default certificate container reference must be "
            f"provided for {TLS} protocol listeners."
        )
    if (
        listener.client_authentication != CLIENT_AUTHENTICATION_NONE
        and not listener.client_ca_tls_container_ref
    ):
        raise BadRequest(
            f"Validation failure: Client authentication setting "
            f"{listener.client_authentication} requires a client CA container reference."
        )
    if listener.client_crl_container_ref and not listener.client_ca_tls_container_ref:
        raise BadRequest(
            "Validation failure: A client authentication CA reference is required to specify "
            "a client authentication revocation list."
        )
    if protocol == TLS:
        check_tls_lists(listener.tls_versions, listener.alpn_protocols)
        # Octavia's defaults for TLS-terminating listeners; null resets to them.
        if listener.tls_ciphers is None:
            listener.tls_ciphers = DEFAULT_TLS_CIPHERS
        if listener.tls_versions is None:
            listener.tls_versions = list(DEFAULT_TLS_VERSIONS)
        if listener.alpn_protocols is None:
            listener.alpn_protocols = list(DEFAULT_LISTENER_ALPN)
    if (listener.hsts_include_subdomains or listener.hsts_preload) and (
        listener.hsts_max_age is None
    ):
        raise BadRequest(
            "Validation failure: HSTS configuration options hsts_include_subdomains and "
            "hsts_preload only make sense if hsts_max_age is set as well."
        )
    if listener.hsts_max_age is not None and protocol != TLS:
        raise BadRequest(
            "Validation failure: The HSTS feature can only be used for listeners using the "
            f"{TLS} protocol."
        )


def _check_cidrs(cidrs: list[str] | None, lb: LoadBalancer) -> None:
    if not cidrs or not lb.vip_address:
        return
    vip_version = ipaddress.ip_address(lb.vip_address).version
    for cidr in cidrs:
        if ipaddress.ip_network(cidr).version != vip_version:
            raise BadRequest(
                f"Validation failure: CIDR {cidr} IP version incompatible with VIP "
                f"{lb.vip_address} IP version."
            )


def _check_default_pool(session: Session, lb: LoadBalancer, listener: Listener) -> None:
    if not listener.default_pool_id:
        return
    pool = session.get(Pool, listener.default_pool_id)
    if pool is None or pool.load_balancer_id != lb.id:
        raise NotFound.resource("Pool", listener.default_pool_id)
    changes.refuse_if_deleting(pool, "Pool")
    check_pool_protocol(listener.protocol, pool.protocol)


def _take_port(change: Change, listener: Listener) -> None:
    """Listeners whose protocols share an L4 protocol cannot share a port on one LB; one
    being deleted gives its port to the new listener (`Change.replaced`)."""
    l4 = L4_PROTOCOL[listener.protocol]
    clashing = [p for p, proto in L4_PROTOCOL.items() if proto == l4]
    stmt = select(Listener).where(
        Listener.load_balancer_id == change.lb.id,
        Listener.protocol_port == listener.protocol_port,
        Listener.protocol.in_(clashing),
    )
    if listener.id is not None:
        stmt = stmt.where(Listener.id != listener.id)
    others = list(change.session.scalars(stmt))
    if any(other.provisioning_status != c.PENDING_DELETE for other in others):
        raise Conflict(
            "Another Listener on this Load Balancer is already using protocol_port "
            f"{listener.protocol_port}"
        )
    for other in others:
        change.replaced(other)


def _validate(session: Session, lb: LoadBalancer, listener: Listener) -> None:
    """Check the listener as it will be stored (a new one, or one with a PUT applied)."""
    _check_insert_headers(dict(listener.insert_headers or {}), listener.protocol)
    _check_tls(listener)
    _check_cidrs(listener.allowed_cidrs, lb)
    _check_default_pool(session, lb, listener)


def _dedup(values: list[str] | None) -> list[str] | None:
    return list(dict.fromkeys(values)) if values else values


def add_listener(request: Request, change: Change, body: ListenerCreate) -> Listener:
    """Validate and insert a listener on the change's load balancer."""
    lb = change.lb
    common.check_option(request, lb, "listener.protocol", body.protocol)
    values = with_defaults(body.model_dump(include=COLUMNS), Listener)
    listener = Listener(
        load_balancer_id=lb.id,
        project_id=lb.project_id,
        provisioning_status=c.PENDING_CREATE,
        operating_status=c.OFFLINE,
        **{
            **values,
            "sni_container_refs": _dedup(values["sni_container_refs"]) or [],
            "allowed_cidrs": _dedup(values["allowed_cidrs"]) or None,
        },
    )
    _validate(change.session, lb, listener)
    certrefs.check_listener(request, change.session, change.ctx, listener)
    _take_port(change, listener)
    common.check_quota(request, change.session, lb.project_id, "listener")
    change.session.add(listener)
    change.session.flush()
    change.created(listener)
    return listener


# --- routes -------------------------------------------------------------------------------


@router.post("", status_code=201, response_model=None, responses=LISTENERS.answered(201))
def create_listener(
    payload: ListenerCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> dict[str, Any]:
    body = payload.listener
    if not body.loadbalancer_id:
        raise BadRequest("Mandatory field missing: loadbalancer_id.")
    listener = add_listener(request, changes.begin(session, ctx, body.loadbalancer_id), body)
    session.flush()
    answer = LISTENERS.show(session, ctx, listener.id)
    idempotency.commit(session, keyed, answer)
    return answer


@router.put("/{listener_id}", response_model=None, responses=LISTENERS.answered(200))
def update_listener(
    listener_id: str,
    payload: ListenerUpdateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    change, listener = changes.edit(session, ctx, LISTENERS, listener_id)
    given = payload.listener.model_dump(exclude_unset=True)
    for key, value in with_defaults(given, Listener, NOT_NULL).items():
        if key in ("allowed_cidrs", "sni_container_refs"):
            value = _dedup(value) or (None if key == "allowed_cidrs" else [])
        setattr(listener, key, value)
    _validate(session, change.lb, listener)
    certrefs.check_listener(request, session, ctx, listener)
    change.updated(listener)
    session.flush()
    answer = LISTENERS.show(session, ctx, listener_id)
    session.commit()
    return answer


STATS = ("bytes_in", "bytes_out", "active_connections", "total_connections", "request_errors")


@router.get("/{listener_id}/stats")
def listener_stats(
    listener_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    listener = LISTENERS.find(session, ctx, listener_id)
    row = session.get(ListenerStats, listener.id)
    return {"stats": {k: int(getattr(row, k) or 0) if row is not None else 0 for k in STATS}}
