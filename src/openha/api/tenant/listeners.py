"""/v2/lbaas/listeners: create, show, list, update, delete and stats, as Octavia's v2 API.

Besides the routes, this module exports what the fully populated LB create
builds on: `ListenerCreate` (its `loadbalancer_id` is optional at schema level
and checked by the route), `add_listener` (validation and insert, without
`begin_change` or commit) and `serialize`. It also holds the TLS value types
that pools share (`TlsCiphers`, `TlsVersion`, `AlpnProtocol`, `ContainerRef`)
and `one_of`, the enum validator used by every resource of the tree.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import AfterValidator, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openha.api.context import RequestContext, get_context, get_session
from openha.api.errors import BadRequest, Conflict, NotFound
from openha.api.query import list_collection, requested_fields, select_fields
from openha.api.tenant import common
from openha.api.tenant.common import StrictModel, base_fields
from openha.domain import constants as c
from openha.domain.grammar import Cidr, FreeText, Tag
from openha.models import L7Policy, L7Rule, Listener, ListenerStats, LoadBalancer, Pool

router = APIRouter(prefix="/lbaas/listeners", tags=["listeners"])
LABEL = "Listener"

# --- shared value types -----------------------------------------------------------------


def one_of(values: Iterable[Any]) -> AfterValidator:
    """An enum check with Octavia's wording, usable in Annotated[...] for any field."""
    allowed = tuple(values)

    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"Value should be one of: {', '.join(str(v) for v in allowed)}")
        return value

    return AfterValidator(check)


# OpenSSL cipher strings: names joined by ':' with the list operators (!, +, -, @=).
_CIPHERS = re.compile(r"^[A-Za-z0-9_\-+!@=.:,]+$")
_CONTAINER_REF = re.compile(r"^[\x21-\x7e]+$")


def _check_ciphers(value: str) -> str:
    if not _CIPHERS.match(value):
        raise ValueError("must be an OpenSSL cipher string (letters, digits and _-+!@=.:,)")
    return value


def _check_container_ref(value: str) -> str:
    if not _CONTAINER_REF.match(value):
        raise ValueError("must be printable ASCII without spaces")
    return value


ALPN_PROTOCOLS = ("http/1.0", "http/1.1", "h2")
# Octavia's [api_settings] defaults for TLS-terminating listeners and TLS pools.
DEFAULT_TLS_CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256"
)
DEFAULT_TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
DEFAULT_LISTENER_ALPN = ("h2", "http/1.1", "http/1.0")

ContainerRef = Annotated[
    str, Field(min_length=1, max_length=255), AfterValidator(_check_container_ref)
]
TlsCiphers = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_check_ciphers)]
TlsVersion = Annotated[str, one_of(c.TLS_VERSIONS)]
AlpnProtocol = Annotated[str, one_of(ALPN_PROTOCOLS)]
Port = Annotated[int, Field(ge=c.MIN_PORT, le=c.MAX_PORT)]
ListenerTimeout = Annotated[int, Field(ge=0, le=c.MAX_TIMEOUT)]


def check_tls_lists(versions: list[str] | None, alpn: list[str] | None) -> None:
    """Octavia's check_tls_version_list / check_alpn_protocols: an empty list is a mistake."""
    if versions is not None and not versions:
        raise BadRequest(
            "Validation failure: Empty TLS version list. Either specify at least one TLS "
            "version or remove this parameter to use the default."
        )
    if alpn is not None and not alpn:
        raise BadRequest(
            "Validation failure: Empty ALPN protocol list. Either specify at least one ALPN "
            "protocol or remove this parameter to use the default."
        )


def check_pool_protocol(listener_protocol: str, pool_protocol: str) -> None:
    """A listener only forwards to pools whose protocol it can speak to."""
    if pool_protocol not in c.LISTENER_POOL_PROTOCOL_MAP.get(listener_protocol, ()):
        raise BadRequest(
            f"Validation failure: The pool protocol '{pool_protocol}' is invalid while the "
            f"listener protocol is '{listener_protocol}'."
        )


def touch(obj: Any) -> None:
    """mark_updated, except for objects already on their way out."""
    if obj is not None and obj.provisioning_status != c.PENDING_DELETE:
        common.mark_updated(obj)


# --- bodies -----------------------------------------------------------------------------

