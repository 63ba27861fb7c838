"""/v2/lbaas/healthmonitors, as Octavia's v2 API: create and update here, the rest from the
table.

One health monitor per pool. Exports for the fully populated LB create:
`HealthMonitorCreate` (`pool_id` optional at schema level, checked by the route),
`add_healthmonitor` (validation and insert within a change) and `HealthMonitorView`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from openha.api import idempotency
from openha.api.context import RequestContext, get_context, get_session
from openha.api.errors import BadRequest, Conflict
from openha.api.resources import Resource
from openha.api.tenant import changes, common
from openha.api.tenant.changes import Change
from openha.api.tenant.pools import POOLS
from openha.api.types import StrictModel, one_of, with_defaults
from openha.api.views import OneRef, TreeView
from openha.domain import constants as c
from openha.domain.grammar import ExpectedCodes, FreeText, HostName, Tags, UrlPath
from openha.models import HealthMonitor, Pool

HTTP_TYPES = ("HTTP", "HTTPS")
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

# --- bodies -----------------------------------------------------------------------------


class HealthMonitorUpdate(StrictModel):
    """The PUT body; a create may send every one of these too."""

    name: FreeText | None = None
    delay: Seconds | None = None
    timeout: Seconds | None = None
    max_retries_down: Retries | None = None
    max_retries: Retries | None = None
    http_method: HttpMethod | None = None
    url_path: UrlPath | None = None
    expected_codes: ExpectedCodes | None = None
    admin_state_up: bool | None = None
    tags: Tags | None = None
    http_version: HttpVersion | None = None
    domain_name: Annotated[HostName, Field(min_length=1)] | None = None


class HealthMonitorCreate(HealthMonitorUpdate):
    type: HmType
    delay: Seconds
    timeout: Seconds
    max_retries: Retries
    admin_state_up: bool = True
    # Required by the route; optional here so the fully populated create can reuse this.
    pool_id: str | None = None
    # Accepted for compatibility (deprecated in Octavia): a monitor takes its LB's project.
    project_id: str | None = None


class HealthMonitorCreateBody(StrictModel):
    healthmonitor: HealthMonitorCreate


class HealthMonitorUpdateBody(StrictModel):
    healthmonitor: HealthMonitorUpdate


# Null means the column's default (`with_defaults`): for an HTTP option, its default
# for the monitor's type (filled in by _check_http_fields). These take no null.
NOT_NULL = ("delay", "timeout", "max_retries", "admin_state_up", "tags")


# --- the answer -------------------------------------------------------------------------


class HealthMonitorView(TreeView):
    name: str
    type: str
    delay: int
    timeout: int
    max_retries: int
    max_retries_down: int
    http_method: str | None
    url_path: str | None
    expected_codes: str | None
    http_version: float | None
    domain_name: str | None
    pools: OneRef = Field(validation_alias="pool_id")


HEALTH_MONITORS: Resource[HealthMonitor] = Resource(
    model=HealthMonitor,
    path="/healthmonitors",
    singular="healthmonitor",
    plural="healthmonitors",
    label="Health Monitor",
    view=HealthMonitorView,
    aliases={"loadbalancer_id": HealthMonitor.load_balancer_id},
    delete=changes.deleting(),
)
router = HEALTH_MONITORS.router()


# --- validation ---------------------------------------------------------------------------


def _check_type_for_pool(hm_type: str, delay: int, pool: Pool) -> None:
    if pool.protocol in c.LVS_PROTOCOLS:
        if hm_type not in UDP_POOL_TYPES:
            raise BadRequest(
                f"Validation failure: The associated pool protocol is {pool.protocol}, so only "
                f"a {'/'.join(UDP_POOL_TYPES)} health monitor is supported."
            )
    elif hm_type in ("UDP-CONNECT", "SCTP"):
        raise BadRequest(
            f"Validation failure: The {hm_type} type is only supported for pools of type "
            f"{'/'.join(c.LVS_PROTOCOLS)}."
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
    request: Request, change: Change, pool: Pool, body: HealthMonitorCreate
) -> HealthMonitor:
    """Validate and insert `pool`'s health monitor (`pool` is on the change's LB)."""
    common.check_option(request, change.lb, "healthmonitor.type", body.type)
    _check_type_for_pool(body.type, body.delay, pool)
    values = body.model_dump(exclude={"pool_id", "project_id"})
    hm = HealthMonitor(
        pool_id=pool.id,
        load_balancer_id=pool.load_balancer_id,
        project_id=pool.project_id,
        provisioning_status=c.PENDING_CREATE,
        operating_status=c.OFFLINE,
        **with_defaults(values, HealthMonitor),
    )
    _check_http_fields(hm)
    session = change.session
    existing = session.scalar(select(HealthMonitor).where(HealthMonitor.pool_id == pool.id))
    if existing is not None:
        if existing.provisioning_status != c.PENDING_DELETE:
            raise Conflict("This pool already has a health monitor")
        change.replaced(existing)  # the monitor being deleted gives way to this one
    common.check_quota(request, session, pool.project_id, "health_monitor")
    session.add(hm)
    session.flush()
    change.created(hm)
    return hm


# --- routes -------------------------------------------------------------------------------


@router.post("", status_code=201, response_model=None, responses=HEALTH_MONITORS.answered(201))
def create_healthmonitor(
    payload: HealthMonitorCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> dict[str, Any]:
    body = payload.healthmonitor
    if not body.pool_id:
        raise BadRequest("Mandatory field missing: pool_id.")
    change, pool = changes.edit(session, ctx, POOLS, body.pool_id)
    hm = add_healthmonitor(request, change, pool, body)
    session.flush()
    answer = HEALTH_MONITORS.show(session, ctx, hm.id)
    idempotency.commit(session, keyed, answer)
    return answer


@router.put("/{hm_id}", response_model=None, responses=HEALTH_MONITORS.answered(200))
def update_healthmonitor(
    hm_id: str,
    payload: HealthMonitorUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    change, hm = changes.edit(session, ctx, HEALTH_MONITORS, hm_id)
    given = payload.healthmonitor.model_dump(exclude_unset=True)
    refusal = "None is not a valid option for {key}"
    for key, value in with_defaults(given, HealthMonitor, NOT_NULL, refusal).items():
        setattr(hm, key, value)
    pool = session.get(Pool, hm.pool_id)
    assert pool is not None
    _check_type_for_pool(hm.type, hm.delay, pool)
    _check_http_fields(hm)
    change.updated(hm)
    session.flush()
    answer = HEALTH_MONITORS.show(session, ctx, hm_id)
    session.commit()
    return answer
