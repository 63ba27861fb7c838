"""/v2/lbaas/healthmonitors: create, show, list, update and delete, as Octavia's v2 API.

One health monitor per pool. Exports for the fully populated LB create:
`HealthMonitorCreate` (`pool_id` optional at schema level, checked by the
route), `add_healthmonitor` (validation and insert, without `begin_change` or
commit) and `serialize`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from openha.api.context import RequestContext, get_context, get_session
from openha.api.errors import BadRequest, Conflict, NotFound
from openha.api.query import list_collection, requested_fields, select_fields
from openha.api.tenant import common
from openha.api.tenant.common import StrictModel, base_fields
from openha.api.tenant.listeners import one_of, touch
from openha.api.tenant.pools import affected_listeners
from openha.domain import constants as c
from openha.domain.grammar import ExpectedCodes, FreeText, HostName, Tag, UrlPath
from openha.models import HealthMonitor, LoadBalancer, Pool

router = APIRouter(prefix="/lbaas/healthmonitors", tags=["healthmonitors"])
LABEL = "Health Monitor"

HTTP_TYPES = ("HTTP", "HTTPS")
UDP_LIKE = ("UDP", "SCTP")
# Pools speaking UDP or SCTP can only be checked these ways (Octavia).
UDP_POOL_TYPES = ("UDP-CONNECT", "SCTP", "TCP", "HTTP")
# Octavia's [api_settings] udp_connect_min_interval_health_monitor default.
UDP_CONNECT_MIN_DELAY = 3
# Seconds. Octavia sets no ceiling; HAProxy's timers overflow past ~24 days, and a day
# between checks is already no health check at all.
MAX_HM_SECONDS = 86400
HTTP_ONLY_FIELDS = ("http_method", "url_path", "expected_codes", "http_version", "domain_name")

HmType = Annotated[str, one_of(c.HEALTH_MONITOR_TYPES)]
HttpMethod = Annotated[str, one_of(c.HTTP_METHODS)]
HttpVersion = Annotated[float, one_of(c.HTTP_VERSIONS)]
# Octavia accepts 0; the renderer writes it safely (HAProxy refuses `inter 0`).
Seconds = Annotated[int, Field(ge=0, le=MAX_HM_SECONDS)]
Retries = Annotated[int, Field(ge=c.MIN_HM_RETRIES, le=c.MAX_HM_RETRIES)]


class HealthMonitorCreate(StrictModel):
    name: FreeText | None = None
    type: HmType
    delay: Seconds
    timeout: Seconds
    max_retries_down: Retries | None = c.DEFAULT_MAX_RETRIES_DOWN
    max_retries: Retries
    http_method: HttpMethod | None = None
    url_path: UrlPath | None = None
    expected_codes: ExpectedCodes | None = None
    admin_state_up: bool = True
    # Accepted for compatibility (deprecated in Octavia): a monitor takes its LB's project.
    project_id: str | None = None
    # Required by the route; optional here so the fully populated create can reuse this.
    pool_id: str | None = None
    tags: list[Tag] | None = None
    http_version: HttpVersion | None = None
    domain_name: Annotated[HostName, Field(min_length=1)] | None = None


class HealthMonitorCreateBody(StrictModel):
    healthmonitor: HealthMonitorCreate


class HealthMonitorUpdate(StrictModel):
    name: FreeText | None = None
    delay: Seconds | None = None
    timeout: Seconds | None = None
    max_retries_down: Retries | None = None
    max_retries: Retries | None = None
    http_method: HttpMethod | None = None
    url_path: UrlPath | None = None
    expected_codes: ExpectedCodes | None = None
    admin_state_up: bool | None = None
    tags: list[Tag] | None = None
    http_version: HttpVersion | None = None
    domain_name: Annotated[HostName, Field(min_length=1)] | None = None


class HealthMonitorUpdateBody(StrictModel):
    healthmonitor: HealthMonitorUpdate


def serialize(hm: HealthMonitor) -> dict[str, Any]:
    out = base_fields(hm)
    out.update(
        name=hm.name,
        type=hm.type,
        delay=hm.delay,
        timeout=hm.timeout,
        max_retries=hm.max_retries,
        max_retries_down=hm.max_retries_down,
        http_method=hm.http_method,
        url_path=hm.url_path,
        expected_codes=hm.expected_codes,
        http_version=hm.http_version,
        domain_name=hm.domain_name,
        pools=[{"id": hm.pool_id}],
    )
    return out


# --- validation ---------------------------------------------------------------------------


def _check_type_for_pool(hm_type: str, delay: int, pool: Pool) -> None:
    if pool.protocol in UDP_LIKE:
        if hm_type not in UDP_POOL_TYPES:
            raise BadRequest(
                f"Validation failure: The associated pool protocol is {pool.protocol}, so only "
                f"a {'/'.join(UDP_POOL_TYPES)} health monitor is supported."
            )
    elif hm_type in ("UDP-CONNECT", "SCTP"):
        raise BadRequest(
            f"Validation failure: The {hm_type} type is only supported for pools of type "
            f"{'/'.join(UDP_LIKE)}."
        )
    if hm_type == "UDP-CONNECT" and delay < UDP_CONNECT_MIN_DELAY:
        raise BadRequest(
            f"Validation failure: The request delay value {delay} should be larger than "
            f"{UDP_CONNECT_MIN_DELAY} for UDP-CONNECT health monitor type."
        )


def _check_http_fields(hm: HealthMonitor) -> None:
    """HTTP options only for HTTP(S) monitors, where they default to GET / 200."""
    if hm.type not in HTTP_TYPES:
        for field in HTTP_ONLY_FIELDS:
            if getattr(hm, field) is not None:
                raise BadRequest(
                    f"{field} is not a valid option for health monitors of type {hm.type}"
                )
        return
    if not hm.http_method:
        hm.http_method = c.DEFAULT_HTTP_METHOD
    if not hm.url_path:
        hm.url_path = c.DEFAULT_URL_PATH
    if not hm.expected_codes:
        hm.expected_codes = c.DEFAULT_EXPECTED_CODES
    if hm.domain_name and not hm.http_version:
        raise BadRequest(
            "Validation failure: 'http_version' must be specified when 'domain_name' is provided."
        )
    if hm.domain_name and hm.http_version is not None and hm.http_version < 1.1:
        raise BadRequest(
            f"http_version {hm.http_version} is not a valid option for health monitors HTTP "
            "1.1 domain name health check"
        )


def add_healthmonitor(
    request: Request,
    session: Session,
    ctx: RequestContext,
    pool: Pool,
    body: HealthMonitorCreate,
) -> HealthMonitor:
    """Validate and insert `pool`'s health monitor (the caller has called begin_change)."""
    common.refuse_if_deleting(pool, "Pool")
    lb = session.get(LoadBalancer, pool.load_balancer_id)
    assert lb is not None
    common.check_option(request, lb, "healthmonitor.type", body.type)
    _check_type_for_pool(body.type, body.delay, pool)
    hm = HealthMonitor(
        pool_id=pool.id,
        load_balancer_id=pool.load_balancer_id,
        project_id=pool.project_id,
        name=body.name or "",
        admin_state_up=body.admin_state_up,
        type=body.type,
        delay=body.delay,
        timeout=body.timeout,
        max_retries=body.max_retries,
        max_retries_down=(
            c.DEFAULT_MAX_RETRIES_DOWN if body.max_retries_down is None else body.max_retries_down
        ),
        http_method=body.http_method,
        url_path=body.url_path,
        expected_codes=body.expected_codes,
        http_version=body.http_version,
        domain_name=body.domain_name,
        tags=list(body.tags or []),
        provisioning_status=c.PENDING_CREATE,
        operating_status=c.OFFLINE,
    )
    _check_http_fields(hm)
    existing = session.scalar(select(HealthMonitor).where(HealthMonitor.pool_id == pool.id))
    if existing is not None:
        raise Conflict("This pool already has a health monitor")
    common.check_quota(request, session, pool.project_id, "health_monitor")
    session.add(hm)
    session.flush()
    return hm