ListenerProtocol = Annotated[str, one_of(c.LISTENER_PROTOCOLS)]
ClientAuthentication = Annotated[str, one_of(c.CLIENT_AUTHENTICATION_MODES)]


class ListenerCreate(StrictModel):
    name: FreeText | None = None
    description: FreeText | None = None
    admin_state_up: bool = True
    protocol: ListenerProtocol
    protocol_port: Port
    connection_limit: Annotated[int, Field(ge=-1)] | None = -1
    default_tls_container_ref: ContainerRef | None = None
    sni_container_refs: list[ContainerRef] | None = None
    # Accepted for compatibility (deprecated in Octavia): a listener takes its LB's project.
    project_id: str | None = None
    default_pool_id: str | None = None
    insert_headers: dict[str, Annotated[str, Field(max_length=255)]] | None = None
    # Required by the route; optional here so the fully populated create can reuse this.
    loadbalancer_id: str | None = None
    timeout_client_data: ListenerTimeout | None = None
    timeout_member_connect: ListenerTimeout | None = None
    timeout_member_data: ListenerTimeout | None = None
    timeout_tcp_inspect: ListenerTimeout | None = None
    tags: list[Tag] | None = None
    client_ca_tls_container_ref: ContainerRef | None = None
    client_authentication: ClientAuthentication | None = c.CLIENT_AUTHENTICATION_MODES[0]
    client_crl_container_ref: ContainerRef | None = None
    allowed_cidrs: list[Cidr] | None = None
    tls_ciphers: TlsCiphers | None = None
    tls_versions: list[TlsVersion] | None = None
    alpn_protocols: list[AlpnProtocol] | None = None
    hsts_max_age: Annotated[int, Field(ge=0)] | None = None
    hsts_include_subdomains: bool | None = False
    hsts_preload: bool | None = False


class ListenerCreateBody(StrictModel):
    listener: ListenerCreate


class ListenerUpdate(StrictModel):
    name: FreeText | None = None
    description: FreeText | None = None
    admin_state_up: bool | None = None
    connection_limit: Annotated[int, Field(ge=-1)] | None = None
    default_tls_container_ref: ContainerRef | None = None
    sni_container_refs: list[ContainerRef] | None = None
    default_pool_id: str | None = None
    insert_headers: dict[str, Annotated[str, Field(max_length=255)]] | None = None
    timeout_client_data: ListenerTimeout | None = None
    timeout_member_connect: ListenerTimeout | None = None
    timeout_member_data: ListenerTimeout | None = None
    timeout_tcp_inspect: ListenerTimeout | None = None
    tags: list[Tag] | None = None
    client_ca_tls_container_ref: ContainerRef | None = None
    client_authentication: ClientAuthentication | None = None
    client_crl_container_ref: ContainerRef | None = None
    allowed_cidrs: list[Cidr] | None = None
    tls_ciphers: TlsCiphers | None = None
    tls_versions: list[TlsVersion] | None = None
    alpn_protocols: list[AlpnProtocol] | None = None
    hsts_max_age: Annotated[int, Field(ge=0)] | None = None
    hsts_include_subdomains: bool | None = None
    hsts_preload: bool | None = None


class ListenerUpdateBody(StrictModel):
    listener: ListenerUpdate


# --- serialization ------------------------------------------------------------------------


def serialize(listener: Listener) -> dict[str, Any]:
    out = base_fields(listener)
    out.update(
        name=listener.name,
        description=listener.description,
        protocol=listener.protocol,
        protocol_port=listener.protocol_port,
        connection_limit=listener.connection_limit,
        default_tls_container_ref=listener.default_tls_container_ref,
        sni_container_refs=list(listener.sni_container_refs or []),
        default_pool_id=listener.default_pool_id,
        l7policies=[{"id": p.id} for p in listener.l7policies],
        insert_headers=dict(listener.insert_headers or {}),
        loadbalancers=[{"id": listener.load_balancer_id}],
        timeout_client_data=listener.timeout_client_data,
        timeout_member_connect=listener.timeout_member_connect,
        timeout_member_data=listener.timeout_member_data,
        timeout_tcp_inspect=listener.timeout_tcp_inspect,
        client_ca_tls_container_ref=listener.client_ca_tls_container_ref,
        client_authentication=listener.client_authentication,
        client_crl_container_ref=listener.client_crl_container_ref,
        # Octavia answers null, not [], when no CIDR restricts the listener.
        allowed_cidrs=list(listener.allowed_cidrs) if listener.allowed_cidrs else None,
        tls_ciphers=listener.tls_ciphers,
        tls_versions=list(listener.tls_versions) if listener.tls_versions is not None else None,
        alpn_protocols=(
            list(listener.alpn_protocols) if listener.alpn_protocols is not None else None
        ),
        hsts_max_age=listener.hsts_max_age,
        hsts_include_subdomains=bool(listener.hsts_include_subdomains),
        hsts_preload=bool(listener.hsts_preload),
    )
    return out


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
                f"Invalid input for field/attribute insert_headers. Value: '{value}'. "
                f"The value of {key} must be 'true' or 'false'."
            )


