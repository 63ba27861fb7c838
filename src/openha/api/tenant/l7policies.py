"""/v2/lbaas/l7policies: L7 policies, the ordered content switching rules of a listener.

Field for field Octavia's L7 policy (envelope `l7policy`/`l7policies`):
- `action` decides which redirect field is used, and only that one: REDIRECT_TO_POOL
  needs `redirect_pool_id` (a pool of the same LB whose protocol suits the listener),
  REDIRECT_TO_URL needs `redirect_url`, REDIRECT_PREFIX needs `redirect_prefix`,
  REJECT none. `redirect_http_code` belongs to the two redirects (default 302).
  On create a field of another action is a 400; on update, as in Octavia, giving
  a redirect target alone switches the action to it, and switching the action
  clears the fields of the old one.
- `position` is 1-based and contiguous per listener, like Octavia's ordering list:
  a new policy goes at the end unless a position is given, inserting shifts the
  others down, and moves and deletes close the gaps.
- Policies exist only on HTTP and TERMINATED_HTTPS listeners.
A policy may be created with its `rules` (see `l7rules`); deleting one deletes its rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openha.api import idempotency
from openha.api.context import RequestContext, get_context, get_session
from openha.api.errors import BadRequest, Conflict, NotFound
from openha.api.resources import Resource
from openha.api.tenant import changes, common, l7rules
from openha.api.tenant.changes import Change
from openha.api.tenant.l7rules import L7RuleSingleCreate
from openha.api.tenant.listeners import LISTENERS
from openha.api.types import StrictModel, check_pool_protocol, refuse_children
from openha.api.views import Ref, TreeView
from openha.domain import constants as c
from openha.domain.grammar import FreeText, Tags, Url, UrlPrefix
from openha.models import L7Policy, Listener, Pool, new_id

MIN_POSITION = 1
MAX_POSITION = 2147483647  # Octavia's MAX_POLICY_POSITION: "at the end"
L7_LISTENER_PROTOCOLS = ("HTTP", "TERMINATED_HTTPS")

Action = Literal[c.L7POLICY_ACTIONS]  # type: ignore[valid-type]
RedirectCode = Literal[c.REDIRECT_HTTP_CODES]  # type: ignore[valid-type]
Position = Annotated[int, Field(ge=MIN_POSITION, le=MAX_POSITION)]
PoolId = Annotated[str, Field(min_length=1, max_length=36)]

# The one redirect field each action uses.
TARGET_OF: dict[str, str] = {
    "REDIRECT_TO_POOL": "redirect_pool_id",
    "REDIRECT_TO_URL": "redirect_url",
    "REDIRECT_PREFIX": "redirect_prefix",
}
ACTION_OF = {field: action for action, field in TARGET_OF.items()}
TARGET_FIELDS = tuple(TARGET_OF.values())
CODED_ACTIONS = ("REDIRECT_TO_URL", "REDIRECT_PREFIX")


class L7PolicyUpdate(StrictModel):
    """The PUT body; a create may send every one of these too."""

    name: FreeText | None = None
    description: FreeText | None = None
    admin_state_up: bool | None = None
    action: Action | None = None
    position: Position | None = None
    redirect_pool_id: PoolId | None = None
    redirect_url: Url | None = None
    redirect_prefix: UrlPrefix | None = None
    redirect_http_code: RedirectCode | None = None
    tags: Tags | None = None


class L7PolicyCreate(L7PolicyUpdate):
    # Optional here so that the fully populated LB create can reuse this; the POST requires it.
    listener_id: str | None = None
    admin_state_up: bool = True
    action: Action
    rules: list[L7RuleSingleCreate] | None = None
    tags: Tags = Field(default_factory=list)
    # Deprecated in Octavia and ignored: a policy belongs to its load balancer's project.
    project_id: str | None = None
    tenant_id: str | None = None


class L7PolicyCreateBody(StrictModel):
    l7policy: L7PolicyCreate


class L7PolicyUpdateBody(StrictModel):
    l7policy: L7PolicyUpdate


class L7PolicyView(TreeView):
    name: str
    description: str
    listener_id: str
    action: str
    position: int
    redirect_pool_id: str | None
    redirect_url: str | None
    redirect_prefix: str | None
    redirect_http_code: int | None
    rules: Sequence[Ref]


def _close_gap(change: Change, policy: L7Policy, request: Request) -> None:
    """Renumber the others at once, as Octavia's ordering list does on delete."""
    _renumber(_live_policies(change.session, policy.listener_id, exclude=policy.id))


