"""Who is calling: authentication, the route's policy rule, and tenant scoping in one place.

Every route reaches the database through `RequestContext.visible()` /
`RequestContext.get()` (or `openha.api.resources.Kind`, which uses them), so a
project never reads or touches another's objects. What a caller may do is the
route's rule in `openha.api.policy` (Octavia's policy): checked on the caller's
own project before the route runs, and on an object's project when the route
finds one of another project (403, as Octavia answers).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from fastapi import Depends, Request, Security
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from openha.api import dryrun
from openha.api.errors import BadRequest, NotFound, PolicyForbidden, Unauthorized
from openha.api.openapi import TOKEN
from openha.api.policy import Policy, rule_for
from openha.api.policy_defaults import API
from openha.credentials import hash_token
from openha.domain.constants import ROLE_ADMIN, ROLE_MEMBER
from openha.models import Token, utcnow

T = TypeVar("T")

OCTAVIA_RULES = f"{API}:"
# A project no caller belongs to: "may this caller act on anybody's objects?"
_STRANGER = "\x00another-project"
# Where the authenticated caller is left in the request's scope (for the audit trail).
CALLER = "openha.caller"


@dataclass(frozen=True)
class Identity:
    """What authentication proved: the project, roles and user of a caller."""

    project_id: str | None
    roles: frozenset[str]
    user_id: str | None = None
    token_id: str | None = None  # OpenHA's own token (None with Keystone)


@dataclass(frozen=True)
class RequestContext:
    project_id: str | None
    roles: frozenset[str]
    rule: str
    policy: Policy = field(repr=False, compare=False)
    user_id: str | None = None
    creds: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    token_id: str | None = None  # who, for the audit trail (None without OpenHA tokens)

    @classmethod
    def of(cls, identity: Identity, rule: str, policy: Policy) -> RequestContext:
        creds = policy.credentials(identity.project_id, identity.roles, identity.user_id)
        return cls(
            identity.project_id,
            identity.roles,
            rule,
            policy,
            identity.user_id,
            creds,
            identity.token_id,
        )

    @property
    def is_admin(self) -> bool:
        """Octavia's `context_is_admin`."""
        return bool(self.creds.get("is_admin"))

    def allowed(self, project_id: str | None, rule: str | None = None) -> bool:
        """May the caller apply `rule` (the route's by default) to `project_id`'s objects?"""
        return self.policy.allowed(rule or self.rule, project_id, self.creds)

    def authorize(self, project_id: str | None, rule: str | None = None) -> None:
        if not self.allowed(project_id, rule):
            raise PolicyForbidden()

    @cached_property
    def sees_all(self) -> bool:
        """Whether the route shows every project's objects to this caller (global
        readers and admins for lists; for one object, whoever may act on a stranger's)."""
        wide = self.policy.global_rule(self.rule)
        return self.allowed(_STRANGER, wide) if wide else self.allowed(_STRANGER)

    def visible(self, model: type[T], stmt: Select[Any] | None = None) -> Select[Any]:
        """A SELECT of `model` narrowed to what this caller may see."""
        stmt = select(model) if stmt is None else stmt
        if not self.sees_all:
            stmt = stmt.where(model.project_id == self.project_id)  # type: ignore[attr-defined]
        return stmt

    def refuse_foreign(self, session: Session, model: type[Any], clause: Any) -> None:
        """After a miss on an Octavia route: 403 when the object exists in a project the
        rule refuses (Neutron-like routes keep Neutron's 404)."""
        project = getattr(model, "project_id", None)
        if project is None or not self.rule.startswith(OCTAVIA_RULES):
            return
        found = session.execute(select(project).where(clause).limit(1)).first()
        if found is not None:
            self.authorize(found[0])

    def get(self, session: Session, model: type[T], ident: str, label: str) -> T:
        """Fetch one object by id: 404 when it does not exist, 403 when it is not the
        caller's to use."""
        obj = session.get(model, ident)
        if obj is None:
            raise NotFound.resource(label, ident)
        project = getattr(obj, "project_id", None)
        if project != self.project_id and not self.sees_all:
            self.authorize(project)
        return obj

    def owner_project(self, requested: str | None) -> str:
        """The project a new object belongs to: the caller's, or any the rule allows."""
        project = requested or self.project_id
        if not project:
            raise BadRequest("project_id is required.")
        if project != self.project_id:
            self.authorize(project)
        return project


def get_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.session_factory()
    dry = request.scope.get(dryrun.SCOPE_KEY)
    if dry is not None:
        dryrun.bind(session, dry)  # `?dry_run=true`: its commit renders and rolls back
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def _authenticate(request: Request, session: Session) -> Identity:
    settings = request.app.state.settings
    if settings.auth == "keystone":
        identity: Identity = request.app.state.keystone.authenticate(request.headers)
        return identity
    if settings.auth == "noauth":
        project = request.headers.get("X-Project-Id")
        roles_header = request.headers.get("X-Roles")
        if roles_header:
            roles = {r.strip() for r in roles_header.split(",") if r.strip()}
        else:
            roles = {ROLE_MEMBER} if project else {ROLE_ADMIN}
        return Identity(project_id=project, roles=frozenset(roles))
    secret = request.headers.get("X-Auth-Token")
    if not secret:
        raise Unauthorized("Authentication required: send an X-Auth-Token header.")
    token = session.scalar(select(Token).where(Token.token_hash == hash_token(secret)))
    if token is None or (token.expires_at is not None and token.expires_at < utcnow()):
        raise Unauthorized("The token is invalid or has expired.")
    return Identity(project_id=token.project_id, roles=frozenset(token.roles), token_id=token.id)


def _route_rule(request: Request) -> str:
    """The rule of the route serving `request`, found from its path template (the path
    with each path parameter's segment named back)."""
    names = {str(value): name for name, value in request.path_params.items()}
    segments = [f"{{{names[s]}}}" if s in names else s for s in request.url.path.split("/")]
    return rule_for(request.method, "/".join(segments))


def get_context(
    request: Request,
    session: Session = Depends(get_session),
    _token: str | None = Security(TOKEN),
) -> RequestContext:
    """Authenticate, and apply the route's rule to the caller's own project (403 for
    a caller with no role that the rule accepts, reads included).

    `_token` only declares the credential in the API's description: it is read here."""
    identity = _authenticate(request, session)
    ctx = RequestContext.of(identity, _route_rule(request), request.app.state.policy)
    request.scope[CALLER] = ctx  # for the audit trail (`openha.api.audit`), refused or not
    if not ctx.allowed(ctx.project_id) and not ctx.sees_all:
        raise PolicyForbidden()
    return ctx


def get_admin_context(ctx: RequestContext = Depends(get_context)) -> RequestContext:
    """For routes whose rule in `openha.api.policy` is an operator's one: kept as the
    explicit marker of an admin-only route (the rule itself is what decides)."""
    return ctx
