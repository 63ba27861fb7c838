"""/v2/lbaas/pools/{pool_id}/members: create, show, list, update, delete and the batch update,
as Octavia's v2 API.

Exports for the fully populated LB create: `MemberCreate`, `add_member`
(validation and insert, without `begin_change` or commit) and `serialize`.
"""

from __future__ import annotations

import ipaddress
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
from openha.api.tenant.listeners import Port, touch
from openha.api.tenant.pools import affected_listeners
from openha.domain import constants as c
from openha.domain.grammar import FreeText, IPAddress, Tag
from openha.models import LoadBalancer, Member, Network, Pool, Subnet

router = APIRouter(prefix="/lbaas/pools/{pool_id}/members", tags=["members"])
LABEL = "Member"

# Octavia's [networking] reserved_ips default: the cloud metadata service.
RESERVED_IPS = frozenset({"169.254.169.254"})
DEFAULT_WEIGHT = 1
VNIC_NORMAL = "normal"
VNIC_DIRECT = "direct"

Weight = Annotated[int, Field(ge=c.MIN_WEIGHT, le=c.MAX_WEIGHT)]


class MemberCreate(StrictModel):
    name: FreeText | None = None
    admin_state_up: bool = True
    address: IPAddress
    protocol_port: Port
    weight: Weight | None = DEFAULT_WEIGHT
    backup: bool | None = False
    subnet_id: str | None = None
    # Accepted for compatibility (deprecated in Octavia): a member takes its LB's project.
    project_id: str | None = None
    monitor_port: Port | None = None
    monitor_address: IPAddress | None = None
    tags: list[Tag] | None = None
    request_sriov: bool = False


class MemberCreateBody(StrictModel):
    member: MemberCreate


class MemberUpdate(StrictModel):
    name: FreeText | None = None
    admin_state_up: bool | None = None
    weight: Weight | None = None
    backup: bool | None = None
    monitor_port: Port | None = None
    monitor_address: IPAddress | None = None
    tags: list[Tag] | None = None


class MemberUpdateBody(StrictModel):
    member: MemberUpdate


class MembersBatchBody(StrictModel):
    members: list[MemberCreate]


def serialize(member: Member) -> dict[str, Any]:
    out = base_fields(member)
    out.update(
        name=member.name,
        address=member.address,
        protocol_port=member.protocol_port,
        weight=member.weight,
        backup=bool(member.backup),
        subnet_id=member.subnet_id,
        monitor_address=member.monitor_address,
        monitor_port=member.monitor_port,
        vnic_type=member.vnic_type,
    )
    return out


# --- validation ---------------------------------------------------------------------------


def check_address(address: str, option: str = "member address") -> None:
    """Octavia's validate.ip_not_reserved, plus addresses that can never be a backend:
    unspecified, loopback (the instance's own namespace) and multicast."""
    ip = ipaddress.ip_address(address)
    if str(ip) in RESERVED_IPS or ip.is_unspecified or ip.is_loopback or ip.is_multicast:
        raise BadRequest(f"{address} is not a valid option for {option}")


def check_subnet(session: Session, ctx: RequestContext, subnet_id: str) -> Subnet:
    subnet = session.get(Subnet, subnet_id)
    if subnet is not None:
        network = session.get(Network, subnet.network_id)
        if ctx.is_admin or (
            network is not None and (network.shared or network.project_id == ctx.project_id)
        ):
            return subnet
    raise NotFound.resource("Subnet", subnet_id)


def _duplicate(pool: Pool, address: str, port: int) -> Conflict:
    return Conflict(
        f"Another member on this pool is already using ip {address} on protocol_port {port}"
    )


def _find(session: Session, pool: Pool, address: str, port: int) -> Member | None:
    return session.scalar(
        select(Member).where(
            Member.pool_id == pool.id, Member.address == address, Member.protocol_port == port
        )
    )


def add_member(
    request: Request,
    session: Session,
    ctx: RequestContext,
    pool: Pool,
    body: MemberCreate,
    *,
    quota: bool = True,
) -> Member:
    """Validate and insert a member into `pool` (the caller has called begin_change).

    `quota=False` when the caller has already checked the quota for a whole batch."""
    common.refuse_if_deleting(pool, "Pool")
    check_address(body.address)
    if body.monitor_address:
        check_address(body.monitor_address, "member monitor_address")
    if body.subnet_id:
        check_subnet(session, ctx, body.subnet_id)
    vnic_type = VNIC_DIRECT if body.request_sriov else VNIC_NORMAL
    lb = session.get(LoadBalancer, pool.load_balancer_id)
    assert lb is not None
    if body.request_sriov:
        common.check_option(request, lb, "member.vnic_type", vnic_type)
    if _find(session, pool, body.address, body.protocol_port) is not None:
        raise _duplicate(pool, body.address, body.protocol_port)
    if quota:
        common.check_quota(request, session, pool.project_id, "member")
    member = Member(
        pool_id=pool.id,
        load_balancer_id=pool.load_balancer_id,
        project_id=pool.project_id,
        name=body.name or "",
        admin_state_up=body.admin_state_up,
        address=body.address,
        protocol_port=body.protocol_port,
        weight=DEFAULT_WEIGHT if body.weight is None else body.weight,
        backup=bool(body.backup),
        subnet_id=body.subnet_id,
        monitor_address=body.monitor_address,
        monitor_port=body.monitor_port,
        vnic_type=vnic_type,
        tags=list(body.tags or []),
        provisioning_status=c.PENDING_CREATE,
        operating_status=c.OFFLINE,
    )
    session.add(member)
    session.flush()
    return member