def _touch_parents(session: Session, pool: Pool) -> None:
    touch(pool)
    for listener in affected_listeners(session, pool):
        touch(listener)


# --- routes -------------------------------------------------------------------------------


def _load(session: Session, ctx: RequestContext, hm_id: str) -> HealthMonitor:
    return ctx.get(session, HealthMonitor, hm_id, LABEL)


@router.get("")
def list_healthmonitors(
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    return list_collection(
        request,
        session,
        ctx.visible(HealthMonitor),
        HealthMonitor,
        "healthmonitors",
        serialize,
        aliases={"loadbalancer_id": HealthMonitor.load_balancer_id},
    )


@router.get("/{hm_id}")
def show_healthmonitor(
    hm_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    hm = _load(session, ctx, hm_id)
    return {"healthmonitor": select_fields(serialize(hm), requested_fields(request))}


@router.post("", status_code=201)
def create_healthmonitor(
    payload: HealthMonitorCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    body = payload.healthmonitor
    if not body.pool_id:
        raise BadRequest("Mandatory field missing: pool_id.")
    pool = session.scalar(ctx.visible(Pool).where(Pool.id == body.pool_id))
    if pool is None:
        raise NotFound.resource("Pool", body.pool_id)
    common.begin_change(session, ctx, pool.load_balancer_id)
    hm = add_healthmonitor(request, session, ctx, pool, body)
    _touch_parents(session, pool)
    session.commit()
    return {"healthmonitor": serialize(_load(session, ctx, hm.id))}


_RESET: dict[str, Any] = {
    "name": "",
    "max_retries_down": c.DEFAULT_MAX_RETRIES_DOWN,
}
_NOT_NULL = ("delay", "timeout", "max_retries", "admin_state_up", "tags")


@router.put("/{hm_id}")
def update_healthmonitor(
    hm_id: str,
    payload: HealthMonitorUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    hm = _load(session, ctx, hm_id)
    pool = session.get(Pool, hm.pool_id)
    assert pool is not None
    common.begin_change(session, ctx, hm.load_balancer_id)
    common.refuse_if_deleting(hm, LABEL)
    changes = payload.healthmonitor.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key in _NOT_NULL:
            raise BadRequest(f"None is not a valid option for {key}")
        # null on an HTTP option resets it to its default (filled in by _check_http_fields).
        setattr(hm, key, _RESET.get(key) if value is None else value)
    _check_type_for_pool(hm.type, hm.delay, pool)
    _check_http_fields(hm)
    touch(hm)
    _touch_parents(session, pool)
    session.commit()
    return {"healthmonitor": serialize(_load(session, ctx, hm_id))}


@router.delete("/{hm_id}", status_code=204)
def delete_healthmonitor(
    hm_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> Response:
    hm = _load(session, ctx, hm_id)
    if hm.provisioning_status == c.PENDING_DELETE:
        return Response(status_code=204)
    common.begin_change(session, ctx, hm.load_balancer_id)
    common.mark_deleted(hm)
    pool = session.get(Pool, hm.pool_id)
    if pool is not None:
        _touch_parents(session, pool)
    session.commit()
    return Response(status_code=204)
