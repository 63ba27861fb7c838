"""The resource table: one declaration per resource drives its list, show and delete routes.

Every resource the API serves (the load balancer tree, the flavor and availability
zone catalogues, networks, subnets and ports, hosts, instances, events, amphorae)
is one `Resource` entry in its own module. `Resource.router()` turns the entry into

    GET    <path>         list: filters, tags, sorting, pagination, `fields` (api.query)
    GET    <path>/{id}    show: {"<singular>": {...}}
    DELETE <path>/{id}    when the entry has a delete rule

and `Resource.show()` is the answer of its create and update handlers, which stay
explicit: that is where each resource's own rules live.

Adding a resource kind
----------------------
1. Its model in `openha.models` (and a migration).
2. Its view: an `openha.api.views.View` listing the fields it answers with.
3. Its entry, in its module, and the router the entry gives::

       THINGS = Resource(
           model=Thing, path="/things", singular="thing", plural="things",
           label="Thing", view=ThingView, delete=changes.deleting(),
       )
       router = THINGS.router()

   plus whatever differs from the defaults of `Kind` and `Resource` below: extra
   filter names (`aliases`, or `filters` for those that are no column), eager loads
   (`options`), who sees what (`scope`), a parent in the path
   (`parent=Parent("pool_id", Member.pool_id, POOLS)`), admin-only reads or writes
   (`reader`, `writer`).
4. Its create and update handlers on that router. Objects of a load balancer's
   tree change only through `openha.api.tenant.changes` (`delete=changes.deleting()`
   is their delete rule); other rows use `delete=removing(check)`.
5. The module's name in `openha.api.app` (`LBAAS_MODULES` for Octavia's resources,
   served under both /v2/lbaas and /v2).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, inspect, select
from sqlalchemy.orm import Session

from openha.api import openapi
from openha.api.context import RequestContext, get_context, get_session
from openha.api.errors import BadRequest, NotFound
from openha.api.query import (
    RESERVED,
    UNKNOWN_FILTER,
    list_collection,
    requested_fields,
    select_fields,
)
from openha.api.views import View

Row = TypeVar("Row")
# Deletes one row found by (resource, request, session, caller, id); the route commits.
Deleter = Callable[["Resource[Any]", Request, Session, RequestContext, str], None]


@dataclass(frozen=True, kw_only=True)
class Kind(Generic[Row]):
    """How to find rows of one model the way a caller may see them."""

    model: type[Row]
    label: str  # in messages: "Pool <id> not found."
    scope: Callable[[RequestContext], Select[Any]] | None = None  # default: the caller's project
    match: Callable[[str], ColumnElement[bool]] | None = None  # default: primary key == id
    parent: Parent | None = None
    options: Sequence[Any] = ()  # eager loads
    missing: str = "{label} {id} not found."

    def select(self, ctx: RequestContext) -> Select[Any]:
        """Every row the caller may see."""
        return self.scope(ctx) if self.scope is not None else ctx.visible(self.model)

    def not_found(self, ident: str) -> NotFound:
        return NotFound(self.missing.format(label=self.label, id=ident))

    def clause(self, ident: str) -> ColumnElement[bool]:
        if self.match is not None:
            return self.match(ident)
        return inspect(self.model).primary_key[0] == ident  # type: ignore[no-any-return]

    def missing_error(self, session: Session, ctx: RequestContext, ident: str) -> NotFound:
        """The 404 of a row the caller did not find; 403 instead (raised) when it is
        another project's and the route's rule refuses it that project (Octavia's answer)."""
        if self.scope is None:
            ctx.refuse_foreign(session, self.model, self.clause(ident))
        return self.not_found(ident)

    def parent_id(self, request: Request) -> str | None:
        return request.path_params.get(self.parent.param) if self.parent else None

    def query(
        self, session: Session, ctx: RequestContext, ident: str, parent_id: str | None = None
    ) -> Select[Any]:
        """The row `ident` as the caller sees it (404 when its parent is not visible)."""
        return self.within(session, ctx, self.select(ctx).where(self.clause(ident)), parent_id)

    def within(
        self, session: Session, ctx: RequestContext, stmt: Select[Any], parent_id: str | None
    ) -> Select[Any]:
        """`stmt` narrowed to the parent named in the path (404 when it is not visible)."""
        if self.parent is None:
            return stmt
        assert parent_id is not None, f"{self.label} needs its {self.parent.param}"
        parent = self.parent.kind
        if not session.scalar(parent.query(session, ctx, parent_id).exists().select()):
            raise parent.missing_error(session, ctx, parent_id)
        return stmt.where(self.parent.column == parent_id)

    def find(
        self,
        session: Session,
        ctx: RequestContext,
        ident: str,
        parent_id: str | None = None,
        *,
        fresh: bool = False,
    ) -> Row:
        """The row, with its eager loads; `fresh` re-reads rows this session holds."""
        stmt = self.query(session, ctx, ident, parent_id).options(*self.options)
        if fresh:
            stmt = stmt.execution_options(populate_existing=True)
        row: Row | None = session.scalars(stmt).first()
        if row is None:
            raise self.missing_error(session, ctx, ident)
        return row


@dataclass(frozen=True)
class RelatedIds:
    """Related rows a list answers by id: the related table's column naming the listed
    row, the related row's id, its order; `one` for a single row (or None)."""

    parent: Any
    ident: Any
    order: Sequence[Any] = ()
    one: bool = False


class _Overlay:
    """A row as a view reads it, with some attributes given instead of loaded.

    The row's loaded values are copied in, so that reading them is a plain attribute
    lookup; the model's properties run on the overlay (so they read the given
    attributes), anything else (unloaded attributes) is read from the row.
    """

    def __init__(self, row: Any, extra: dict[str, Any]) -> None:
        self.__dict__.update(row.__dict__)
        self.__dict__.update(extra)
        self.__dict__["_overlaid_row"] = row

    def __getattr__(self, name: str) -> Any:
        row = self.__dict__["_overlaid_row"]
        attr = getattr(type(row), name, None)
        if isinstance(attr, property) and attr.fget is not None:
            return attr.fget(self)
        return getattr(row, name)


class _Ref:
    """A related row known by its id alone; equal to any row with that id."""

    __slots__ = ("id",)

    def __init__(self, ident: str) -> None:
        self.id = ident

    def __eq__(self, other: object) -> bool:
        return getattr(other, "id", None) == self.id

    def __hash__(self) -> int:
        return hash(self.id)


@dataclass(frozen=True)
class Parent:
    """Where a nested resource hangs: the path parameter, the child's column, the parent."""

    param: str
    column: Any
    kind: Kind[Any]


@dataclass(frozen=True, kw_only=True)
class Resource(Kind[Row]):
    path: str
    singular: str  # envelope of one object
    plural: str  # envelope of a list
    view: type[View]
    detail: type[View] | None = None  # what show answers, when it says more than a list item
    aliases: Mapping[str, Any] = field(default_factory=dict)  # filter/sort names -> columns
    narrow: Callable[[Request, Select[Any]], Select[Any]] | None = None  # list-only filters
    # Filters that are no column: name -> the clause for the values given.
    filters: Mapping[str, Callable[[list[str]], ColumnElement[bool]]] = field(default_factory=dict)
    reader: Callable[..., RequestContext] = get_context
    writer: Callable[..., RequestContext] = get_context
    delete: Deleter | None = None
    has_show: bool = True
    links: str | None = None  # the links key, when not "<plural>_links"
    # Octavia's routes refuse an unknown filter (400); Neutron's and ours ignore it.
    unknown_filters: Literal["refuse", "ignore"] = "refuse"
    # Eager loads of a list, when it needs less than a show (see `related_ids`).
    list_options: Sequence[Any] | None = None
    # Relations a list answers by their ids alone, read as ids (`RelatedIds`).
    related_ids: Mapping[str, RelatedIds] = field(default_factory=dict)

    def show(
        self, session: Session, ctx: RequestContext, ident: str, parent_id: str | None = None
    ) -> dict[str, Any]:
        """The answer of a create or update, in its envelope.

        Call it before the commit: once committed, the controller may settle the row
        first, and a create must answer PENDING_CREATE as Octavia does."""
        row = self.find(session, ctx, ident, parent_id, fresh=True)
        return {self.singular: (self.detail or self.view).render(row)}

    # --- routes -------------------------------------------------------------------------

    def listing(self, request: Request, session: Session, ctx: RequestContext) -> dict[str, Any]:
        stmt = self.within(session, ctx, self.select(ctx), self.parent_id(request))
        if self.narrow is not None:
            stmt = self.narrow(request, stmt)
        stmt, unknown_filters = self._filtered(request, stmt)
        options = self.options if self.list_options is None else self.list_options
        out = list_collection(
            request,
            session,
            stmt.options(*options),
            self.model,
            self.plural,
            self.view.render_json,
            self.aliases,
            unknown_filters=unknown_filters,
            marker_scope=self.select(ctx),
            enrich=self._with_related_ids if self.related_ids else None,
        )
        if self.links is not None:
            out[self.links] = out.pop(f"{self.plural}_links")
        return out

    def _with_related_ids(self, session: Session, rows: list[Any]) -> Callable[[Any], Any]:
        """What the view reads of each listed row: the row, with `related_ids` read in one
        query per relation (pairs of ids, no ORM rows: a thousand pools' members loaded as
        rows cost more than the rest of the list)."""
        keys = [row.id for row in rows]
        found: dict[str, dict[str, list[str]]] = {}
        for name, rel in self.related_ids.items():
            by_parent: dict[str, list[str]] = {}
            if keys:
                stmt = select(rel.parent, rel.ident).where(rel.parent.in_(keys))
                for parent, ident in session.execute(stmt.order_by(*rel.order, rel.ident)):
                    by_parent.setdefault(parent, []).append(ident)
            found[name] = by_parent

        def overlay(row: Any) -> Any:
            extra: dict[str, Any] = {}
            for name, rel in self.related_ids.items():
                refs = [_Ref(i) for i in found[name].get(row.id, ())]
                extra[name] = (refs[0] if refs else None) if rel.one else refs
            return _Overlay(row, extra)

        return overlay

    def _filtered(
        self, request: Request, stmt: Select[Any]
    ) -> tuple[Select[Any], Literal["refuse", "ignore"]]:
        """`stmt` narrowed by the filters that are no column, and how the column
        filters are to treat a name they do not know (these ones are known)."""
        params = request.query_params
        given = [name for name in self.filters if name in params]
        if not given:
            return stmt, self.unknown_filters
        for name in given:
            stmt = stmt.where(self.filters[name](params.getlist(name)))
        if self.unknown_filters == "refuse":
            columns = {attr.key for attr in inspect(self.model).column_attrs}
            if set(params) - {*columns, *self.aliases, *self.filters, *RESERVED}:
                raise BadRequest(UNKNOWN_FILTER)
        return stmt, "ignore"

    @cached_property
    def answers(self) -> tuple[type[BaseModel], type[BaseModel]]:
        """The OpenAPI models of (a list answer, a one-object answer)."""
        return openapi.envelopes(self.view, self.detail, self.singular, self.plural, self.links)

    def answered(self, status: int) -> dict[int | str, dict[str, Any]]:
        """`responses=` of a create (201) or update (200) route: the object in its envelope."""
        return {status: {"model": self.answers[1]}}

    def router(self) -> APIRouter:
        """GET list, GET show and (with a delete rule) DELETE for this resource."""
        router = APIRouter(prefix=self.path, tags=[self.plural])
        reader, writer, deleter = self.reader, self.writer, self.delete
        listed, shown = self.answers
        # The parent's id is read from the path by `parent_id`, not as an argument.
        in_path = [openapi.path_parameter(self.parent.param)] if self.parent else []

        @router.get(
            "",
            name=f"list_{self.plural}",
            response_model=None,
            responses={200: {"model": listed}},
            openapi_extra={
                "parameters": in_path + openapi.list_parameters(self.model, dict(self.aliases))
            },
        )
        def list_rows(
            request: Request,
            session: Session = Depends(get_session),
            ctx: RequestContext = Depends(reader),
        ) -> Response:
            # Rendered to JSON's types already: straight out, not through FastAPI's
            # encoder (a third of a thousand-item list's time).
            return JSONResponse(self.listing(request, session, ctx))

        if self.has_show:

            @router.get(
                "/{ident}",
                name=f"show_{self.singular}",
                response_model=None,
                responses={200: {"model": shown}},
                openapi_extra={"parameters": [*in_path, openapi.FIELDS]},
            )
            def show_row(
                ident: str,
                request: Request,
                session: Session = Depends(get_session),
                ctx: RequestContext = Depends(reader),
            ) -> dict[str, Any]:
                row = self.find(session, ctx, ident, self.parent_id(request))
                body = (self.detail or self.view).render(row)
                return {self.singular: select_fields(body, requested_fields(request))}

        if deleter is not None:

            @router.delete(
                "/{ident}",
                status_code=204,
                name=f"delete_{self.singular}",
                response_class=Response,
                openapi_extra={"parameters": in_path} if in_path else None,
            )
            def delete_row(
                ident: str,
                request: Request,
                session: Session = Depends(get_session),
                ctx: RequestContext = Depends(writer),
            ) -> Response:
                deleter(self, request, session, ctx, ident)
                session.commit()
                return Response(status_code=204)

        return router


def removing(check: Callable[[Session, Any], None] | None = None) -> Deleter:
    """The delete rule of rows that go at once; `check` refuses (409) rows still in use."""

    def delete(
        resource: Resource[Any], request: Request, session: Session, ctx: RequestContext, ident: str
    ) -> None:
        row = resource.find(session, ctx, ident, resource.parent_id(request))
        if check is not None:
            check(session, row)
        session.delete(row)

    return delete