def _check_tls(listener: Listener) -> None:
    protocol = listener.protocol
    has_certs = bool(
        listener.default_tls_container_ref
        or listener.client_ca_tls_container_ref
        or listener.sni_container_refs
    )
    if protocol in ("UDP", "SCTP") and (has_certs or listener.insert_headers):
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
    if listener.client_authentication != "NONE" and not listener.client_ca_tls_container_ref:
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
    common.refuse_if_deleting(pool, "Pool")
    check_pool_protocol(listener.protocol, pool.protocol)


def _check_port_free(session: Session, lb: LoadBalancer, listener: Listener) -> None:
    """Listeners whose protocols share an L4 protocol cannot share a port on one LB."""
    l4 = L4_PROTOCOL[listener.protocol]
    clashing = [p for p, proto in L4_PROTOCOL.items() if proto == l4]
    stmt = select(Listener).where(
        Listener.load_balancer_id == lb.id,
        Listener.protocol_port == listener.protocol_port,
        Listener.protocol.in_(clashing),
    )
    if listener.id is not None:
        stmt = stmt.where(Listener.id != listener.id)
    other = session.scalars(stmt).first()
    if other is not None:
        raise Conflict(
            "Another Listener on this Load Balancer is already using protocol_port "
            f"{listener.protocol_port}"
        )


def _validate(session: Session, lb: LoadBalancer, listener: Listener) -> None:
    """Check the listener as it will be stored (a new one, or one with a PUT applied)."""
    _check_insert_headers(dict(listener.insert_headers or {}), listener.protocol)
    _check_tls(listener)
    _check_cidrs(listener.allowed_cidrs, lb)
    _check_default_pool(session, lb, listener)


def _dedup(values: list[str] | None) -> list[str] | None:
    return list(dict.fromkeys(values)) if values else values


def add_listener(
    request: Request,
    session: Session,
    ctx: RequestContext,
    lb: LoadBalancer,
    body: ListenerCreate,
) -> Listener:
    """Validate and insert a listener on `lb` (the caller has called begin_change)."""
    common.check_option(request, lb, "listener.protocol", body.protocol)
    listener = Listener(
        load_balancer_id=lb.id,
        project_id=lb.project_id,
        name=body.name or "",
        description=body.description or "",
        admin_state_up=body.admin_state_up,
        protocol=body.protocol,
        protocol_port=body.protocol_port,
        connection_limit=-1 if body.connection_limit is None else body.connection_limit,
        default_pool_id=body.default_pool_id,
        default_tls_container_ref=body.default_tls_container_ref,
        sni_container_refs=_dedup(body.sni_container_refs) or [],
        client_ca_tls_container_ref=body.client_ca_tls_container_ref,
        client_authentication=body.client_authentication or "NONE",
        client_crl_container_ref=body.client_crl_container_ref,
        insert_headers=dict(body.insert_headers or {}),
        timeout_client_data=_or(body.timeout_client_data, c.DEFAULT_TIMEOUT_CLIENT_DATA),
        timeout_member_connect=_or(body.timeout_member_connect, c.DEFAULT_TIMEOUT_MEMBER_CONNECT),
        timeout_member_data=_or(body.timeout_member_data, c.DEFAULT_TIMEOUT_MEMBER_DATA),
        timeout_tcp_inspect=_or(body.timeout_tcp_inspect, c.DEFAULT_TIMEOUT_TCP_INSPECT),
        allowed_cidrs=_dedup(body.allowed_cidrs) or None,
        tls_ciphers=body.tls_ciphers,
        tls_versions=body.tls_versions,
        alpn_protocols=body.alpn_protocols,
        hsts_max_age=body.hsts_max_age,
        hsts_include_subdomains=bool(body.hsts_include_subdomains),
        hsts_preload=bool(body.hsts_preload),
        tags=list(body.tags or []),
        provisioning_status=c.PENDING_CREATE,
        operating_status=c.OFFLINE,
    )
    _validate(session, lb, listener)
    _check_port_free(session, lb, listener)
    common.check_quota(request, session, lb.project_id, "listener")
    session.add(listener)
    session.flush()
    return listener


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


