"""The fully populated load balancer create: a whole tree in one POST, as in Octavia.

`POST /v2/lbaas/loadbalancers` may carry `listeners[]` (each with an optional
`default_pool` and `l7policies[]`, a policy with `rules[]` and an optional
`redirect_pool`) and top-level `pools[]` (each with `members[]` and a
`healthmonitor`). The load balancer handler creates the LB and its VIP, then
calls `create_graph` in the same transaction and answers with the LB's children
in full (Octavia's LoadBalancerFullResponse).

Pools are resolved as Octavia's `_graph_create` does: a nested pool must be
named; one given by its `name` alone refers to a pool fully defined elsewhere in
the request (top-level, or nested in full somewhere else); anything more is a
full definition, created with the others before the listeners. Pool names are
unique within the request. Each object is validated with its resource's own
create schema and helper (`add_listener`, `add_pool`, ...), so the rules are
exactly those of the single-object calls; fields that name a parent or a
reference (`loadbalancer_id`, `listener_id`, `pool_id`, `default_pool_id`,
`redirect_pool_id`) have no meaning inside a tree and are refused. Every error
names where it happened (`listeners[0].l7policies[1].rules[2]: ...`), and since
nothing is committed the handler's rollback leaves no LB, VIP or child behind.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from openha.api.errors import APIError, BadRequest, NotFound, describe_validation_error
from openha.api.tenant import healthmonitors, l7policies, l7rules, listeners, members, pools
from openha.api.tenant.changes import Change
from openha.api.tenant.healthmonitors import HealthMonitorCreate
from openha.api.tenant.l7policies import L7PolicyCreate
from openha.api.tenant.listeners import ListenerCreate
from openha.api.tenant.members import MemberCreate
from openha.api.tenant.pools import PoolCreate
from openha.models import Pool

M = TypeVar("M", bound=BaseModel)


# --- schemas: the resources' own create bodies, plus their children -----------------------


class GraphPool(PoolCreate):
    members: list[MemberCreate] | None = None
    healthmonitor: HealthMonitorCreate | None = None


class GraphL7Policy(L7PolicyCreate):
    # A pool by name, or a full definition: resolved by `create_graph`.
    redirect_pool: dict[str, Any] | None = None


class GraphListener(ListenerCreate):
    # A pool by name, or a full definition: resolved by `create_graph`.
    default_pool: dict[str, Any] | None = None
    l7policies: list[GraphL7Policy] | None = None


# Parent and reference ids that only make sense for single-object creates.
REFUSED: dict[type[BaseModel], tuple[str, ...]] = {
    GraphListener: ("loadbalancer_id", "default_pool_id"),
    GraphPool: ("loadbalancer_id", "listener_id"),
    GraphL7Policy: ("listener_id", "redirect_pool_id"),
    HealthMonitorCreate: ("pool_id",),
}


# --- errors with their place in the tree -----------------------------------------------------


def _place(path: str, loc: Sequence[Any]) -> str:
    out = path
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@contextmanager
def _at(path: str) -> Iterator[None]:
    """Re-raise API errors with `path` in front; a missing referent is a 400 here."""
    try:
        yield
    except APIError as exc:
        status = 400 if isinstance(exc, NotFound) else exc.status_code
        raise APIError(f"{path}: {exc.message}", status_code=status) from None


def _parse(model: type[M], data: Any, path: str) -> M:
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {**err, "loc": ("loadbalancer", _place(path, err.get("loc", ())))}
            for err in exc.errors()
        ]
        raise BadRequest(describe_validation_error(errors)) from None
    _refuse_references(parsed, path)
    return parsed


def _refuse_references(obj: BaseModel, path: str) -> None:
    for field in REFUSED.get(type(obj), ()):
        if getattr(obj, field, None) is not None:
            raise BadRequest(f"Unknown attribute for argument {path}.{field}.")
    if isinstance(obj, GraphPool) and obj.healthmonitor is not None:
        _refuse_references(obj.healthmonitor, f"{path}.healthmonitor")
    if isinstance(obj, GraphListener):
        for i, policy in enumerate(obj.l7policies or []):
            _refuse_references(policy, f"{path}.l7policies[{i}]")


# --- pool resolution ------------------------------------------------------------------------


class _Pools:
    """Full pool definitions (in creation order) and references by name."""

    def __init__(self) -> None:
        self.full: list[tuple[str, GraphPool]] = []
        self.refs: list[tuple[str, str]] = []

    def nested(self, raw: dict[str, Any], path: str) -> str:
        """Record a nested pool (by name or in full); return its name."""
        name = raw.get("name")
        if not name or not isinstance(name, str):
            raise BadRequest(
                f"{path}: Validation failure: Pools must be named when creating a fully "
                "populated loadbalancer."
            )
        if set(raw) == {"name"}:
            self.refs.append((path, name))
        else:
            self.full.append((path, _parse(GraphPool, raw, path)))
        return name

    def check(self) -> None:
        seen: set[str] = set()
        for path, pool in self.full:
            if pool.name:
                if pool.name in seen:
                    raise BadRequest(
                        f"{path}: Validation failure: Pool names must be unique when creating "
                        "a fully populated loadbalancer."
                    )
                seen.add(pool.name)
        for path, name in self.refs:
            if name not in seen:
                raise BadRequest(
                    f"{path}: Validation failure: Pool '{name}' was referenced but no full "
                    "definition was found."
                )


# --- creation ------------------------------------------------------------------------------


def create_graph(
    request: Request,
    change: Change,
    listener_dicts: list[dict[str, Any]],
    pool_dicts: list[dict[str, Any]],
) -> None:
    """Create the change's LB's children (all PENDING_CREATE) in the caller's transaction.

    The LB is new (PENDING_CREATE, flushed, with its VIP) and the caller commits.
    """
    # 1. Validate every body and resolve the pools before creating anything.
    resolved = _Pools()
    for i, raw in enumerate(pool_dicts):
        path = f"pools[{i}]"
        resolved.full.append((path, _parse(GraphPool, raw, path)))
    parsed: list[tuple[str, GraphListener, str | None, list[str | None]]] = []
    for i, raw in enumerate(listener_dicts):
        path = f"listeners[{i}]"
        body = _parse(GraphListener, raw, path)
        default = (
            resolved.nested(body.default_pool, f"{path}.default_pool")
            if body.default_pool is not None
            else None
        )
        redirects: list[str | None] = []
        for j, policy in enumerate(body.l7policies or []):
            ppath = f"{path}.l7policies[{j}]"
            if policy.redirect_pool is None:
                redirects.append(None)
                continue
            if policy.action != "REDIRECT_TO_POOL":
                raise BadRequest(
                    f"{ppath}: Invalid L7 Policy arguments: redirect_pool cannot be used with "
                    f"action {policy.action}."
                )
            redirects.append(resolved.nested(policy.redirect_pool, f"{ppath}.redirect_pool"))
        parsed.append((path, body, default, redirects))
    resolved.check()
    # Rule values are checked up front too, so that a bad one deep inside fails fast.
    for path, body, _, _ in parsed:
        for j, policy in enumerate(body.l7policies or []):
            for k, rule in enumerate(policy.rules or []):
                with _at(f"{path}.l7policies[{j}].rules[{k}]"):
                    l7rules.check_rule(rule.type, rule.compare_type, rule.key, rule.value)

    # 2. Pools first (Octavia's order), with their members and health monitors.
    pool_ids: dict[str, str] = {}
    for path, pool_body in resolved.full:
        pool = _add_pool(request, change, pool_body, path)
        if pool_body.name:
            pool_ids[pool_body.name] = pool.id

    # 3. Listeners, pointing at their default pools, then their L7 policies.
    for path, body, default, redirects in parsed:
        with _at(path):
            single = body.model_copy(
                update={"default_pool_id": pool_ids[default] if default else None}
            )
            listener = listeners.add_listener(request, change, single)
        for j, (policy, redirect) in enumerate(zip(body.l7policies or [], redirects, strict=True)):
            with _at(f"{path}.l7policies[{j}]"):
                single_policy = policy.model_copy(
                    update={"redirect_pool_id": pool_ids[redirect] if redirect else None}
                )
                l7policies.add_l7policy(request, change, listener, single_policy)


def _add_pool(request: Request, change: Change, body: GraphPool, path: str) -> Pool:
    with _at(path):
        pool = pools.add_pool(request, change, body)
    for i, member in enumerate(body.members or []):
        with _at(f"{path}.members[{i}]"):
            members.add_member(request, change, pool, member)
    if body.healthmonitor is not None:
        with _at(f"{path}.healthmonitor"):
            healthmonitors.add_healthmonitor(request, change, pool, body.healthmonitor)
    return pool
