"""/v2/lbaas/l7policies/{l7policy_id}/rules: L7 rules, the conditions of an L7 policy.

Field for field Octavia's L7 rule (envelope `rule`/`rules`), with Octavia's
consistency rules (validate.l7rule_data): which rule types need a `key`, which
refuse one and which ignore it (HOST_NAME, PATH and FILE_TYPE: Octavia clears it
on the rule's first update, OpenHA at once), which compare types each type
accepts, the value grammar per type (`openha.domain.grammar`: Octavia's header
value, cookie value and header name grammars), and at most
`MAX_L7RULES_PER_POLICY` rules per policy (409). Keys and values reach a HAProxy
ACL; they are safe there by how the renderer writes them (one quoted word each),
not by refusing them. Because the right grammar depends on `type` and
`compare_type`, values are typed loosely in the schema and checked by
`check_rule` on the complete (merged, for an update) rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openha.api import idempotency
from openha.api.context import RequestContext, get_context, get_session
from openha.api.errors import BadRequest, Conflict
from openha.api.resources import Kind, Parent, Resource
from openha.api.tenant import changes, common
from openha.api.tenant.changes import Change
from openha.api.types import StrictModel
from openha.api.views import TreeView
from openha.domain import constants as c
from openha.domain import grammar
from openha.domain.grammar import Tags
from openha.models import L7Policy, L7Rule

RuleType = Literal[c.L7RULE_TYPES]  # type: ignore[valid-type]
CompareType = Literal[c.L7RULE_COMPARE_TYPES]  # type: ignore[valid-type]
# Checked by `check_rule` against the grammar the rule's type calls for.
RuleKey = Annotated[str, Field(max_length=255)]
RuleValue = Annotated[str, Field(max_length=255)]

# Rule types that compare a named field (a header, a cookie, a certificate DN field).
KEYED_TYPES = frozenset({"HEADER", "COOKIE", "SSL_DN_FIELD"})
# Rule types that refuse a key; the others (HOST_NAME, PATH, FILE_TYPE) ignore one.
KEYLESS_TYPES = frozenset({"SSL_CONN_HAS_CERT", "SSL_VERIFY_RESULT"})
ALL_COMPARE = frozenset(c.L7RULE_COMPARE_TYPES)
COMPARE_TYPES_FOR: dict[str, frozenset[str]] = {
    "HOST_NAME": ALL_COMPARE,
    "PATH": ALL_COMPARE,
    "HEADER": ALL_COMPARE,
    "COOKIE": ALL_COMPARE,
    "SSL_DN_FIELD": ALL_COMPARE,
    "FILE_TYPE": frozenset({"EQUAL_TO", "REGEX"}),
    "SSL_CONN_HAS_CERT": frozenset({"EQUAL_TO"}),
    "SSL_VERIFY_RESULT": frozenset({"EQUAL_TO"}),
}


class L7RuleSingleCreate(StrictModel):
    """A rule inside another create body (a policy's `rules`, the fully populated LB)."""

    type: RuleType
    compare_type: CompareType
    key: RuleKey | None = None
    value: RuleValue
    invert: bool = False
    admin_state_up: bool = True
    tags: Tags = Field(default_factory=list)


class L7RuleCreate(L7RuleSingleCreate):
    # Deprecated in Octavia and ignored: a rule belongs to its load balancer's project.
    project_id: str | None = None
    tenant_id: str | None = None


class L7RuleCreateBody(StrictModel):
    rule: L7RuleCreate


class L7RuleUpdate(StrictModel):
    type: RuleType | None = None
    compare_type: CompareType | None = None
    key: RuleKey | None = None
    value: RuleValue | None = None
    invert: bool | None = None
    admin_state_up: bool | None = None
    tags: Tags | None = None


class L7RuleUpdateBody(StrictModel):
    rule: L7RuleUpdate


class L7RuleView(TreeView):
    type: str
    compare_type: str
    key: str | None
    value: str
    invert: bool


# The policy a rule hangs under (its own entry is in `l7policies`, which imports this module).
POLICY = Kind(model=L7Policy, label="L7Policy")
L7RULES: Resource[L7Rule] = Resource(
    model=L7Rule,
    path="/l7policies/{l7policy_id}/rules",
    singular="rule",
    plural="rules",
    label="L7Rule",
    view=L7RuleView,
    parent=Parent("l7policy_id", L7Rule.l7policy_id, POLICY),
    delete=changes.deleting(),
)
router = L7RULES.router()


# --- validation ------------------------------------------------------------------------


def _invalid(message: str) -> BadRequest:
    return BadRequest(f"Error parsing L7Rule: {message}")


def _grammar(check: Callable[[str], str], value: str, what: str) -> None:
    try:
        check(value)
    except ValueError as exc:
        raise _invalid(f"Invalid {what} '{value}': {exc}.") from None


def check_rule(rtype: str, compare_type: str, key: str | None, value: str | None) -> None:
    """400 unless the rule is consistent and its strings fit their grammars (Octavia's)."""
    if not value:
        raise _invalid("L7 rule type requires a value.")
    if rtype in KEYED_TYPES and not key:
        raise _invalid(f"L7 rule type {rtype} requires a key.")
    if rtype in KEYLESS_TYPES and key:
        raise _invalid(f'L7rule type {rtype} does not use the "key" field.')
    if key and rtype == "SSL_DN_FIELD":
        _grammar(grammar.check_dn_field, key, "distinguished name field")
    elif key and rtype in KEYED_TYPES:
        _grammar(grammar.check_header_name, key, "key")
    allowed = COMPARE_TYPES_FOR[rtype]
    if compare_type not in allowed:
        raise _invalid(
            f"L7rule type {rtype} only supports the "
            f"{', '.join(sorted(allowed))} compare type{'s' if len(allowed) > 1 else ''}."
        )
    if compare_type == "REGEX":
        _grammar(grammar.check_regex, value, "regular expression")
    elif rtype in ("HOST_NAME", "PATH", "FILE_TYPE", "HEADER"):
        _grammar(grammar.check_header_value, value, "value")
    elif rtype == "COOKIE":
        _grammar(grammar.check_cookie_value, value, "cookie value")
    elif rtype == "SSL_CONN_HAS_CERT":
        if value.lower() != "true":
            raise _invalid(f"L7rule value {value} is not a boolean True string.")
    elif rtype == "SSL_VERIFY_RESULT" and not (value.isascii() and value.isdigit()):
        raise _invalid(f"L7rule type {rtype} needs an integer value, which is >= 0.")
    # Whatever the type, the value must be storable and writable as one HAProxy word.
    _grammar(grammar.check_config_value, value, "value")


def stored_key(rtype: str, key: str | None) -> str | None:
    """The key a rule keeps: none for the types that do not compare a named field."""
    return key if rtype in KEYED_TYPES else None


# --- creation, shared with the policy create and the fully populated LB create ----------


def live_rule_count(session: Session, policy_id: str) -> int:
    """Rules the policy will have once pending deletes are applied."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(L7Rule)
            .where(L7Rule.l7policy_id == policy_id, L7Rule.provisioning_status != c.PENDING_DELETE)
        )
        or 0
    )


def add_l7rule(
    request: Request, change: Change, policy: L7Policy, body: L7RuleSingleCreate
) -> L7Rule:
    """Validate and add one rule to `policy` (of the change's LB)."""
    check_rule(body.type, body.compare_type, body.key, body.value)
    if live_rule_count(change.session, policy.id) >= c.MAX_L7RULES_PER_POLICY:
        raise Conflict(f"Too many rules on L7 policy {policy.id}")
    common.check_quota(request, change.session, policy.project_id, "l7rule")
    rule = L7Rule(
        project_id=policy.project_id,
        l7policy_id=policy.id,
        load_balancer_id=policy.load_balancer_id,
        type=body.type,
        compare_type=body.compare_type,
        key=stored_key(body.type, body.key),
        value=body.value,
        invert=body.invert,
        admin_state_up=body.admin_state_up,
        tags=list(body.tags),
        provisioning_status=c.PENDING_CREATE,
        operating_status=c.OFFLINE,
    )
    change.session.add(rule)
    change.session.flush()
    change.created(rule)
    return rule


# --- routes ----------------------------------------------------------------------------


@router.post("", status_code=201, response_model=None, responses=L7RULES.answered(201))
def create_rule(
    l7policy_id: str,
    payload: L7RuleCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> dict[str, Any]:
    change, policy = changes.edit(session, ctx, POLICY, l7policy_id)
    rule = add_l7rule(request, change, policy, payload.rule)
    session.flush()
    answer = L7RULES.show(session, ctx, rule.id, l7policy_id)
    idempotency.commit(session, keyed, answer)
    return answer


@router.put("/{rule_id}", response_model=None, responses=L7RULES.answered(200))
def update_rule(
    l7policy_id: str,
    rule_id: str,
    payload: L7RuleUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    change, rule = changes.edit(session, ctx, L7RULES, rule_id, l7policy_id)
    given = payload.rule.model_dump(exclude_unset=True)
    for name in ("type", "compare_type", "value", "admin_state_up", "tags"):
        if name in given and given[name] is None:
            raise BadRequest(f"Invalid input for field/attribute {name}. Value: 'None'.")
    if "invert" in given and given["invert"] is None:
        given["invert"] = False  # Octavia resets a null invert to its default
    rtype = given.get("type", rule.type)
    compare_type = given.get("compare_type", rule.compare_type)
    value = given.get("value", rule.value)
    # Octavia checks the rule as it would be, its old key included (switching a HEADER
    # rule to SSL_CONN_HAS_CERT needs `"key": null`), then drops a key the type ignores.
    key = given.get("key", rule.key)
    check_rule(rtype, compare_type, key, value)
    given["key"] = stored_key(rtype, key)
    for name, new in given.items():
        setattr(rule, name, new)
    change.updated(rule)
    session.flush()
    answer = L7RULES.show(session, ctx, rule_id, l7policy_id)
    session.commit()
    return answer
