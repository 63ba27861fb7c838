"""/v2/lbaas/l7policies/{l7policy_id}/rules: L7 rules, the conditions of an L7 policy.

Field for field Octavia's L7 rule (envelope `rule`/`rules`), with Octavia's
consistency rules (validate.l7rule_data): which rule types take a `key`, which
compare types each type accepts, the value grammar per type, and at most
`MAX_L7RULES_PER_POLICY` rules per policy (409). Every key and value ends up in
a HAProxy ACL, so each one is also checked against the strict grammars of
`openha.domain.grammar` (a value is written as one HAProxy word: strong quotes,
quotes and control characters escaped outside them). Because the right grammar
depends on `type` and `compare_type`, values are typed loosely in the schema and checked by
`check_rule` on the complete (merged, for an update) rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openha.api.context import RequestContext, get_context, get_session
from openha.api.errors import BadRequest, Conflict
from openha.api.resources import Kind, Parent, Resource
from openha.api.tenant import changes, common
from openha.api.tenant.changes import Change
from openha.api.types import StrictModel
from openha.api.views import TreeView
from openha.domain import constants as c
from openha.domain import grammar
from openha.domain.grammar import Tag
from openha.models import L7Policy, L7Rule

RuleType = Literal[c.L7RULE_TYPES]  # type: ignore[valid-type]
CompareType = Literal[c.L7RULE_COMPARE_TYPES]  # type: ignore[valid-type]
# Checked by `check_rule` against the grammar the rule's type calls for.
RuleKey = Annotated[str, Field(max_length=255)]
RuleValue = Annotated[str, Field(max_length=255)]

# Rule types that compare a named field (a header, a cookie, a certificate DN field).
KEYED_TYPES = frozenset({"HEADER", "COOKIE", "SSL_DN_FIELD"})
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

# Octavia's RFC 7230 header value (no blank), or the same quoted with double quotes.
_HEADER_VALUE = re.compile(r"^[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\]\\^_`{|}~]+\Z")
_QUOTED_HEADER_VALUE = re.compile(r"^\"[A-Za-z0-9 \t!\"#$%&'()*+,\-./:;<=>?@\[\]\\^_`{|}~]*\"\Z")
# Octavia's RFC 6265 cookie value.
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9!#$%&'()*+\-./:<=>?@\[\]^_`{|}~]+\Z")
# A piece of a host name, for STARTS_WITH / ENDS_WITH / CONTAINS (".example.com", "www.").
_HOST_FRAGMENT = re.compile(r"^[A-Za-z0-9.\-]+$")
# A piece of a URL path, for ENDS_WITH / CONTAINS ("/v1", ".json").
_PATH_FRAGMENT = re.compile(r"^[A-Za-z0-9\-._~!$&()*+,;=:@/%]+$")
# A file extension, with or without its dot.
_FILE_TYPE = re.compile(r"^\.?[A-Za-z0-9_\-+~]+(\.[A-Za-z0-9_\-+~]+)*$")


class L7RuleSingleCreate(StrictModel):
    """A rule inside another create body (a policy's `rules`, the fully populated LB)."""

    type: RuleType
    compare_type: CompareType
    key: RuleKey | None = None
    value: RuleValue
    invert: bool = False
    admin_state_up: bool = True
    tags: list[Tag] = Field(default_factory=list)


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
    tags: list[Tag] | None = None


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


def _pattern(pattern: re.Pattern[str], value: str, what: str) -> None:
    if not pattern.match(value):
        raise _invalid(f"Invalid characters in {what} '{value}'.")


def check_rule(rtype: str, compare_type: str, key: str | None, value: str | None) -> None:
    """400 unless the rule is consistent and every string is safe in a HAProxy ACL."""
    if not value:
        raise _invalid("L7 rule type requires a value.")
    if rtype in KEYED_TYPES:
        if not key:
            raise _invalid(f"L7 rule type {rtype} requires a key.")
        if rtype == "SSL_DN_FIELD":
            if key not in c.DISTINGUISHED_NAME_FIELDS:
                raise _invalid(
                    f"Invalid L7rule distinguished name field '{key}': must be one of "
                    f"{', '.join(c.DISTINGUISHED_NAME_FIELDS)}."
                )
        else:
            _grammar(grammar.check_token, key, "key")
    elif key:
        raise _invalid(f'L7rule type {rtype} does not use the "key" field.')
    allowed = COMPARE_TYPES_FOR[rtype]
    if compare_type not in allowed:
        raise _invalid(
            f"L7rule type {rtype} only supports the "
            f"{', '.join(sorted(allowed))} compare type{'s' if len(allowed) > 1 else ''}."
        )
    if compare_type == "REGEX":
        _grammar(grammar.check_regex, value, "regular expression")
        return
    if rtype == "HOST_NAME":
        if compare_type == "EQUAL_TO":
            _grammar(grammar.check_wildcard_hostname, value, "host name")
        else:
            _pattern(_HOST_FRAGMENT, value, "host name")
    elif rtype == "PATH":
        if compare_type in ("EQUAL_TO", "STARTS_WITH"):
            _grammar(grammar.check_url_path, value, "path")
        else:
            _pattern(_PATH_FRAGMENT, value, "path")
    elif rtype == "FILE_TYPE":
        _pattern(_FILE_TYPE, value, "file type")
    elif rtype == "HEADER":
        if not (_HEADER_VALUE.match(value) or _QUOTED_HEADER_VALUE.match(value)):
            raise _invalid(f"Invalid characters in header value '{value}'.")
    elif rtype == "COOKIE":
        _pattern(_COOKIE_VALUE, value, "cookie value")
    elif rtype == "SSL_CONN_HAS_CERT":
        if value.lower() != "true":
            raise _invalid(f"L7rule value {value} is not a boolean True string.")
    elif rtype == "SSL_VERIFY_RESULT" and not (value.isascii() and value.isdigit()):
        raise _invalid(f"L7rule type {rtype} needs an integer value, which is >= 0.")
    # Whatever the type, the value must be writable as one HAProxy word.
    _grammar(grammar.check_config_value, value, "value")


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
        key=body.key if body.type in KEYED_TYPES else None,
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


@router.post("", status_code=201)
def create_rule(
    l7policy_id: str,
    payload: L7RuleCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    change, policy = changes.edit(session, ctx, POLICY, l7policy_id)
    rule = add_l7rule(request, change, policy, payload.rule)
    session.flush()
    answer = L7RULES.show(session, ctx, rule.id, l7policy_id)
    session.commit()
    return answer


@router.put("/{rule_id}")
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
    # Switching to a type without a key drops the old key, as Octavia does.
    default_key = rule.key if rtype in KEYED_TYPES else None
    key = given.get("key", default_key)
    check_rule(rtype, compare_type, key, value)
    given["key"] = key
    for name, new in given.items():
        setattr(rule, name, new)
    change.updated(rule)
    session.flush()
    answer = L7RULES.show(session, ctx, rule_id, l7policy_id)
    session.commit()
    return answer