def _touch_parents(session: Session, pool: Pool) -> None:
    """A member or health monitor change updates its pool and the listeners using it."""
    touch(pool)
    for listener in affected_listeners(session, pool):
        touch(listener)


# --- routes -------------------------------------------------------------------------------


def _pool(session: Session, ctx: RequestContext, pool_id: str) -> Pool:
    return ctx.get(session, Pool, pool_id, "Pool")


def _load(session: Session, ctx: RequestContext, pool_id: str, member_id: str) -> Member:
    member = session.get(Member, member_id)
    if member is None or member.pool_id != pool_id:
        raise NotFound.resource(LABEL, member_id)
    return ctx.get(session, Member, member_id, LABEL)


@router.get("")
def list_members(
    pool_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    pool = _pool(session, ctx, pool_id)
    stmt = ctx.visible(Member).where(Member.pool_id == pool.id)
    return list_collection(request, session, stmt, Member, "members", serialize)


@router.get("/{member_id}")
def show_member(
    pool_id: str,
    member_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    _pool(session, ctx, pool_id)
    member = _load(session, ctx, pool_id, member_id)
    return {"member": select_fields(serialize(member), requested_fields(request))}


@router.post("", status_code=201)
def create_member(
    pool_id: str,
    payload: MemberCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    pool = _pool(session, ctx, pool_id)
    common.begin_change(session, ctx, pool.load_balancer_id)
    member = add_member(request, session, ctx, pool, payload.member)
    _touch_parents(session, pool)
    session.commit()
    return {"member": serialize(_load(session, ctx, pool_id, member.id))}


@router.put("/{member_id}")
def update_member(
    pool_id: str,
    member_id: str,
    payload: MemberUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    pool = _pool(session, ctx, pool_id)
    member = _load(session, ctx, pool_id, member_id)
    common.begin_change(session, ctx, pool.load_balancer_id)
    common.refuse_if_deleting(member, LABEL)
    _apply_update(member, payload.member.model_dump(exclude_unset=True))
    touch(member)
    _touch_parents(session, pool)
    session.commit()
    return {"member": serialize(_load(session, ctx, pool_id, member_id))}


def _apply_update(member: Member, changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if value is None and key in ("admin_state_up", "tags"):
            raise BadRequest(f"Invalid input for field/attribute {key}. Value: 'None'.")
        if value is None:
            # Octavia's _set_default_on_none.
            value = {"name": "", "weight": DEFAULT_WEIGHT, "backup": False}.get(key)
        if key == "monitor_address" and value:
            check_address(value, "member monitor_address")
        setattr(member, key, value)


@router.delete("/{member_id}", status_code=204)
def delete_member(
    pool_id: str,
    member_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> Response:
    pool = _pool(session, ctx, pool_id)
    member = _load(session, ctx, pool_id, member_id)
    if member.provisioning_status == c.PENDING_DELETE:
        return Response(status_code=204)
    common.begin_change(session, ctx, pool.load_balancer_id)
    common.mark_deleted(member)
    _touch_parents(session, pool)
    session.commit()
    return Response(status_code=204)


# Batch update: these fields carry defaults in Octavia's MemberPOST, so a listed member
# that omits them is reset to the default; the others change only when given.
_BATCH_DEFAULTED = ("admin_state_up", "weight", "backup", "monitor_port", "monitor_address")
_BATCH_OPTIONAL = ("name", "subnet_id", "tags")


@router.put("", status_code=202)
def batch_update_members(
    pool_id: str,
    payload: MembersBatchBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> Response:
    """Make the pool's members match the list: matched by (address, protocol_port), listed
    ones are created or updated, unlisted ones deleted unless `additive_only=true`."""
    additive_only = request.query_params.get("additive_only", "false").lower() in (
        "true",
        "1",
        "yes",
        "on",
    )
    pool = _pool(session, ctx, pool_id)
    common.begin_change(session, ctx, pool.load_balancer_id)
    common.refuse_if_deleting(pool, "Pool")
    wanted: dict[tuple[str, int], MemberCreate] = {}
    for m in payload.members:
        key = (m.address, m.protocol_port)
        if key in wanted:
            raise _duplicate(pool, m.address, m.protocol_port)
        wanted[key] = m
    current = {
        (m.address, m.protocol_port): m
        for m in session.scalars(select(Member).where(Member.pool_id == pool.id))
    }
    new = [m for key, m in wanted.items() if key not in current]
    doomed = [
        m
        for key, m in current.items()
        if key not in wanted and m.provisioning_status != c.PENDING_DELETE
    ]
    if not additive_only:
        for member in doomed:
            common.mark_deleted(member)
    for key, body in wanted.items():
        existing = current.get(key)
        if existing is None:
            continue
        if body.subnet_id:
            check_subnet(session, ctx, body.subnet_id)
        data = body.model_dump()
        changes = {k: data[k] for k in _BATCH_DEFAULTED}
        changes.update({k: data[k] for k in _BATCH_OPTIONAL if k in body.model_fields_set})
        _apply_update(existing, changes)
        if existing.provisioning_status == c.PENDING_DELETE:
            # Listed again before the controller removed it: it stays.
            existing.provisioning_status = c.PENDING_UPDATE
        touch(existing)
    # Doomed members still hold their rows (and count against the quota) until the
    # controller removes them, so the batch is checked once for its net growth.
    growth = len(new) - (0 if additive_only else len(doomed))
    if growth > 0:
        common.check_quota(request, session, pool.project_id, "member", adding=growth)
    for body in new:
        add_member(request, session, ctx, pool, body, quota=False)
    _touch_parents(session, pool)
    session.commit()
    return Response(status_code=202)
