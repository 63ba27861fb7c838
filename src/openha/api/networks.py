"""Networks, subnets and ports without Neutron: Neutron's v2.0 shapes at /v2.0 (and /v2).

OpenHA keeps its own L2/L3 catalogue so that VIPs and instance addresses can be
allocated without an OpenStack cloud. The shapes, envelopes, paths and filters
follow Neutron's API closely enough for openstacksdk, the `openstack` CLI and
python-octaviaclient, which resolve `--vip-subnet-id NAME` through these routes.

Admins create, update and delete networks and subnets. Everyone may read the
networks that are `shared` or belong to their project, and the subnets of
those networks: this differs from the plain project filter of
`RequestContext.visible`, so the visibility query is built here. Ports are
read-only: they are created by `openha.ipam` when VIPs and instances take an
address, and are visible to their owner project.

`provider:physical_network` becomes a bridge or interface name in netlink
calls on the agents, so it is validated as a Linux interface name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import AfterValidator, AliasPath, Field, PlainSerializer, computed_field
from sqlalchemy import ColumnElement, Select, false, func, or_, select
from sqlalchemy.orm import Session, selectinload

from openha.api import idempotency
from openha.api.context import RequestContext, get_admin_context, get_context, get_session
from openha.api.errors import BadRequest, Conflict, NotFound, quote_input
from openha.api.resources import Resource, removing
from openha.api.tenant import changes
from openha.api.types import StrictModel
from openha.api.views import Ids, Strings, View
from openha.domain import constants as c
from openha.domain.grammar import FreeText, IPAddress, NetworkCidr, Tag, Tags, tag_set
from openha.models import LoadBalancer, Member, Network, Port, Subnet

router = APIRouter(tags=["networks"])

NETWORK_TYPES = ("flat", "vlan", "vxlan")
SEGMENTATION_RANGES: dict[str, tuple[int, int]] = {"vlan": (1, 4094), "vxlan": (1, 16777215)}
# IFNAMSIZ is 16 including the terminating NUL; the character set keeps names
# usable as plain tokens in `ip` commands and file names as well as in netlink.
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")
MIN_MTU, MAX_MTU, MIN_IPV6_MTU = 68, 65535, 1280

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Addresses of one subnet: comparable, as they are of one IP version.
IPAddr = ipaddress._BaseAddress


def check_interface_name(value: str) -> str:
    if not _IFNAME.match(value) or value in (".", ".."):
        raise ValueError("must be a Linux interface name: 1-15 characters from A-Z a-z 0-9 _ . -")
    return value


InterfaceName = Annotated[str, AfterValidator(check_interface_name)]


# --- request bodies ------------------------------------------------------------------


class NetworkCreate(StrictModel):
    name: FreeText | None = None
    description: FreeText | None = None
    admin_state_up: bool = True
    shared: bool = False
    project_id: str | None = None
    tenant_id: str | None = None
    network_type: str = Field(default="flat", alias="provider:network_type")
    physical_network: InterfaceName | None = Field(default=None, alias="provider:physical_network")
    segmentation_id: int | None = Field(default=None, alias="provider:segmentation_id")
    mtu: int = Field(default=1500, ge=MIN_MTU, le=MAX_MTU)
    tags: Tags = Field(default_factory=list)
    bridge_managed: bool = Field(default=True, alias="openha:bridge_managed")


class NetworkCreateBody(StrictModel):
    network: NetworkCreate


class NetworkUpdate(StrictModel):
    name: FreeText | None = None
    description: FreeText | None = None
    admin_state_up: bool | None = None
    shared: bool | None = None
    network_type: str | None = Field(default=None, alias="provider:network_type")
    physical_network: InterfaceName | None = Field(default=None, alias="provider:physical_network")
    segmentation_id: int | None = Field(default=None, alias="provider:segmentation_id")
    mtu: int | None = Field(default=None, ge=MIN_MTU, le=MAX_MTU)
    tags: Tags | None = None
    bridge_managed: bool | None = Field(default=None, alias="openha:bridge_managed")


class NetworkUpdateBody(StrictModel):
    network: NetworkUpdate


class AllocationPool(StrictModel):
    start: IPAddress
    end: IPAddress


class SubnetCreate(StrictModel):
    network_id: str
    cidr: NetworkCidr
    name: FreeText | None = None
    description: FreeText | None = None
    ip_version: int | None = None
    # Absent: the first address; explicit null: no gateway at all (Neutron's semantics).
    gateway_ip: IPAddress | None = None
    allocation_pools: list[AllocationPool] | None = None
    enable_dhcp: bool = False
    dns_nameservers: list[IPAddress] = Field(default_factory=list)
    host_routes: list[dict[str, str]] = Field(default_factory=list)
    project_id: str | None = None
    tenant_id: str | None = None
    tags: Tags = Field(default_factory=list)


class SubnetCreateBody(StrictModel):
    subnet: SubnetCreate


class SubnetUpdate(StrictModel):
    name: FreeText | None = None
    description: FreeText | None = None
    gateway_ip: IPAddress | None = None
    allocation_pools: list[AllocationPool] | None = None
    enable_dhcp: bool | None = None
    dns_nameservers: list[IPAddress] | None = None
    host_routes: list[dict[str, str]] | None = None
    tags: Tags | None = None


class SubnetUpdateBody(StrictModel):
    subnet: SubnetUpdate


class TagsBody(StrictModel):
    tags: Tags


# --- the answers (Neutron's shapes) -----------------------------------------------------


def _neutron_time(value: datetime | None) -> str | None:
    # Neutron renders UTC timestamps with a trailing Z.
    return value.isoformat() + "Z" if value is not None else None


NeutronTimestamp = Annotated[datetime | None, PlainSerializer(_neutron_time)]


class NetworkView(View):
    id: str
    name: str
    description: str
    project_id: str
    tenant_id: str = Field(validation_alias=AliasPath("project_id"))
    admin_state_up: bool
    shared: bool
    status: str = c.ACTIVE
    subnets: Ids
    network_type: str = Field(serialization_alias="provider:network_type")
    physical_network: str | None = Field(serialization_alias="provider:physical_network")
    segmentation_id: int | None = Field(serialization_alias="provider:segmentation_id")
    mtu: int
    tags: Strings
    created_at: NeutronTimestamp
    updated_at: NeutronTimestamp
    bridge_managed: bool = Field(serialization_alias="openha:bridge_managed")


class SubnetView(View):
    id: str
    name: str
    description: str
    network_id: str
    project_id: str
    tenant_id: str = Field(validation_alias=AliasPath("project_id"))
    ip_version: int
    cidr: str
    gateway_ip: str | None
    allocation_pools: list[dict[str, str]]
    enable_dhcp: bool
    dns_nameservers: list[str] = []
    host_routes: list[dict[str, str]] = []
    tags: Strings
    created_at: NeutronTimestamp
    updated_at: NeutronTimestamp


class PortView(View):
    id: str
    name: str
    network_id: str
    project_id: str
    tenant_id: str = Field(validation_alias=AliasPath("project_id"))
    mac_address: str
    subnet_id: str = Field(exclude=True)
    ip_address: str = Field(exclude=True)
    device_owner: str
    device_id: str
    admin_state_up: bool
    status: str = c.ACTIVE
    created_at: NeutronTimestamp
    updated_at: NeutronTimestamp

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fixed_ips(self) -> list[dict[str, str]]:
        return [{"subnet_id": self.subnet_id, "ip_address": self.ip_address}]


# --- visibility -----------------------------------------------------------------------


def _network_visible(ctx: RequestContext) -> ColumnElement[bool] | None:
    if ctx.is_admin:
        return None
    return or_(Network.shared.is_(True), Network.project_id == ctx.project_id)


def visible_networks(ctx: RequestContext) -> Select[Any]:
    stmt = select(Network)
    clause = _network_visible(ctx)
    return stmt if clause is None else stmt.where(clause)


def visible_subnets(ctx: RequestContext) -> Select[Any]:
    # A subnet is visible exactly when its network is.
    stmt = select(Subnet)
    clause = _network_visible(ctx)
    if clause is None:
        return stmt
    return stmt.join(Network, Subnet.network_id == Network.id).where(clause)


def _status_filter(request: Request, stmt: Select[Any]) -> Select[Any]:
    # Everything here is ACTIVE; `status=DOWN` must then match nothing, not everything.
    statuses = request.query_params.getlist("status")
    if statuses and c.ACTIVE not in [s.upper() for s in statuses]:
        return stmt.where(false())
    return stmt


def _owner(ctx: RequestContext, project_id: str | None, tenant_id: str | None) -> str:
    if project_id and tenant_id and project_id != tenant_id:
        raise BadRequest("project_id and tenant_id do not match.")
    return ctx.owner_project(project_id or tenant_id)


# --- network rules --------------------------------------------------------------------


def check_provider(
    network_type: str, physical_network: str | None, segmentation_id: int | None
) -> None:
    """The provider attributes must describe something an agent can build."""
    if network_type not in NETWORK_TYPES:
        raise BadRequest(
            f"Invalid input for provider:network_type. Value: '{quote_input(network_type)}'. "
            f"Must be one of: {', '.join(NETWORK_TYPES)}."
        )
    if network_type == "flat":
        if segmentation_id is not None:
            raise BadRequest("provider:segmentation_id is not allowed for a flat network.")
        if not physical_network:
            raise BadRequest(
                "provider:physical_network (the host bridge) is required for a flat network."
            )
        return
    low, high = SEGMENTATION_RANGES[network_type]
    if segmentation_id is None:
        raise BadRequest(f"provider:segmentation_id is required for a {network_type} network.")
    if not low <= segmentation_id <= high:
        raise BadRequest(
            f"Invalid input for provider:segmentation_id. Value: '{segmentation_id}'. "
            f"A {network_type} segmentation id must be between {low} and {high}."
        )
    if network_type == "vlan" and not physical_network:
        raise BadRequest(
            "provider:physical_network (the parent interface) is required for a vlan network."
        )


def _ports_on(session: Session, column: Any, ident: str) -> int:
    return session.scalar(select(func.count()).select_from(Port).where(column == ident)) or 0


# --- subnet rules ---------------------------------------------------------------------


def _usable_range(net: IPNetwork) -> tuple[IPAddr, IPAddr]:
    # IPv4 keeps its network and broadcast addresses out; IPv6 has no broadcast.
    first = net.network_address + 1
    last = net.broadcast_address - 1 if net.version == 4 else net.broadcast_address
    return first, last


def _default_pools(net: IPNetwork, gateway: IPAddr | None) -> list[tuple[IPAddr, IPAddr]]:
    first, last = _usable_range(net)
    if gateway is None or not first <= gateway <= last:
        return [(first, last)] if first <= last else []
    pools = []
    if first <= gateway - 1:
        pools.append((first, gateway - 1))
    if gateway + 1 <= last:
        pools.append((gateway + 1, last))
    return pools


def _check_gateway(net: IPNetwork, gateway: IPAddr | None) -> None:
    if gateway is None:
        return
    first, last = _usable_range(net)
    if gateway.version != net.version or not first <= gateway <= last:
        raise BadRequest(
            f"Invalid input for operation: Gateway IP {gateway} is not a usable address "
            f"of subnet {net}."
        )


def _check_pools(
    net: IPNetwork, gateway: IPAddr | None, pools: Sequence[tuple[IPAddr, IPAddr]]
) -> None:
    first, last = _usable_range(net)
    for start, end in pools:
        label = f"{start}-{end}"
        if start.version != net.version or end.version != net.version:
            raise BadRequest(f"The allocation pool {label} is not of the subnet's IP version.")
        if start > end:
            raise BadRequest(f"The allocation pool {label} starts after it ends.")
        if start < first or end > last:
            raise BadRequest(f"The allocation pool {label} spans beyond the subnet cidr {net}.")
        if gateway is not None and start <= gateway <= end:
            raise BadRequest(f"Gateway ip {gateway} conflicts with allocation pool {label}.")
    ordered = sorted(pools)
    for (s1, e1), (s2, e2) in pairwise(ordered):
        if s2 <= e1:
            raise BadRequest(f"Found overlapping allocation pools: {s1}-{e1} and {s2}-{e2}.")
    if not pools:
        raise BadRequest(f"Subnet {net} has no address left to allocate.")


def _parse_pools(pools: list[AllocationPool]) -> list[tuple[IPAddr, IPAddr]]:
    return [(ipaddress.ip_address(p.start), ipaddress.ip_address(p.end)) for p in pools]


def _render_pools(pools: Sequence[tuple[IPAddr, IPAddr]]) -> list[dict[str, str]]:
    return [{"start": str(s), "end": str(e)} for s, e in pools]


def _stored_pools(sub: Subnet) -> list[tuple[IPAddr, IPAddr]]:
    return [
        (ipaddress.ip_address(p["start"]), ipaddress.ip_address(p["end"]))
        for p in sub.allocation_pools or []
    ]


def _refuse_unsupported(
    enable_dhcp: bool | None, dns: list[str] | None, routes: list[dict[str, str]] | None
) -> None:
    # Accepted only in their empty form so that clients sending defaults still work.
    if enable_dhcp:
        raise BadRequest("OpenHA does not serve DHCP: enable_dhcp must be false.")
    if dns:
        raise BadRequest("dns_nameservers are not supported by OpenHA subnets.")
    if routes:
        raise BadRequest("host_routes are not supported by OpenHA subnets.")


# --- the table --------------------------------------------------------------------------


def _release_network(session: Session, net: Network) -> None:
    """A network goes with its subnets, unless addresses or members still use them."""
    if _ports_on(session, Port.network_id, net.id):
        raise Conflict(
            f"Unable to complete operation on network {net.id}. "
            "There are one or more ports still in use on the network."
        )
    for sub in list(net.subnets):
        _refuse_if_members(session, sub)
        session.delete(sub)
    session.flush()


def _refuse_subnet_in_use(session: Session, sub: Subnet) -> None:
    if _ports_on(session, Port.subnet_id, sub.id):
        raise Conflict(
            f"Unable to complete operation on subnet {sub.id}: "
            "One or more ports have an IP allocation from this subnet."
        )
    _refuse_if_members(session, sub)


def _refuse_if_members(session: Session, sub: Subnet) -> None:
    # Members name the subnet the data plane must reach them through.
    member = session.scalar(select(Member.id).where(Member.subnet_id == sub.id).limit(1))
    if member is not None:
        raise Conflict(f"Unable to complete operation on subnet {sub.id}: member {member} uses it.")


def _ports_filter(request: Request, stmt: Select[Any]) -> Select[Any]:
    return _fixed_ip_filter(request, _status_filter(request, stmt))


def _fixed_ip_filter(request: Request, stmt: Select[Any]) -> Select[Any]:
    # Neutron's `fixed_ips=ip_address=X` / `fixed_ips=subnet_id=Y` filter form.
    for raw in request.query_params.getlist("fixed_ips"):
        key, sep, value = raw.partition("=")
        if not sep or key not in ("ip_address", "subnet_id"):
            raise BadRequest(f"Invalid fixed_ips filter '{raw}'.")
        column = Port.ip_address if key == "ip_address" else Port.subnet_id
        stmt = stmt.where(column == value)
    return stmt


NETWORK_ALIASES = {
    "tenant_id": Network.project_id,
    "provider:network_type": Network.network_type,
    "provider:physical_network": Network.physical_network,
    "provider:segmentation_id": Network.segmentation_id,
    "openha:bridge_managed": Network.bridge_managed,
}


NEUTRON_MISSING = "{label} {id} could not be found."
NETWORKS: Resource[Network] = Resource(
    model=Network,
    path="/networks",
    unknown_filters="ignore",
    singular="network",
    plural="networks",
    label="Network",
    view=NetworkView,
    scope=visible_networks,
    options=(selectinload(Network.subnets),),
    aliases=NETWORK_ALIASES,
    narrow=_status_filter,
    writer=get_admin_context,
    delete=removing(_release_network),
    missing=NEUTRON_MISSING,
)
SUBNETS: Resource[Subnet] = Resource(
    model=Subnet,
    path="/subnets",
    unknown_filters="ignore",
    singular="subnet",
    plural="subnets",
    label="Subnet",
    view=SubnetView,
    scope=visible_subnets,
    aliases={"tenant_id": Subnet.project_id},
    writer=get_admin_context,
    delete=removing(_refuse_subnet_in_use),
    missing=NEUTRON_MISSING,
)
# Read-only: ports are taken by VIPs and instances (`openha.ipam`).
PORTS: Resource[Port] = Resource(
    model=Port,
    path="/ports",
    unknown_filters="ignore",
    singular="port",
    plural="ports",
    label="Port",
    view=PortView,
    aliases={"tenant_id": Port.project_id},
    narrow=_ports_filter,
    missing=NEUTRON_MISSING,
)
networks, subnets = NETWORKS.router(), SUBNETS.router()


# --- networks -------------------------------------------------------------------------


@networks.post("", status_code=201)
def create_network(
    payload: NetworkCreateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> dict[str, Any]:
    body = payload.network
    check_provider(body.network_type, body.physical_network, body.segmentation_id)
    net = Network(
        project_id=_owner(ctx, body.project_id, body.tenant_id),
        name=body.name or "",
        description=body.description or "",
        admin_state_up=body.admin_state_up,
        shared=body.shared,
        network_type=body.network_type,
        physical_network=body.physical_network,
        segmentation_id=body.segmentation_id,
        bridge_managed=body.bridge_managed,
        mtu=body.mtu,
        tags=body.tags,
    )
    session.add(net)
    session.flush()
    answer = NETWORKS.show(session, ctx, net.id)
    idempotency.commit(session, keyed, answer)
    return answer


@networks.put("/{network_id}")
def update_network(
    network_id: str,
    payload: NetworkUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    body = payload.network
    net = NETWORKS.find(session, ctx, network_id)
    given = body.model_fields_set
    provider_fields = {"network_type", "physical_network", "segmentation_id"} & given
    if provider_fields:
        # Agents have built bridges and VLAN/VXLAN devices for the ports already placed.
        if _ports_on(session, Port.network_id, net.id):
            raise Conflict(
                f"Unable to change the provider attributes of network {net.id}: "
                "it has ports in use."
            )
        network_type = body.network_type if "network_type" in given else net.network_type
        physical = body.physical_network if "physical_network" in given else net.physical_network
        segment = body.segmentation_id if "segmentation_id" in given else net.segmentation_id
        if network_type is None:
            raise BadRequest("provider:network_type cannot be null.")
        check_provider(network_type, physical, segment)
        net.network_type, net.physical_network, net.segmentation_id = (
            network_type,
            physical,
            segment,
        )
    if "mtu" in given:
        if body.mtu is None:
            raise BadRequest("mtu cannot be null.")
        if body.mtu < MIN_IPV6_MTU and any(s.ip_version == 6 for s in net.subnets):
            raise BadRequest(f"An IPv6 subnet needs an MTU of at least {MIN_IPV6_MTU}.")
        net.mtu = body.mtu
    for field in ("name", "description"):
        if field in given:
            setattr(net, field, getattr(body, field) or "")
    for field in ("admin_state_up", "shared", "bridge_managed", "tags"):
        if field in given:
            value = getattr(body, field)
            if value is None:
                raise BadRequest(f"{field} cannot be null.")
            setattr(net, field, value)
    session.flush()
    answer = NETWORKS.show(session, ctx, net.id)
    session.commit()
    return answer


# --- subnets --------------------------------------------------------------------------


@subnets.post("", status_code=201)
def create_subnet(
    payload: SubnetCreateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> dict[str, Any]:
    body = payload.subnet
    _refuse_unsupported(body.enable_dhcp, body.dns_nameservers, body.host_routes)
    net_row = session.scalar(select(Network).where(Network.id == body.network_id).with_for_update())
    if net_row is None:
        raise NotFound(f"Network {body.network_id} could not be found.")
    cidr = ipaddress.ip_network(body.cidr)
    if body.ip_version is not None and body.ip_version != cidr.version:
        raise BadRequest(
            f"Invalid input for operation: cidr {cidr} does not match ip_version {body.ip_version}."
        )
    if cidr.version == 6 and net_row.mtu < MIN_IPV6_MTU:
        raise BadRequest(
            f"Network {net_row.id} has an MTU of {net_row.mtu}; IPv6 needs {MIN_IPV6_MTU}."
        )
    first, last = _usable_range(cidr)
    if first > last:
        raise BadRequest(f"Subnet {cidr} is too small: it has no usable address.")
    gateway: IPAddr | None = first
    if "gateway_ip" in body.model_fields_set:
        gateway = ipaddress.ip_address(body.gateway_ip) if body.gateway_ip else None
    _check_gateway(cidr, gateway)
    if body.allocation_pools is None:
        pools = _default_pools(cidr, gateway)
    else:
        pools = _parse_pools(body.allocation_pools)
    _check_pools(cidr, gateway, pools)
    for other in net_row.subnets:
        if ipaddress.ip_network(other.cidr).overlaps(cidr):
            raise BadRequest(
                f"Invalid input for operation: Requested subnet with cidr: {cidr} for "
                f"network: {net_row.id} overlaps with another subnet."
            )
    sub = Subnet(
        project_id=_owner(ctx, body.project_id, body.tenant_id)
        if (body.project_id or body.tenant_id)
        else net_row.project_id,
        network_id=net_row.id,
        name=body.name or "",
        description=body.description or "",
        ip_version=cidr.version,
        cidr=str(cidr),
        gateway_ip=str(gateway) if gateway is not None else None,
        allocation_pools=_render_pools(pools),
        enable_dhcp=False,
        tags=body.tags,
    )
    session.add(sub)
    session.flush()
    answer = SUBNETS.show(session, ctx, sub.id)
    idempotency.commit(session, keyed, answer)
    return answer


@subnets.put("/{subnet_id}")
def update_subnet(
    subnet_id: str,
    payload: SubnetUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    body = payload.subnet
    given = body.model_fields_set
    _refuse_unsupported(body.enable_dhcp, body.dns_nameservers, body.host_routes)
    sub = SUBNETS.find(session, ctx, subnet_id)
    cidr = ipaddress.ip_network(sub.cidr)
    if {"gateway_ip", "allocation_pools"} & given:
        if "gateway_ip" in given:
            gateway = ipaddress.ip_address(body.gateway_ip) if body.gateway_ip else None
        else:
            gateway = ipaddress.ip_address(sub.gateway_ip) if sub.gateway_ip else None
        if "allocation_pools" in given:
            if body.allocation_pools is None:
                raise BadRequest("allocation_pools cannot be null.")
            pools = _parse_pools(body.allocation_pools)
        else:
            pools = _stored_pools(sub)
        _check_gateway(cidr, gateway)
        _check_pools(cidr, gateway, pools)
        if gateway is not None and str(gateway) != sub.gateway_ip:
            in_use = session.scalar(
                select(Port.id).where(Port.subnet_id == sub.id, Port.ip_address == str(gateway))
            )
            if in_use is not None:
                raise Conflict(f"Gateway ip {gateway} is already allocated to port {in_use}.")
        new_gateway = str(gateway) if gateway is not None else None
        if new_gateway != sub.gateway_ip:
            _replumb_load_balancers(session, sub)
        sub.gateway_ip = new_gateway
        sub.allocation_pools = _render_pools(pools)
    for field in ("name", "description"):
        if field in given:
            setattr(sub, field, getattr(body, field) or "")
    if "tags" in given:
        sub.tags = body.tags or []
    session.flush()
    answer = SUBNETS.show(session, ctx, sub.id)
    session.commit()
    return answer


def _replumb_load_balancers(session: Session, sub: Subnet) -> None:
    """A new gateway changes the routes of every instance on the subnet: re-apply them."""
    on_subnet = select(Member.load_balancer_id).where(Member.subnet_id == sub.id)
    changes.reapply(
        session, or_(LoadBalancer.vip_subnet_id == sub.id, LoadBalancer.id.in_(on_subnet))
    )


# --- tags (Neutron's tag extension: what `openstack network create --tag` calls) ------


def _tag_routes(resource: Resource[Any], router: APIRouter) -> None:
    """GET/PUT/DELETE <resource>/{id}/tags[/{tag}] for networks and subnets."""

    def load(session: Session, ctx: RequestContext, ident: str) -> Network | Subnet:
        row: Network | Subnet = resource.find(session, ctx, ident)
        return row

    @router.get("/{ident}/tags")
    def list_tags(
        ident: str,
        session: Session = Depends(get_session),
        ctx: RequestContext = Depends(get_context),
    ) -> dict[str, Any]:
        return {"tags": list(load(session, ctx, ident).tags or [])}

    @router.put("/{ident}/tags")
    def replace_tags(
        ident: str,
        payload: TagsBody,
        session: Session = Depends(get_session),
        ctx: RequestContext = Depends(get_admin_context),
    ) -> dict[str, Any]:
        obj = load(session, ctx, ident)
        obj.tags = list(dict.fromkeys(payload.tags))
        session.commit()
        return {"tags": list(obj.tags)}

    @router.delete("/{ident}/tags", status_code=204, response_class=Response)
    def clear_tags(
        ident: str,
        session: Session = Depends(get_session),
        ctx: RequestContext = Depends(get_admin_context),
    ) -> Response:
        load(session, ctx, ident).tags = []
        session.commit()
        return Response(status_code=204)

    @router.put("/{ident}/tags/{tag}", status_code=201, response_class=Response)
    def add_tag(
        ident: str,
        tag: Tag,
        session: Session = Depends(get_session),
        ctx: RequestContext = Depends(get_admin_context),
    ) -> Response:
        obj = load(session, ctx, ident)
        obj.tags = tag_set([*obj.tags, tag])
        session.commit()
        return Response(status_code=201)

    @router.delete("/{ident}/tags/{tag}", status_code=204, response_class=Response)
    def remove_tag(
        ident: str,
        tag: str,
        session: Session = Depends(get_session),
        ctx: RequestContext = Depends(get_admin_context),
    ) -> Response:
        obj = load(session, ctx, ident)
        if tag not in obj.tags:
            raise NotFound(f"Tag {tag} could not be found.")
        obj.tags = [t for t in obj.tags if t != tag]
        session.commit()
        return Response(status_code=204)


_tag_routes(NETWORKS, networks)
_tag_routes(SUBNETS, subnets)


router.include_router(networks)
router.include_router(subnets)
router.include_router(PORTS.router())


@router.get("/extensions")
def list_extensions(_: RequestContext = Depends(get_context)) -> dict[str, Any]:
    # No Neutron extensions: clients that probe for one fall back to the core API.
    return {"extensions": []}
