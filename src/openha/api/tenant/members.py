"""/v2/lbaas/pools/{pool_id}/members, as Octavia's v2 API: create, update and the batch
update here, the rest from the table.

Exports for the fully populated LB create: `MemberCreate`, `add_member`
(validation and insert within a change) and `MemberView`.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from openha.api import idempotency
from openha.api.context import RequestContext, get_context, get_session
from openha.api.errors import BadRequest, Conflict, NotFound
from openha.api.networks import visible_subnets
from openha.api.resources import Parent, Resource
from openha.api.tenant import changes, common
from openha.api.tenant.changes import Change
from openha.api.tenant.pools import POOLS
from openha.api.types import PortNumber, StrictModel, with_defaults
from openha.api.views import TreeView
from openha.domain import constants as c
from openha.domain.grammar import FreeText, IPAddress, Tags
from openha.models import Member, Pool, Subnet

# Octavia's [networking] reserved_ips default: the cloud metadata service.
RESERVED_IPS = frozenset({"169.254.169.254"})
VNIC_NORMAL = "normal"
VNIC_DIRECT = "direct"

Weight = Annotated[int, Field(ge=c.MIN_WEIGHT, le=c.MAX_WEIGHT)]

# --- bodies -----------------------------------------------------------------------------


class MemberUpdate(StrictModel):
    """The PUT body; a create may send every one of these too."""

    name: FreeText | None = None
    admin_state_up: bool | None = None
    weight: Weight | None = None
    backup: bool | None = None
    monitor_port: PortNumber | None = None
    monitor_address: IPAddress | None = None
    tags: Tags | None = None


class MemberCreate(MemberUpdate):
    admin_state_up: bool = True
    address: IPAddress
    protocol_port: PortNumber
    subnet_id: str | None = None
    # Accepted for compatibility (deprecated in Octavia): a member takes its LB's project.
    project_id: str | None = None
    request_sriov: bool = False


class MemberCreateBody(StrictModel):
    member: MemberCreate


class MemberUpdateBody(StrictModel):
    member: MemberUpdate


class MembersBatchBody(StrictModel):
    members: list[MemberCreate]


# Null means the column's default (`with_defaults`), except for these.
NOT_NULL = ("admin_state_up", "tags")


# --- the answer -------------------------------------------------------------------------


class MemberView(TreeView):
    name: str
    address: str
    protocol_port: int
    weight: int
    backup: bool
    subnet_id: str | None
    monitor_address: str | None
    monitor_port: int | None
    vnic_type: str


MEMBERS: Resource[Member] = Resource(
    model=Member,
    path="/pools/{pool_id}/members",
    singular="member",
    plural="members",
    label="Member",
    view=MemberView,
    parent=Parent("pool_id", Member.pool_id, POOLS),
    delete=changes.deleting(),
)
router = MEMBERS.router()


# --- validation ---------------------------------------------------------------------------


def check_address(address: str, option: str = "member address") -> None:
    """Octavia's validate.ip_not_reserved, plus addresses that can never be a backend:
    unspecified, loopback (the instance's own namespace) and multicast."""
    ip = ipaddress.ip_address(address)
    if str(ip) in RESERVED_IPS or ip.is_unspecified or ip.is_loopback or ip.is_multicast:
        raise BadRequest(f"{address} is not a valid option for {option}")


def check_subnet(session: Session, ctx: RequestContext, subnet_id: str) -> None:
    if session.scalar(visible_subnets(ctx).where(Subnet.id == subnet_id)) is None:
        raise NotFound.resource("Subnet", subnet_id)


def _duplicate(pool: Pool, address: str, port: int) -> Conflict:
    return Conflict(
        f"Another member on this pool is already using ip {address} on protocol_port {port}"
    )


def _find(session: Session, pool: Pool, address: str, port: int) -> Member | None:
    """The live member of `pool` on `address`:`port`; one being deleted does not count
    (the controller removes it, and the new one is created beside it)."""
    return session.scalar(
        select(Member).where(
            Member.pool_id == pool.id,
            Member.address == address,
            Member.protocol_port == port,
            Member.provisioning_status != c.PENDING_DELETE,
        )
    )


def add_member(
    request: Request, change: Change, pool: Pool, body: MemberCreate, *, quota: bool = True
) -> Member:
    """Validate and insert a member into `pool` (of the change's LB).

    `quota=False` when the caller has already checked the quota for a whole batch."""
    session = change.session
    check_address(body.address)
    if body.monitor_address:
        check_address(body.monitor_address, "member monitor_address")
    if body.subnet_id:
        check_subnet(session, change.ctx, body.subnet_id)
    vnic_type = VNIC_DIRECT if body.request_sriov else VNIC_NORMAL
    if body.request_sriov:
        common.check_option(request, change.lb, "member.vnic_type", vnic_type)
    if _find(session, pool, body.address, body.protocol_port) is not None:
        raise _duplicate(pool, body.address, body.protocol_port)
    if quota:
        common.check_quota(request, session, pool.project_id, "member")
    values = body.model_dump(exclude={"project_id", "request_sriov"})
    member = Member(
        pool_id=pool.id,
        load_balancer_id=pool.load_balancer_id,
        project_id=pool.project_id,
        vnic_type=vnic_type,
        provisioning_status=c.PENDING_CREATE,
        # Octavia (db/prepare.create_member): nothing will ever check a member of a pool
        # without a monitor; one with a monitor is OFFLINE until its checks report.
        operating_status=c.NO_MONITOR if pool.health_monitor is None else c.OFFLINE,
        **with_defaults(values, Member),
    )
    session.add(member)
    session.flush()
    change.created(member)
    return member


# --- routes -------------------------------------------------------------------------------


@router.post("", status_code=201, response_model=None, responses=MEMBERS.answered(201))
def create_member(
    pool_id: str,
    payload: MemberCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> dict[str, Any]:
    change, pool = changes.edit(session, ctx, POOLS, pool_id)
    member = add_member(request, change, pool, payload.member)
    session.flush()
    answer = MEMBERS.show(session, ctx, member.id, pool_id)
    idempotency.commit(session, keyed, answer)
    return answer


@router.put("/{member_id}", response_model=None, responses=MEMBERS.answered(200))
def update_member(
    pool_id: str,
    member_id: str,
    payload: MemberUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    change, member = changes.edit(session, ctx, MEMBERS, member_id, pool_id)
    _apply_update(member, payload.member.model_dump(exclude_unset=True))
    change.updated(member)
    session.flush()
    answer = MEMBERS.show(session, ctx, member_id, pool_id)
    session.commit()
    return answer


def _apply_update(member: Member, given: dict[str, Any]) -> None:
    for key, value in with_defaults(given, Member, NOT_NULL).items():
        if key == "monitor_address" and value:
            check_address(value, "member monitor_address")
        setattr(member, key, value)


# Batch update: these fields carry defaults in Octavia's MemberPOST, so a listed member
# that omits them is reset to the default; the others change only when given.
_BATCH_DEFAULTED = ("admin_state_up", "weight", "backup", "monitor_port", "monitor_address")
_BATCH_OPTIONAL = ("name", "subnet_id", "tags")


@router.put("", status_code=202, response_class=Response)
def batch_update_members(
    pool_id: str,
    payload: MembersBatchBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> Response:
    """Make the pool's members match the list: matched by (address, protocol_port), listed
    ones are created or updated, unlisted ones deleted unless `additive_only=true`."""
    additive_only = request.query_params.get("additive_only", "false").lower() in (
        "true",
        "1",
        "yes",
        "on",
    )
    change, pool = changes.edit(session, ctx, POOLS, pool_id)
    wanted: dict[tuple[str, int], MemberCreate] = {}
    for m in payload.members:
        key = (m.address, m.protocol_port)
        if key in wanted:
            raise _duplicate(pool, m.address, m.protocol_port)
        wanted[key] = m
    current: dict[tuple[str, int], Member] = {}
    for row in session.scalars(select(Member).where(Member.pool_id == pool.id)):
        # A live member wins over rows of the same address being deleted.
        key = (row.address, row.protocol_port)
        if key not in current or current[key].provisioning_status == c.PENDING_DELETE:
            current[key] = row
    new = [m for key, m in wanted.items() if key not in current]
    doomed = [
        m
        for key, m in current.items()
        if key not in wanted and m.provisioning_status != c.PENDING_DELETE
    ]
    if not additive_only:
        for member in doomed:
            change.deleted(member)
    for key, body in wanted.items():
        existing = current.get(key)
        if existing is None:
            continue
        if body.subnet_id:
            check_subnet(session, ctx, body.subnet_id)
        data = body.model_dump()
        given = {k: data[k] for k in _BATCH_DEFAULTED}
        given.update({k: data[k] for k in _BATCH_OPTIONAL if k in body.model_fields_set})
        _apply_update(existing, given)
        # Listed again before the controller removed it: it stays.
        change.restored(existing)
    # Doomed members still hold their rows (and count against the quota) until the
    # controller removes them, so the batch is checked once for its net growth.
    growth = len(new) - (0 if additive_only else len(doomed))
    if growth > 0:
        common.check_quota(request, session, pool.project_id, "member", adding=growth)
    for body in new:
        add_member(request, change, pool, body, quota=False)
    change.updated(pool)
    idempotency.commit(session, keyed)
    return Response(status_code=202)
