"""/v2/manage/hosts and /v2/manage/instances: where load balancers run, and how healthy.

A host's `capacity` is what the scheduler honours: the operator's setting when
there is one (`PUT ... {"host": {"capacity": N}}`, kept across the agent's
registrations; `null` gives the choice back), else what the agent reports from
the host's resources (`reported_capacity`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import AliasPath, Field
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, with_expression

from openha import events
from openha.api import idempotency
from openha.api.context import RequestContext, get_admin_context, get_session
from openha.api.errors import BadRequest, Conflict
from openha.api.manage import operations
from openha.api.resources import Resource
from openha.api.types import StrictModel
from openha.api.views import Timestamp, View
from openha.domain import constants as c
from openha.domain.capacity import MAX_CAPACITY
from openha.models import Host, Instance, LoadBalancer, Operation, utcnow


class HostView(View):
    id: str
    name: str
    availability_zone: str
    management_url: str
    capacity: int = Field(validation_alias="effective_capacity")
    capacity_override: int | None = Field(validation_alias="capacity")
    reported_capacity: int
    status: str
    admin_state: str
    last_heartbeat_at: Timestamp
    agent_version: str
    instance_count: int | None
    # The agent's log pipeline: per syslog collector what is queued, spooled and
    # dropped; per object store what is shipped and pending; the disk the files use.
    log_delivery: dict[str, Any] | None = Field(
        None, validation_alias=AliasPath("report", "log_delivery")
    )
    # Instances the agent runs that no load balancer wants, by id: their load balancer
    # and since when (removed after the host's grace period, `orphan_grace_seconds`).
    orphans: dict[str, Any] = Field(
        default_factory=dict, validation_alias=AliasPath("report", "orphans")
    )
    # Leftovers no instance directory on the host explains (namespaces, processes):
    # kind, name, why, pids, since when (removed after `stray_grace_seconds`).
    strays: list[dict[str, Any]] = Field(
        default_factory=list, validation_alias=AliasPath("report", "strays")
    )
    created_at: Timestamp
    updated_at: Timestamp


class InstanceView(View):
    id: str
    load_balancer_id: str
    host_id: str | None
    role: str
    status: str
    ip_address: str | None
    applied_generation: int
    last_error: str | None
    haproxy_running: bool | None = Field(
        None, validation_alias=AliasPath("health", "haproxy_running")
    )
    vrrp_state: str | None = Field(None, validation_alias=AliasPath("health", "vrrp_state"))
    created_at: Timestamp
    updated_at: Timestamp


class InstanceDetailView(InstanceView):
    health: dict[str, Any] | None


HOSTS: Resource[Host] = Resource(
    model=Host,
    path="/manage/hosts",
    unknown_filters="ignore",
    singular="host",
    plural="hosts",
    label="Host",
    view=HostView,
    scope=lambda ctx: select(Host),
    # A host is named by its id or its name.
    match=lambda ident: or_(Host.id == ident, Host.name == ident),
    aliases={"capacity": Host.effective_capacity},
    options=(
        with_expression(
            Host.instance_count,
            select(func.count(Instance.id)).where(Instance.host_id == Host.id).scalar_subquery(),
        ),
    ),
    reader=get_admin_context,
    writer=get_admin_context,
)
INSTANCES: Resource[Instance] = Resource(
    model=Instance,
    path="/manage/instances",
    unknown_filters="ignore",
    singular="instance",
    plural="instances",
    label="Instance",
    view=InstanceView,
    detail=InstanceDetailView,
    scope=lambda ctx: select(Instance),
    reader=get_admin_context,
)
hosts = HOSTS.router()


class HostUpdate(StrictModel):
    admin_state: str | None = None  # ENABLED | DISABLED: a disabled host gets no new instances
    # The operator's capacity; null gives it back to what the host's resources allow.
    capacity: int | None = Field(default=None, ge=0, le=MAX_CAPACITY)


class HostUpdateBody(StrictModel):
    host: HostUpdate


@hosts.put("/{host_id}")
def update_host(
    host_id: str,
    payload: HostUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    host = HOSTS.find(session, ctx, host_id)
    body = payload.host
    before = (host.admin_state, host.effective_capacity)
    capacity = host.effective_capacity
    if body.admin_state is not None:
        if body.admin_state not in c.HOST_ADMIN_STATES:
            raise BadRequest(f"admin_state must be {' or '.join(c.HOST_ADMIN_STATES)}.")
        if body.admin_state != host.admin_state:
            draining = body.admin_state == c.HOST_DISABLED
            events.emit(
                session,
                "host.draining" if draining else "host.enabled",
                f"Host {host.name} "
                + ("takes no new instances" if draining else "takes new instances again"),
                severity=c.SEVERITY_WARNING if draining else c.SEVERITY_INFO,
                host_id=host.id,
            )
        host.admin_state = body.admin_state
    if "capacity" in body.model_fields_set:
        if body.capacity is not None and body.capacity < 0:
            raise BadRequest("capacity must be zero or positive.")
        host.capacity = body.capacity
        capacity = body.capacity if body.capacity is not None else host.reported_capacity
    if host.admin_state == c.HOST_ENABLED and (before[0] != c.HOST_ENABLED or capacity > before[1]):
        _wake_failed_lbs(session)
    session.flush()
    answer = HOSTS.show(session, ctx, host.id)
    session.commit()
    return answer


def _wake_failed_lbs(session: Session) -> None:
    """Room appeared: LBs that failed for want of it should not sit out their backoff."""
    session.execute(
        update(LoadBalancer)
        .where(LoadBalancer.provisioning_status == c.ERROR)
        .values(next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )


@hosts.post("/{host_id}/drain", status_code=202)
def drain_host(
    host_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> JSONResponse:
    """The host takes no new instances; its LBs move away a few at a time (an operation)."""
    host = HOSTS.find(session, ctx, host_id)
    running = operations.open_operation(session, "drain", host.id)
    if running is not None:
        return operations.accepted(session, ctx, running, keyed)  # asked twice: the same drain
    host.admin_state = c.HOST_DRAINING
    op = operations.start(session, ctx, "drain", "host", host.id, {})
    return operations.accepted(session, ctx, op, keyed)


@hosts.post("/{host_id}/undrain")
def undrain_host(
    host_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> dict[str, Any]:
    """Back in service: a drain under way stops (migrations already started finish)."""
    host = HOSTS.find(session, ctx, host_id)
    host.admin_state = c.HOST_ENABLED
    session.execute(
        update(Operation)
        .where(
            Operation.kind == "drain",
            Operation.target_id == host.id,
            Operation.state.in_(c.OPERATION_OPEN),
        )
        .values(state=c.OPERATION_FAILED, error="cancelled by undrain", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    _wake_failed_lbs(session)
    session.flush()
    answer = HOSTS.show(session, ctx, host.id)
    idempotency.commit(session, keyed, answer)
    return answer


@hosts.delete("/{host_id}", status_code=204, response_class=Response)
def delete_host(
    host_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> Response:
    """Only an empty host goes (drain it first): nothing may point at a host that is gone."""
    host = HOSTS.find(session, ctx, host_id)
    count = session.scalar(select(func.count(Instance.id)).where(Instance.host_id == host.id))
    if count:
        raise Conflict(f"Host {host.name} runs {count} instance(s): drain it first.")
    session.execute(delete(Host).where(Host.id == host.id))
    session.commit()
    return Response(status_code=204)


router = APIRouter()
router.include_router(hosts)
router.include_router(INSTANCES.router())
