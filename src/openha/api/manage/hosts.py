"""/v2/manage/hosts and /v2/manage/instances: where load balancers run, and how healthy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import AliasPath, Field
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, with_expression

from openha.api.context import RequestContext, get_admin_context, get_session
from openha.api.errors import BadRequest
from openha.api.resources import Resource
from openha.api.types import StrictModel
from openha.api.views import Timestamp, View
from openha.domain import constants as c
from openha.models import Host, Instance


class HostView(View):
    id: str
    name: str
    availability_zone: str
    management_url: str
    capacity: int
    status: str
    admin_state: str
    last_heartbeat_at: Timestamp
    agent_version: str
    instance_count: int | None
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
    capacity: int | None = None


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
    if body.admin_state is not None:
        if body.admin_state not in c.HOST_ADMIN_STATES:
            raise BadRequest(f"admin_state must be {' or '.join(c.HOST_ADMIN_STATES)}.")
        host.admin_state = body.admin_state
    if body.capacity is not None:
        if body.capacity < 0:
            raise BadRequest("capacity must be zero or positive.")
        host.capacity = body.capacity
    session.flush()
    answer = HOSTS.show(session, ctx, host.id)
    session.commit()
    return answer


router = APIRouter()
router.include_router(hosts)
router.include_router(INSTANCES.router())
