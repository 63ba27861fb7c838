"""/v2/octavia/amphorae: Octavia's admin view of data planes, mapped onto OpenHA instances.

An amphora is an instance here: `compute_id` is the host, `vrrp_ip` the
instance's own address, `ha_ip` the VIP. Failover marks the instance and lets
the controller rebuild it (the VIP moves first for a pair).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from openha import events
from openha.api.context import RequestContext, get_admin_context, get_session
from openha.api.errors import Conflict, NotFound
from openha.api.query import list_collection, requested_fields, select_fields
from openha.api.tenant.common import iso
from openha.domain import constants as c
from openha.models import Host, Instance, LoadBalancer, VrrpRouterId, utcnow

router = APIRouter(prefix="/octavia/amphorae", tags=["amphorae"])

_STATUS = {
    "ALLOCATED": "ALLOCATED",
    "ACTIVE": "ALLOCATED",
    "ERROR": "ERROR",
    "PENDING_FAILOVER": "PENDING_UPDATE",
}


def serialize(inst: Instance, session: Session) -> dict[str, Any]:
    lb = session.get(LoadBalancer, inst.load_balancer_id)
    host = session.get(Host, inst.host_id) if inst.host_id else None
    vrid = session.scalar(
        select(VrrpRouterId.vrid).where(VrrpRouterId.load_balancer_id == inst.load_balancer_id)
    )
    health = inst.health or {}
    return {
        "id": inst.id,
        "loadbalancer_id": inst.load_balancer_id,
        "compute_id": inst.host_id,
        "compute_flavor": None,
        "image_id": None,
        "lb_network_ip": host.management_url if host else None,
        "vrrp_ip": inst.ip_address,
        "ha_ip": lb.vip_address if lb else None,
        "vrrp_port_id": inst.port_id,
        "ha_port_id": lb.vip_port_id if lb else None,
        "cert_expiration": None,
        "cert_busy": False,
        "role": inst.role if inst.role != c.ROLE_STANDALONE else "STANDALONE",
        "status": _STATUS.get(inst.status, inst.status),
        "vrrp_interface": "eth0" if vrid else None,
        "vrrp_id": vrid,
        "vrrp_priority": 100 if inst.role == c.ROLE_MASTER else (90 if vrid else None),
        "vrrp_state": health.get("vrrp_state"),
        "cached_zone": host.availability_zone if host else None,
        "created_at": iso(inst.created_at),
        "updated_at": iso(inst.updated_at),
    }


@router.get("")
def list_amphorae(
    request: Request,
    session: Session = Depends(get_session),
    _: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    aliases = {"loadbalancer_id": Instance.load_balancer_id, "compute_id": Instance.host_id}
    return list_collection(
        request,
        session,
        select(Instance),
        Instance,
        "amphorae",
        lambda i: serialize(i, session),
        aliases=aliases,
    )


def _get(session: Session, amphora_id: str) -> Instance:
    inst = session.get(Instance, amphora_id)
    if inst is None:
        raise NotFound.resource("Amphora", amphora_id)
    return inst


@router.get("/{amphora_id}")
def show_amphora(
    amphora_id: str,
    request: Request,
    session: Session = Depends(get_session),
    _: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    out = serialize(_get(session, amphora_id), session)
    return {"amphora": select_fields(out, requested_fields(request))}


@router.get("/{amphora_id}/stats")
def amphora_stats(
    amphora_id: str,
    session: Session = Depends(get_session),
    _: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    inst = _get(session, amphora_id)
    rows = []
    for listener_id, counters in ((inst.health or {}).get("listeners") or {}).items():
        rows.append(
            {
                "id": inst.id,
                "loadbalancer_id": inst.load_balancer_id,
                "listener_id": listener_id,
                **counters,
            }
        )
    return {"amphora_stats": rows}


@router.put("/{amphora_id}/failover", status_code=202)
def failover_amphora(
    amphora_id: str,
    session: Session = Depends(get_session),
    _: RequestContext = Depends(get_admin_context),
) -> Response:
    inst = _get(session, amphora_id)
    lb = session.scalar(
        select(LoadBalancer).where(LoadBalancer.id == inst.load_balancer_id).with_for_update()
    )
    assert lb is not None
    if lb.provisioning_status == c.PENDING_DELETE:
        raise Conflict(f"Load Balancer {lb.id} is being deleted.")
    inst.status = "PENDING_FAILOVER"
    inst.failover_requested_at = utcnow()
    lb.failover_requested = True
    lb.next_attempt_at = None
    events.emit(
        session,
        "instance.failover_requested",
        f"Failover of instance {inst.id} requested by an admin",
        lb=lb,
        instance_id=inst.id,
        host_id=inst.host_id,
    )
    session.commit()
    return Response(status_code=202)


@router.put("/{amphora_id}/config", status_code=202)
def configure_amphora(
    amphora_id: str,
    session: Session = Depends(get_session),
    _: RequestContext = Depends(get_admin_context),
) -> Response:
    """Re-push the instance's configuration (Octavia: refresh the amphora agent config)."""
    inst = _get(session, amphora_id)
    inst.applied_generation = 0  # the controller sees it lagging and pushes again
    session.commit()
    return Response(status_code=202)