# --- routes -------------------------------------------------------------------------------


def _load(session: Session, ctx: RequestContext, listener_id: str) -> Listener:
    return ctx.get(session, Listener, listener_id, LABEL)


@router.get("")
def list_listeners(
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    stmt = ctx.visible(Listener).options(selectinload(Listener.l7policies))
    return list_collection(
        request,
        session,
        stmt,
        Listener,
        "listeners",
        serialize,
        aliases={"loadbalancer_id": Listener.load_balancer_id},
    )


@router.get("/{listener_id}")
def show_listener(
    listener_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    listener = _load(session, ctx, listener_id)
    return {"listener": select_fields(serialize(listener), requested_fields(request))}


@router.post("", status_code=201)
def create_listener(
    payload: ListenerCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    body = payload.listener
    if not body.loadbalancer_id:
        raise BadRequest("Mandatory field missing: loadbalancer_id.")
    lb = common.begin_change(session, ctx, body.loadbalancer_id)
    listener = add_listener(request, session, ctx, lb, body)
    session.commit()
    return {"listener": serialize(_load(session, ctx, listener.id))}


# PUT null resets these to their defaults, as in Octavia's _set_default_on_none.
_RESET: dict[str, Any] = {
    "name": "",
    "description": "",
    "connection_limit": -1,
    "timeout_client_data": c.DEFAULT_TIMEOUT_CLIENT_DATA,
    "timeout_member_connect": c.DEFAULT_TIMEOUT_MEMBER_CONNECT,
    "timeout_member_data": c.DEFAULT_TIMEOUT_MEMBER_DATA,
    "timeout_tcp_inspect": c.DEFAULT_TIMEOUT_TCP_INSPECT,
    "client_authentication": "NONE",
    "insert_headers": {},
    "sni_container_refs": [],
    "hsts_include_subdomains": False,
    "hsts_preload": False,
}
_NOT_NULL = ("admin_state_up", "tags")


@router.put("/{listener_id}")
def update_listener(
    listener_id: str,
    payload: ListenerUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    listener = _load(session, ctx, listener_id)
    lb = common.begin_change(session, ctx, listener.load_balancer_id)
    common.refuse_if_deleting(listener, LABEL)
    changes = payload.listener.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key in _NOT_NULL:
            raise BadRequest(f"Invalid input for field/attribute {key}. Value: 'None'.")
        if value is None:
            value = _RESET.get(key)
        if key in ("allowed_cidrs", "sni_container_refs"):
            value = _dedup(value) or (None if key == "allowed_cidrs" else [])
        setattr(listener, key, value)
    _validate(session, lb, listener)
    touch(listener)
    session.commit()
    return {"listener": serialize(_load(session, ctx, listener_id))}


def mark_listener_deleted(session: Session, listener: Listener) -> None:
    """The listener and its L7 policies and rules go; its pools stay with the LB."""
    common.mark_deleted(listener)
    for policy in session.scalars(select(L7Policy).where(L7Policy.listener_id == listener.id)):
        common.mark_deleted(policy)
        for rule in session.scalars(select(L7Rule).where(L7Rule.l7policy_id == policy.id)):
            common.mark_deleted(rule)


@router.delete("/{listener_id}", status_code=204)
def delete_listener(
    listener_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> Response:
    listener = _load(session, ctx, listener_id)
    if listener.provisioning_status == c.PENDING_DELETE:
        return Response(status_code=204)
    common.begin_change(session, ctx, listener.load_balancer_id)
    mark_listener_deleted(session, listener)
    session.commit()
    return Response(status_code=204)


@router.get("/{listener_id}/stats")
def listener_stats(
    listener_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    listener = _load(session, ctx, listener_id)
    row = session.get(ListenerStats, listener.id)
    keys = ("bytes_in", "bytes_out", "active_connections", "total_connections", "request_errors")
    return {"stats": {k: int(getattr(row, k) or 0) if row is not None else 0 for k in keys}}