L7POLICIES: Resource[L7Policy] = Resource(
    model=L7Policy,
    path="/l7policies",
    singular="l7policy",
    plural="l7policies",
    label="L7Policy",
    view=L7PolicyView,
    options=(selectinload(L7Policy.rules),),
    delete=changes.deleting(_close_gap),
)
router = L7POLICIES.router()


# --- validation ------------------------------------------------------------------------


def _invalid(message: str) -> BadRequest:
    return BadRequest(f"Invalid L7 Policy arguments: {message}")


def resolve_action(changes: dict[str, Any], current: L7Policy | None) -> dict[str, Any]:
    """The action and redirect fields once `changes` apply to `current` (None: a create).

    `changes` holds the fields the caller sent (explicit nulls included, on update).
    """
    action = changes.get("action")
    if action is None:
        given = [f for f in TARGET_FIELDS if changes.get(f) is not None]
        if len(given) > 1:
            raise _invalid(f"Cannot specify {' and '.join(given)} at the same time.")
        if given:  # Octavia: a redirect target alone selects its action
            action = ACTION_OF[given[0]]
        elif current is not None:
            action = current.action
        else:
            raise BadRequest("Invalid L7 Policy action specified: None")
    needed = TARGET_OF.get(action)
    out: dict[str, Any] = {"action": action}
    for field in TARGET_FIELDS:
        if field == needed:
            value = changes[field] if field in changes else getattr(current, field, None)
        else:
            if changes.get(field) is not None:
                raise _invalid(f"{field} cannot be used with action {action}.")
            value = None  # switching away from an action clears its field
        out[field] = value
    if needed and not out[needed]:
        raise _invalid(f"{needed} must not be None for action {action}.")
    code = changes.get("redirect_http_code")
    if action in CODED_ACTIONS:
        if code is None:
            keep = (
                current is not None
                and current.action in CODED_ACTIONS
                and "redirect_http_code" not in changes
            )
            code = (current.redirect_http_code if keep and current else None) or (
                c.DEFAULT_REDIRECT_HTTP_CODE
            )
    elif code is not None:
        raise _invalid(f"redirect_http_code cannot be used with action {action}.")
    out["redirect_http_code"] = code
    return out


def _check_listener(listener: Listener) -> None:
    refuse_children(listener.protocol)
    if listener.protocol not in L7_LISTENER_PROTOCOLS:
        raise BadRequest(
            f"Validation failure: L7 policies are only supported on "
            f"{' and '.join(L7_LISTENER_PROTOCOLS)} listeners, not {listener.protocol}."
        )


def _check_redirect_pool(
    session: Session, ctx: RequestContext, listener: Listener, pool_id: str
) -> None:
    pool = ctx.get(session, Pool, pool_id, "Pool")
    if pool.load_balancer_id != listener.load_balancer_id:
        # Octavia answers a pool of another load balancer as not found.
        raise NotFound.resource("Pool", pool_id)
    changes.refuse_if_deleting(pool, "Pool")
    check_pool_protocol(listener.protocol, pool.protocol)


# --- positions ---------------------------------------------------------------------------


def _live_policies(session: Session, listener_id: str, exclude: str | None) -> list[L7Policy]:
    stmt = select(L7Policy).where(
        L7Policy.listener_id == listener_id,
        L7Policy.provisioning_status != c.PENDING_DELETE,
    )
    if exclude is not None:
        stmt = stmt.where(L7Policy.id != exclude)
    return list(session.scalars(stmt.order_by(L7Policy.position, L7Policy.created_at, L7Policy.id)))


def _place(session: Session, policy: L7Policy, position: int | None) -> None:
    """Put `policy` at `position` (None: last) and renumber the listener's policies 1..n."""
    others = _live_policies(session, policy.listener_id, exclude=policy.id)
    index = len(others) if position is None else min(position - 1, len(others))
    others.insert(index, policy)
    _renumber(others)


