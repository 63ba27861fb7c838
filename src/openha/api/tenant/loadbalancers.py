"""/v2/lbaas/loadbalancers, as Octavia's v2 API: create (also fully populated), update,
delete, stats, status tree and the admin failover here; list and show from the table."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from fastapi import Depends, Request, Response
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openha import events, ipam
from openha.api import idempotency, protectionrefs
from openha.api.context import RequestContext, get_admin_context, get_context, get_session
from openha.api.errors import BadRequest
from openha.api.logquery import LogParams, log_params, respond
from openha.api.networks import visible_networks, visible_subnets
from openha.api.resources import RelatedIds, Resource
from openha.api.tenant import changes, common
from openha.api.tenant.catalogue import parse_profile_data
from openha.api.tenant.changes import Change
from openha.api.tenant.graph import create_graph
from openha.api.tenant.healthmonitors import HealthMonitorView
from openha.api.tenant.l7policies import L7PolicyView
from openha.api.tenant.l7rules import L7RuleView
from openha.api.tenant.listeners import STATS, ListenerView
from openha.api.tenant.members import MemberView
from openha.api.tenant.pools import POOLS, PoolView
from openha.api.types import StrictModel, with_defaults
from openha.api.views import OneRef, Ref, TreeView, View
from openha.domain import constants as c
from openha.domain.grammar import FreeText, IPAddress, Tags
from openha.models import (
    AvailabilityZone,
    AvailabilityZoneProfile,
    Flavor,
    FlavorProfile,
    L7Policy,
    Listener,
    ListenerStats,
    LoadBalancer,
    Network,
    Pool,
    Port,
    Provisioned,
    Subnet,
    new_id,
)

# --- bodies -----------------------------------------------------------------------------


class LoadBalancerUpdate(StrictModel):
    name: FreeText | None = None
    description: FreeText | None = None
    admin_state_up: bool | None = None
    vip_qos_policy_id: str | None = None
    tags: Tags | None = None


class LoadBalancerCreate(LoadBalancerUpdate):
    admin_state_up: bool = True
    vip_address: IPAddress | None = None
    vip_port_id: str | None = None
    vip_subnet_id: str | None = None
    vip_network_id: str | None = None
    vip_sg_ids: list[str] | None = None
    vip_vnic_type: str | None = None
    additional_vips: list[dict[str, Any]] | None = None
    project_id: str | None = None
    tenant_id: str | None = None
    provider: str | None = None
    flavor_id: str | None = None
    availability_zone: str | None = None
    tags: Tags = Field(default_factory=list)
    # Fully populated create: validated by the graph module against its own schemas.
    listeners: list[dict[str, Any]] | None = None
    pools: list[dict[str, Any]] | None = None


class LoadBalancerCreateBody(StrictModel):
    loadbalancer: LoadBalancerCreate


class LoadBalancerUpdateBody(StrictModel):
    loadbalancer: LoadBalancerUpdate


# Null means the column's default (`with_defaults`), except for these.
NOT_NULL = ("admin_state_up", "tags")


# --- the answers ------------------------------------------------------------------------


class LoadBalancerView(TreeView):
    name: str
    description: str
    vip_address: str | None
    vip_port_id: str | None
    vip_subnet_id: str | None
    vip_network_id: str | None
    vip_qos_policy_id: str | None
    vip_vnic_type: str
    vip_sg_ids: list[str] = []
    additional_vips: list[dict[str, Any]] = []
    provider: str
    flavor_id: str | None
    availability_zone: str | None
    listeners: Sequence[Ref]
    pools: Sequence[Ref]


# Octavia's *FullResponse types: the fully populated create answers with children in full,
# without the references back to their parents.
class L7PolicyFullView(L7PolicyView):
    rules: Sequence[L7RuleView]


class ListenerFullView(ListenerView):
    loadbalancers: OneRef = Field(validation_alias="load_balancer_id", exclude=True)
    l7policies: Sequence[L7PolicyFullView]


class HealthMonitorFullView(HealthMonitorView):
    pools: OneRef = Field(validation_alias="pool_id", exclude=True)


class PoolFullView(PoolView):
    loadbalancers: OneRef = Field(validation_alias="load_balancer_id", exclude=True)
    healthmonitor_id: str | None = Field(None, exclude=True)
    members: Sequence[MemberView]
    healthmonitor: HealthMonitorFullView | None = Field(validation_alias="health_monitor")


class LoadBalancerFullView(LoadBalancerView):
    listeners: Sequence[ListenerFullView]
    pools: Sequence[PoolFullView]


def _on_delete(change: Change, lb: LoadBalancer, request: Request) -> None:
    """Without `cascade`, an LB with listeners or pools stays. Otherwise deleting is allowed
    in any state (the controller tears down whatever exists), and it is an event."""
    cascade = request.query_params.get("cascade", "false").lower() in ("true", "1")
    children: list[Provisioned] = [*lb.listeners, *lb.pools]
    if not cascade and any(o.provisioning_status != c.PENDING_DELETE for o in children):
        raise BadRequest(f"Cannot delete Load Balancer {lb.id} - it has children")
    events.emit(change.session, "loadbalancer.deleting", f"Load balancer {lb.id} deleted", lb=lb)


LOAD_BALANCERS: Resource[LoadBalancer] = Resource(
    model=LoadBalancer,
    path="/loadbalancers",
    singular="loadbalancer",
    plural="loadbalancers",
    label=changes.LB_LABEL,
    view=LoadBalancerView,
    options=(selectinload(LoadBalancer.listeners), selectinload(LoadBalancer.pools)),
    list_options=(),
    related_ids={
        "listeners": RelatedIds(Listener.load_balancer_id, Listener.id, (Listener.created_at,)),
        "pools": RelatedIds(Pool.load_balancer_id, Pool.id, (Pool.created_at,)),
    },
    delete=changes.deleting(_on_delete),
)
router = LOAD_BALANCERS.router()

# Everything the full answer shows, loaded up front.
FULL_TREE = (
    selectinload(LoadBalancer.listeners)
    .selectinload(Listener.l7policies)
    .selectinload(L7Policy.rules),
    selectinload(LoadBalancer.pools).options(*POOLS.options),
)


# --- create -----------------------------------------------------------------------------

VIP_OWNER = "openha:vip"


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
        # Checked when the profile was written; data from before then may dangle.
        protectionrefs.check_flavor_data(
            session, parse_profile_data(profile.flavor_data, "flavor_data")
        )
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


def _vip_subnet(session: Session, ctx: RequestContext, body: LoadBalancerCreate) -> Subnet:
    """The subnet a new VIP comes from: the one named, or the first of the network named
    that holds the requested address."""
    if body.vip_subnet_id:
        subnet: Subnet | None = session.scalar(
            visible_subnets(ctx).where(Subnet.id == body.vip_subnet_id)
        )
        if subnet is None:
            raise BadRequest(f"Validation failure: Subnet {body.vip_subnet_id} could not be found.")
        if body.vip_network_id and subnet.network_id != body.vip_network_id:
            raise BadRequest("Validation failure: vip_subnet_id is not in vip_network_id.")
        return subnet
    network = session.scalar(visible_networks(ctx).where(Network.id == body.vip_network_id))
    if network is None:
        raise BadRequest(f"Validation failure: Network {body.vip_network_id} could not be found.")
    subnets = session.scalars(
        select(Subnet).where(Subnet.network_id == network.id).order_by(Subnet.created_at)
    )
    address = ipaddress.ip_address(body.vip_address) if body.vip_address else None
    for subnet in subnets:
        if address is None or address in ipaddress.ip_network(subnet.cidr):
            return subnet
    raise BadRequest(f"Validation failure: Network {network.id} has no usable subnet.")


def _allocate_vip(
    session: Session, ctx: RequestContext, lb: LoadBalancer, body: LoadBalancerCreate
) -> None:
    if body.vip_port_id:
        port = session.get(Port, body.vip_port_id)
        if port is None or not (ctx.is_admin or port.project_id == ctx.project_id):
            raise BadRequest(f"Validation failure: Port {body.vip_port_id} could not be found.")
        if port.device_id:
            raise BadRequest(f"Validation failure: Port {body.vip_port_id} is already in use.")
        port.device_id, port.device_owner = lb.id, VIP_OWNER
        subnet = session.get(Subnet, port.subnet_id)
        assert subnet is not None
    elif body.vip_subnet_id or body.vip_network_id:
        subnet = _vip_subnet(session, ctx, body)
        port = ipam.allocate(
            session,
            subnet,
            project_id=lb.project_id,
            device_owner=VIP_OWNER,
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


@router.post("", status_code=201, response_model=None, responses=LOAD_BALANCERS.answered(201))
def create_loadbalancer(
    payload: LoadBalancerCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
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
        id=new_id(),
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
    # The VIP first, so that the LB row is inserted whole: a later UPDATE would stamp
    # updated_at, which Octavia leaves null until the object changes.
    _allocate_vip(session, ctx, lb, body)
    session.add(lb)
    session.flush()
    full = bool(body.listeners or body.pools)
    if full:
        create_graph(
            request, Change(session, ctx, lb, new=True), body.listeners or [], body.pools or []
        )
    events.emit(session, "loadbalancer.created", f"Load balancer {lb.id} created", lb=lb)
    # The answer is read inside the transaction: once committed, the controller may
    # settle the new objects before we read them back, and a create answers PENDING_CREATE.
    if full:
        lb = session.scalars(
            select(LoadBalancer)
            .where(LoadBalancer.id == lb.id)
            .options(*FULL_TREE)
            .execution_options(populate_existing=True)
        ).one()
        answer = {"loadbalancer": LoadBalancerFullView.render(lb)}
    else:
        session.flush()
        answer = LOAD_BALANCERS.show(session, ctx, lb.id)
    idempotency.commit(session, keyed, answer)
    return answer


@router.put("/{lb_id}", response_model=None, responses=LOAD_BALANCERS.answered(200))
def update_loadbalancer(
    lb_id: str,
    payload: LoadBalancerUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    change = changes.begin(session, ctx, lb_id)
    given = payload.loadbalancer.model_dump(exclude_unset=True)
    for key, value in with_defaults(given, LoadBalancer, NOT_NULL).items():
        setattr(change.lb, key, value)
    change.updated(change.lb)
    session.flush()
    answer = LOAD_BALANCERS.show(session, ctx, lb_id)
    session.commit()
    return answer


@router.put("/{lb_id}/failover", status_code=202, response_class=Response)
def failover_loadbalancer(
    lb_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> Response:
    change = changes.begin(session, ctx, lb_id)
    change.request_failover()
    events.emit(
        session, "loadbalancer.failover_requested", "Failover requested by an admin", lb=change.lb
    )
    session.commit()
    return Response(status_code=202)


# --- stats, logs and status tree ---------------------------------------------------------


@router.get("/{lb_id}/logs", response_model=None)
def loadbalancer_logs(
    lb_id: str,
    request: Request,
    params: LogParams = Depends(log_params),
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> Any:
    """The load balancer's access (or admin) lines; an OpenHA extension (see logquery)."""
    lb = LOAD_BALANCERS.find(session, ctx, lb_id)
    return respond(request, lb, session, params)


