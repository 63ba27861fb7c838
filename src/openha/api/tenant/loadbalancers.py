"""/v2/lbaas/loadbalancers: create (also fully populated), show, list, update, delete,
stats, status tree and the admin failover."""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openha import events, ipam
from openha.api.context import RequestContext, get_admin_context, get_context, get_session
from openha.api.errors import BadRequest, NotFound
from openha.api.query import list_collection, requested_fields, select_fields
from openha.api.tenant import common
from openha.api.tenant.common import StrictModel, base_fields
from openha.domain import constants as c
from openha.domain.grammar import FreeText, IPAddress, Tag
from openha.models import (
    AvailabilityZone,
    AvailabilityZoneProfile,
    Flavor,
    FlavorProfile,
    ListenerStats,
    LoadBalancer,
    Network,
    Pool,
    Port,
    Subnet,
)

router = APIRouter(prefix="/lbaas/loadbalancers", tags=["loadbalancers"])
LABEL = "Load Balancer"


class LoadBalancerCreate(StrictModel):
    name: FreeText | None = None
    description: FreeText | None = None
    admin_state_up: bool = True
    vip_address: IPAddress | None = None
    vip_port_id: str | None = None
    vip_subnet_id: str | None = None
    vip_network_id: str | None = None
    vip_qos_policy_id: str | None = None
    vip_sg_ids: list[str] | None = None
    vip_vnic_type: str | None = None
    additional_vips: list[dict[str, Any]] | None = None
    project_id: str | None = None
    tenant_id: str | None = None
    provider: str | None = None
    flavor_id: str | None = None
    availability_zone: str | None = None
    tags: list[Tag] = Field(default_factory=list)
    # Fully populated create: validated by the graph module against its own schemas.
    listeners: list[dict[str, Any]] | None = None
    pools: list[dict[str, Any]] | None = None


class LoadBalancerCreateBody(StrictModel):
    loadbalancer: LoadBalancerCreate


class LoadBalancerUpdate(StrictModel):
    name: FreeText | None = None
    description: FreeText | None = None
    admin_state_up: bool | None = None
    vip_qos_policy_id: str | None = None
    tags: list[Tag] | None = None


class LoadBalancerUpdateBody(StrictModel):
    loadbalancer: LoadBalancerUpdate


def serialize(lb: LoadBalancer) -> dict[str, Any]:
    out = base_fields(lb)
    out.update(
        name=lb.name,
        description=lb.description,
        vip_address=lb.vip_address,
        vip_port_id=lb.vip_port_id,
        vip_subnet_id=lb.vip_subnet_id,
        vip_network_id=lb.vip_network_id,
        vip_qos_policy_id=lb.vip_qos_policy_id,
        vip_vnic_type=lb.vip_vnic_type,
        vip_sg_ids=[],
        additional_vips=[],
        provider=lb.provider,
        flavor_id=lb.flavor_id,
        availability_zone=lb.availability_zone,
        listeners=[{"id": listener.id} for listener in lb.listeners],
        pools=[{"id": pool.id} for pool in lb.pools],
    )
    return out


def _load(session: Session, ctx: RequestContext, lb_id: str) -> LoadBalancer:
    lb = session.scalar(
        ctx.visible(LoadBalancer)
        .where(LoadBalancer.id == lb_id)
        .options(selectinload(LoadBalancer.listeners), selectinload(LoadBalancer.pools))
    )
    if lb is None:
        raise NotFound.resource(LABEL, lb_id)
    return lb


