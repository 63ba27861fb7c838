"""/v2/manage/hosts and /v2/manage/instances: where load balancers run, and how healthy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openha.api.context import RequestContext, get_admin_context, get_session
from openha.api.errors import NotFound
from openha.api.query import list_collection, requested_fields, select_fields
from openha.api.tenant.common import StrictModel, iso
from openha.models import Host, Instance

router = APIRouter(prefix="/manage", tags=["manage"])


def serialize_host(host: Host, instance_count: int | None = None) -> dict[str, Any]:
    return {
        "id": host.id,
        "name": host.name,
        "availability_zone": host.availability_zone,
        "management_url": host.management_url,
        "capacity": host.capacity,
        "status": host.status,
        "admin_state": host.admin_state,
        "last_heartbeat_at": iso(host.last_heartbeat_at),
        "agent_version": host.agent_version,
        "instance_count": instance_count,
        "created_at": iso(host.created_at),
        "updated_at": iso(host.updated_at),
    }


def serialize_instance(inst: Instance) -> dict[str, Any]:
    health = inst.health or {}
    return {
        "id": inst.id,
        "load_balancer_id": inst.load_balancer_id,
        "host_id": inst.host_id,
        "role": inst.role,
        "status": inst.status,
        "ip_address": inst.ip_address,
        "applied_generation": inst.applied_generation,
        "last_error": inst.last_error,
        "haproxy_running": health.get("haproxy_running"),
        "vrrp_state": health.get("vrrp_state"),
        "created_at": iso(inst.created_at),
        "updated_at": iso(inst.updated_at),
    }


def _counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Instance.host_id, func.count()).group_by(Instance.host_id))
    return {host_id: n for host_id, n in rows if host_id}


@router.get("/hosts")
def list_hosts(
    request: Request,
    session: Session = Depends(get_session),
    _: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    counts = _counts(session)
    return list_collection(
        request,
        session,
        select(Host),
        Host,
        "hosts",
        lambda h: serialize_host(h, counts.get(h.id, 0)),
    )


@router.get("/hosts/{host_id}")
def show_host(
    host_id: str,
    request: Request,
    session: Session = Depends(get_session),
    _: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    host = session.get(Host, host_id) or session.scalar(select(Host).where(Host.name == host_id))
    if host is None:
        raise NotFound.resource("Host", host_id)
    out = serialize_host(host, _counts(session).get(host.id, 0))
    return {"host": select_fields(out, requested_fields(request))}


class HostUpdate(StrictModel):
    admin_state: str | None = None  # ENABLED | DISABLED: a disabled host gets no new instances
    capacity: int | None = None


class HostUpdateBody(StrictModel):
    host: HostUpdate


@router.put("/hosts/{host_id}")
def update_host(
    host_id: str,
    payload: HostUpdateBody,
    session: Session = Depends(get_session),
    _: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    from openha.api.errors import BadRequest

    host = session.get(Host, host_id)
    if host is None:
        raise NotFound.resource("Host", host_id)
    body = payload.host
    if body.admin_state is not None:
        if body.admin_state not in ("ENABLED", "DISABLED"):
            raise BadRequest("admin_state must be ENABLED or DISABLED.")
        host.admin_state = body.admin_state
    if body.capacity is not None:
        if body.capacity < 0:
            raise BadRequest("capacity must be zero or positive.")
        host.capacity = body.capacity
    session.commit()
    return {"host": serialize_host(host, _counts(session).get(host.id, 0))}


@router.get("/instances")
def list_instances(
    request: Request,
    session: Session = Depends(get_session),
    _: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    return list_collection(
        request, session, select(Instance), Instance, "instances", serialize_instance
    )


@router.get("/instances/{instance_id}")
def show_instance(
    instance_id: str,
    request: Request,
    session: Session = Depends(get_session),
    _: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    inst = session.get(Instance, instance_id)
    if inst is None:
        raise NotFound.resource("Instance", instance_id)
    out = serialize_instance(inst)
    out["health"] = inst.health
    return {"instance": select_fields(out, requested_fields(request))}
