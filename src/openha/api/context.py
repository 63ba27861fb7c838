"""Who is calling: authentication, roles, and the one place where tenant scoping is applied.

Every route reaches the database through `RequestContext.visible()` /
`RequestContext.get()`, so a project can never read or touch another's
objects; admins see everything and may filter by `project_id`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Depends, Request, Security
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from openha.api import dryrun
from openha.api.errors import BadRequest, NotFound, PolicyForbidden, Unauthorized
from openha.api.openapi import TOKEN
from openha.credentials import hash_token
from openha.domain.constants import ROLE_ADMIN, ROLE_MEMBER
from openha.models import Token, utcnow

T = TypeVar("T")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Where the authenticated caller is left in the request's scope.
CALLER = "openha.caller"


@dataclass(frozen=True)
class RequestContext:
    project_id: str | None
    roles: frozenset[str]
    token_id: str | None = None  # who, for the audit trail (None without tokens)

    @property
    def is_admin(self) -> bool:
        return ROLE_ADMIN in self.roles

    @property
    def can_write(self) -> bool:
        return self.is_admin or ROLE_MEMBER in self.roles

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PolicyForbidden()

    def visible(self, model: type[T], stmt: Select[Any] | None = None) -> Select[Any]:
        """A SELECT of `model` narrowed to what this caller may see."""
        stmt = select(model) if stmt is None else stmt
        if not self.is_admin:
            stmt = stmt.where(model.project_id == self.project_id)  # type: ignore[attr-defined]
        return stmt

    def get(self, session: Session, model: type[T], ident: str, label: str) -> T:
        """Fetch one object by id, or 404 as if it did not exist when it is not the caller's."""
        obj = session.get(model, ident)
        if obj is None or (
            not self.is_admin and getattr(obj, "project_id", None) != self.project_id
        ):
            raise NotFound.resource(label, ident)
        return obj

    def owner_project(self, requested: str | None) -> str:
        """The project a new object belongs to: the caller's, or any for an admin."""
        if requested and requested != self.project_id and not self.is_admin:
            raise PolicyForbidden()
        project = requested or self.project_id
        if not project:
            raise BadRequest("project_id is required.")
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


def _authenticate(request: Request, session: Session) -> RequestContext:
    settings = request.app.state.settings
    if settings.auth == "noauth":
        project = request.headers.get("X-Project-Id")
        roles_header = request.headers.get("X-Roles")
        if roles_header:
            roles = {r.strip() for r in roles_header.split(",") if r.strip()}
        else:
            roles = {ROLE_MEMBER} if project else {ROLE_ADMIN}
        return RequestContext(project_id=project, roles=frozenset(roles))
    secret = request.headers.get("X-Auth-Token")
    if not secret:
        raise Unauthorized("Authentication required: send an X-Auth-Token header.")
    token = session.scalar(select(Token).where(Token.token_hash == hash_token(secret)))
    if token is None or (token.expires_at is not None and token.expires_at < utcnow()):
        raise Unauthorized("The token is invalid or has expired.")
    return RequestContext(
        project_id=token.project_id, roles=frozenset(token.roles), token_id=token.id
    )


def get_context(
    request: Request,
    session: Session = Depends(get_session),
    _token: str | None = Security(TOKEN),
) -> RequestContext:
    """Authenticate, and refuse writes to callers with read-only roles.

    `_token` only declares the credential in the API's description: it is read here."""
    ctx = _authenticate(request, session)
    request.scope[CALLER] = ctx  # for the audit trail (`openha.api.audit`)
    if request.method not in READ_METHODS and not ctx.can_write:
        raise PolicyForbidden()
    return ctx


def get_admin_context(ctx: RequestContext = Depends(get_context)) -> RequestContext:
    ctx.require_admin()
    return ctx