def _renumber(policies: list[L7Policy]) -> None:
    for number, policy in enumerate(policies, start=MIN_POSITION):
        if policy.position != number:
            policy.position = number


# --- creation, shared with the fully populated LB create ---------------------------------


def add_l7policy(
    request: Request, change: Change, listener: Listener, body: L7PolicyCreate
) -> L7Policy:
    """Validate and add a policy (with its inline rules) to `listener` (of the change's LB).

    Nothing is created when a check fails, so the caller's rollback leaves no trace.
    """
    session = change.session
    _check_listener(listener)
    sent = body.model_dump(include={"action", *TARGET_FIELDS, "redirect_http_code"})
    redirect = resolve_action({k: v for k, v in sent.items() if v is not None}, None)
    if redirect["redirect_pool_id"]:
        _check_redirect_pool(session, change.ctx, listener, redirect["redirect_pool_id"])
    policy_id = new_id()
    rules = body.rules or []
    if len(rules) > c.MAX_L7RULES_PER_POLICY:
        raise Conflict(f"Too many rules on L7 policy {policy_id}")
    # Check every rule before creating anything, so that the first error is the answer.
    for rule in rules:
        l7rules.check_rule(rule.type, rule.compare_type, rule.key, rule.value)
    common.check_quota(request, session, listener.project_id, "l7policy")
    if rules:
        common.check_quota(request, session, listener.project_id, "l7rule", adding=len(rules))
    policy = L7Policy(
        id=policy_id,
        project_id=listener.project_id,
        listener_id=listener.id,
        load_balancer_id=listener.load_balancer_id,
        name=body.name or "",
        description=body.description or "",
        admin_state_up=body.admin_state_up,
        position=MAX_POSITION,
        tags=list(body.tags),
        provisioning_status=c.PENDING_CREATE,
        operating_status=c.OFFLINE,
        **redirect,
    )
    # Placed before it is added, so that a new policy has no updated_at (as in Octavia).
    _place(session, policy, body.position)
    session.add(policy)
    session.flush()
    for rule in rules:
        l7rules.add_l7rule(request, change, policy, rule)
    change.created(policy)
    return policy


# --- routes ----------------------------------------------------------------------------


@router.post("", status_code=201, response_model=None, responses=L7POLICIES.answered(201))
def create_l7policy(
    payload: L7PolicyCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> dict[str, Any]:
    body = payload.l7policy
    if not body.listener_id:
        raise BadRequest("Mandatory field missing: listener_id.")
    change, listener = changes.edit(session, ctx, LISTENERS, body.listener_id)
    policy = add_l7policy(request, change, listener, body)
    session.flush()
    answer = L7POLICIES.show(session, ctx, policy.id)
    idempotency.commit(session, keyed, answer)
    return answer


@router.put("/{l7policy_id}", response_model=None, responses=L7POLICIES.answered(200))
def update_l7policy(
    l7policy_id: str,
    payload: L7PolicyUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    change, policy = changes.edit(session, ctx, L7POLICIES, l7policy_id)
    listener = session.get(Listener, policy.listener_id)
    assert listener is not None
    given = payload.l7policy.model_dump(exclude_unset=True)
    for name in ("action", "admin_state_up", "tags"):
        if name in given and given[name] is None:
            raise BadRequest(f"Invalid input for field/attribute {name}. Value: 'None'.")
    redirect = resolve_action(given, policy)
    # A pool kept from before was checked when it was set.
    if redirect["redirect_pool_id"] and redirect["redirect_pool_id"] != policy.redirect_pool_id:
        _check_redirect_pool(session, ctx, listener, redirect["redirect_pool_id"])
    position = given.pop("position", None)
    for name in ("name", "description"):
        if name in given:
            given[name] = given[name] or ""
    for name in ("name", "description", "admin_state_up", "tags"):
        if name in given:
            setattr(policy, name, given[name])
    for name, value in redirect.items():
        setattr(policy, name, value)
    if position is not None and position != policy.position:
        _place(session, policy, position)
    change.updated(policy)
    session.flush()
    answer = L7POLICIES.show(session, ctx, l7policy_id)
    session.commit()
    return answer