@router.get("/{lb_id}/stats")
def loadbalancer_stats(
    lb_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    lb = LOAD_BALANCERS.find(session, ctx, lb_id)
    totals = dict.fromkeys(STATS, 0)
    for row in session.scalars(
        select(ListenerStats).where(ListenerStats.load_balancer_id == lb.id)
    ):
        for key in totals:
            totals[key] += getattr(row, key)
    return {"stats": totals}


class StatusMember(View):
    id: str
    name: str
    operating_status: str
    provisioning_status: str
    address: str
    protocol_port: int


class StatusMonitor(View):
    id: str
    name: str
    type: str
    provisioning_status: str
    operating_status: str


class StatusPool(View):
    id: str
    name: str
    provisioning_status: str
    operating_status: str
    members: list[StatusMember]
    health_monitor: StatusMonitor | None = None


# What a status tree reads, in a fixed number of queries whatever the LB holds.
STATUS_TREE_LOADS = (
    selectinload(LoadBalancer.listeners).selectinload(Listener.l7policies),
    selectinload(LoadBalancer.pools).selectinload(Pool.members),
    selectinload(LoadBalancer.pools).selectinload(Pool.health_monitor),
)


def status_tree(lb: LoadBalancer) -> dict[str, Any]:
    """Octavia's status tree: LB -> listeners -> the pools they use -> members, monitor."""
    pools = {p.id: p for p in lb.pools}
    listeners = []
    for listener in lb.listeners:
        pool_ids: list[str] = []
        if listener.default_pool_id:
            pool_ids.append(listener.default_pool_id)
        for policy in listener.l7policies:
            if policy.redirect_pool_id and policy.redirect_pool_id not in pool_ids:
                pool_ids.append(policy.redirect_pool_id)
        # A pool without a monitor answers "health_monitor": null (PoolStatusResponse).
        listener_pools = [StatusPool.render(pools[pid]) for pid in pool_ids if pid in pools]
        listeners.append(
            {
                "id": listener.id,
                "name": listener.name,
                "operating_status": listener.operating_status,
                "provisioning_status": listener.provisioning_status,
                "pools": listener_pools,
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
    lb = session.scalars(
        LOAD_BALANCERS.query(session, ctx, lb_id).options(*STATUS_TREE_LOADS)
    ).first()
    if lb is None:
        raise LOAD_BALANCERS.missing_error(session, ctx, lb_id)
    return {"statuses": status_tree(lb)}