@router.get("")
def list_loadbalancers(
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    stmt = ctx.visible(LoadBalancer).options(
        selectinload(LoadBalancer.listeners), selectinload(LoadBalancer.pools)
    )
    return list_collection(request, session, stmt, LoadBalancer, "loadbalancers", serialize)


@router.get("/{lb_id}")
def show_loadbalancer(
    lb_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    lb = _load(session, ctx, lb_id)
    return {"loadbalancer": select_fields(serialize(lb), requested_fields(request))}


def _resolve_provider_and_flavor(
    request: Request, session: Session, body: LoadBalancerCreate
) -> tuple[str, Flavor | None]:
    registry = common.registry(request)
    flavor = None
    provider = body.provider
    if body.flavor_id:
        flavor = session.get(Flavor, body.flavor_id)
        if flavor is None:
            raise BadRequest(f"Validation failure: Flavor {body.flavor_id} not found.")
        if not flavor.enabled:
            raise BadRequest(
                f"The selected flavor is not allowed in this deployment: {body.flavor_id}"
            )
        profile = session.get(FlavorProfile, flavor.flavor_profile_id)
        assert profile is not None
        if provider and provider != profile.provider_name:
            raise BadRequest(
                f"Flavor '{body.flavor_id}' is not compatible with provider '{provider}'."
            )
        provider = profile.provider_name
    provider = provider or registry.default
    if not registry.has(provider):
        raise BadRequest(f"Provider '{provider}' is not enabled.")
    if body.availability_zone:
        zone = session.get(AvailabilityZone, body.availability_zone)
        if zone is None:
            raise BadRequest(
                f"Validation failure: Availability zone {body.availability_zone} not found."
            )
        if not zone.enabled:
            raise BadRequest(
                "The selected availability_zone is not allowed in this deployment: "
                f"{body.availability_zone}"
            )
        zone_profile = session.get(AvailabilityZoneProfile, zone.availability_zone_profile_id)
        if zone_profile is not None and zone_profile.provider_name != provider:
            raise BadRequest(
                f"Availability zone '{body.availability_zone}' is not compatible with "
                f"provider '{provider}'."
            )
    return provider, flavor


def _visible_subnet(session: Session, ctx: RequestContext, subnet_id: str) -> Subnet:
    subnet = session.get(Subnet, subnet_id)
    if subnet is not None:
        network = session.get(Network, subnet.network_id)
        if ctx.is_admin or (
            network is not None and (network.shared or network.project_id == ctx.project_id)
        ):
            return subnet
    raise BadRequest(f"Validation failure: Subnet {subnet_id} could not be found.")


def _allocate_vip(
    session: Session, ctx: RequestContext, lb: LoadBalancer, body: LoadBalancerCreate
) -> None:
    if body.vip_port_id:
        port = session.get(Port, body.vip_port_id)
        if port is None or not (ctx.is_admin or port.project_id == ctx.project_id):
            raise BadRequest(f"Validation failure: Port {body.vip_port_id} could not be found.")
        if port.device_id:
            raise BadRequest(f"Validation failure: Port {body.vip_port_id} is already in use.")
        port.device_id, port.device_owner = lb.id, "openha:vip"
        subnet = session.get(Subnet, port.subnet_id)
        assert subnet is not None
    elif body.vip_subnet_id:
        subnet = _visible_subnet(session, ctx, body.vip_subnet_id)
        if body.vip_network_id and subnet.network_id != body.vip_network_id:
            raise BadRequest("Validation failure: vip_subnet_id is not in vip_network_id.")
        port = ipam.allocate(
            session,
            subnet,
            project_id=lb.project_id,
            device_owner="openha:vip",
            device_id=lb.id,
            name=f"openha-vip-{lb.id}",
            ip_address=body.vip_address,
        )
    elif body.vip_network_id:
        network = session.get(Network, body.vip_network_id)
        if network is None or not (
            ctx.is_admin or network.shared or network.project_id == ctx.project_id
        ):
            raise BadRequest(
                f"Validation failure: Network {body.vip_network_id} could not be found."
            )
        subnets = list(
            session.scalars(
                select(Subnet).where(Subnet.network_id == network.id).order_by(Subnet.created_at)
            )
        )
        if body.vip_address:
            subnets = [s for s in subnets if _contains(s, body.vip_address)]
        if not subnets:
            raise BadRequest(f"Validation failure: Network {network.id} has no usable subnet.")
        subnet = subnets[0]
        port = ipam.allocate(
            session,
            subnet,
            project_id=lb.project_id,
            device_owner="openha:vip",
            device_id=lb.id,
            name=f"openha-vip-{lb.id}",
            ip_address=body.vip_address,
        )
    else:
        raise BadRequest(
            "Validation failure: VIP must contain one of: vip_port_id, vip_network_id, "
            "vip_subnet_id."
        )
    lb.vip_address = port.ip_address
    lb.vip_port_id = port.id
    lb.vip_subnet_id = subnet.id
    lb.vip_network_id = subnet.network_id


def _contains(subnet: Subnet, address: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(subnet.cidr)


@router.post("", status_code=201)
def create_loadbalancer(
    payload: LoadBalancerCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    body = payload.loadbalancer
    if body.additional_vips:
        raise BadRequest("Additional VIPs are not supported by this deployment.")
    if body.vip_sg_ids:
        raise BadRequest("VIP security groups are not supported by this deployment.")
    project_id = ctx.owner_project(body.project_id or body.tenant_id)
    provider, flavor = _resolve_provider_and_flavor(request, session, body)
    common.check_quota(request, session, project_id, "load_balancer")
    lb = LoadBalancer(
        project_id=project_id,
        name=body.name or "",
        description=body.description or "",
        admin_state_up=body.admin_state_up,
        provider=provider,
        flavor_id=flavor.id if flavor else None,
        availability_zone=body.availability_zone,
        vip_qos_policy_id=body.vip_qos_policy_id,
        tags=body.tags,
        provisioning_status=c.PENDING_CREATE,
        operating_status=c.OFFLINE,
    )
    session.add(lb)
    session.flush()
    _allocate_vip(session, ctx, lb, body)
    if body.listeners or body.pools:
        from openha.api.tenant.graph import create_graph

        create_graph(request, session, ctx, lb, body.listeners or [], body.pools or [])
    events.emit(session, "loadbalancer.created", f"Load balancer {lb.id} created", lb=lb)
    session.commit()
    if body.listeners or body.pools:
        from openha.api.tenant.graph import serialize_graph

        return {"loadbalancer": serialize_graph(session, lb.id)}
    return {"loadbalancer": serialize(_load(session, ctx, lb.id))}


@router.put("/{lb_id}")
def update_loadbalancer(
    lb_id: str,
    payload: LoadBalancerUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    lb = common.begin_change(session, ctx, lb_id)
    changes = payload.loadbalancer.model_dump(exclude_unset=True)
    for key in ("name", "description"):
        if key in changes:
            changes[key] = changes[key] or ""
    for key, value in changes.items():
        if value is None and key in ("admin_state_up", "tags"):
            raise BadRequest(f"Invalid input for field/attribute {key}. Value: 'None'.")
        setattr(lb, key, value)
    session.commit()
    return {"loadbalancer": serialize(_load(session, ctx, lb_id))}


@router.delete("/{lb_id}", status_code=204)
def delete_loadbalancer(
    lb_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> Response:
    lb = common.lock_load_balancer(session, ctx, lb_id)
    if lb.provisioning_status == c.PENDING_DELETE:
        return Response(status_code=204)
    cascade = request.query_params.get("cascade", "false").lower() in ("true", "1")
    children = [o for o in (*lb.listeners, *lb.pools) if o.provisioning_status != c.PENDING_DELETE]
    if children and not cascade:
        raise BadRequest(f"Cannot delete Load Balancer {lb_id} - it has children")
    # Deleting is allowed in any state: the controller tears down whatever exists.
    lb.provisioning_status = c.PENDING_DELETE
    lb.desired_generation += 1
    lb.attempts = 0
    lb.next_attempt_at = None
    from openha.models import TREE_MODELS

    for model in TREE_MODELS:
        for obj in session.scalars(select(model).where(model.load_balancer_id == lb.id)):
            obj.provisioning_status = c.PENDING_DELETE
    events.emit(session, "loadbalancer.deleting", f"Load balancer {lb.id} deleted", lb=lb)
    session.commit()
    return Response(status_code=204)


@router.get("/{lb_id}/stats")
def loadbalancer_stats(
    lb_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    lb = _load(session, ctx, lb_id)
    totals = dict.fromkeys(
        ("bytes_in", "bytes_out", "active_connections", "total_connections", "request_errors"), 0
    )
    for row in session.scalars(
        select(ListenerStats).where(ListenerStats.load_balancer_id == lb.id)
    ):
        for key in totals:
            totals[key] += getattr(row, key)
    return {"stats": totals}


def _status_member(m: Any) -> dict[str, Any]:
    return {
        "id": m.id,
        "name": m.name,
        "operating_status": m.operating_status,
        "provisioning_status": m.provisioning_status,
        "address": m.address,
        "protocol_port": m.protocol_port,
    }


def _status_pool(pool: Pool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": pool.id,
        "name": pool.name,
        "provisioning_status": pool.provisioning_status,
        "operating_status": pool.operating_status,
        "members": [_status_member(m) for m in pool.members],
    }
    hm = pool.health_monitor
    if hm is not None:
        out["health_monitor"] = {
            "id": hm.id,
            "name": hm.name,
            "type": hm.type,
            "provisioning_status": hm.provisioning_status,
            "operating_status": hm.operating_status,
        }
    return out


def status_tree(session: Session, lb: LoadBalancer) -> dict[str, Any]:
    pools = {p.id: p for p in lb.pools}
    listeners = []
    for listener in lb.listeners:
        pool_ids: list[str] = []
        if listener.default_pool_id:
            pool_ids.append(listener.default_pool_id)
        for policy in listener.l7policies:
            if policy.redirect_pool_id and policy.redirect_pool_id not in pool_ids:
                pool_ids.append(policy.redirect_pool_id)
        listeners.append(
            {
                "id": listener.id,
                "name": listener.name,
                "operating_status": listener.operating_status,
                "provisioning_status": listener.provisioning_status,
                "pools": [_status_pool(pools[pid]) for pid in pool_ids if pid in pools],
            }
        )
    return {
        "loadbalancer": {
            "id": lb.id,
            "name": lb.name,
            "operating_status": lb.operating_status,
            "provisioning_status": lb.provisioning_status,
            "listeners": listeners,
        }
    }


@router.get("/{lb_id}/status")
@router.get("/{lb_id}/statuses")
def loadbalancer_status(
    lb_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    lb = _load(session, ctx, lb_id)
    return {"statuses": status_tree(session, lb)}


@router.put("/{lb_id}/failover", status_code=202)
def failover_loadbalancer(
    lb_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> Response:
    lb = common.begin_change(session, ctx, lb_id)
    lb.failover_requested = True
    events.emit(session, "loadbalancer.failover_requested", "Failover requested by an admin", lb=lb)
    session.commit()
    return Response(status_code=202)
