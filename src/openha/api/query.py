"""Octavia's list semantics in one place: filters, tags, sorting, pagination, fields."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

from fastapi import Request
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Integer,
    Select,
    Text,
    and_,
    false,
    literal,
    not_,
    or_,
    type_coerce,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from openha.api import versions
from openha.api.errors import BadRequest, RoutingError
from openha.models import TagList

MAX_LIMIT = 1000  # Octavia's default pagination_max_limit
# What an integer column can hold (PostgreSQL's BIGINT, SQLite's INTEGER): a filter
# beyond it matches nothing, but the database driver refuses it, so it is a 400.
MIN_INTEGER, MAX_INTEGER = -(2**63), 2**63 - 1
UNKNOWN_FILTER = "One or more arguments are either duplicate or invalid"
RESERVED = frozenset(
    {
        "limit",
        "marker",
        "page_reverse",
        "sort",
        "sort_key",
        "sort_dir",
        "fields",
        "tags",
        "tags-any",
        "not-tags",
        "not-tags-any",
    }
)


def _coerce(column: InstrumentedAttribute[Any], raw: str) -> Any:
    col_type = column.property.columns[0].type
    if isinstance(col_type, Boolean):
        lowered = raw.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise BadRequest(f"Invalid filter value for {column.key}: '{raw}'.")
    if isinstance(col_type, Integer):
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not MIN_INTEGER <= value <= MAX_INTEGER:
            raise BadRequest(f"Invalid filter value for {column.key}: '{raw}'.")
        return value
    return raw


def _tag_values(request: Request, key: str) -> list[str]:
    out: list[str] = []
    for raw in request.query_params.getlist(key):
        out.extend(t for t in raw.split(",") if t)
    return out


def tag_clause(column: InstrumentedAttribute[Any], tag: str) -> Any:
    stored = TagList.encode_tag(tag)
    escaped = stored.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    # type_coerce: compare the stored ",a,b," text, not a TagList-encoded pattern.
    return type_coerce(column, Text).like(f"%,{escaped},%", escape="\\")


def requested_fields(request: Request) -> list[str]:
    fields: list[str] = []
    for raw in request.query_params.getlist("fields"):
        fields.extend(f for f in raw.split(",") if f)
    return fields


def select_fields(item: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k in fields} if fields else item


def _direction(raw: str) -> bool:
    """True for ascending; Octavia's hook refuses anything but asc/desc, in WebOb's shape."""
    direction = raw.lower()
    if direction not in ("asc", "desc"):
        raise RoutingError(f"Supplied sort direction '{direction}' is not valid.")
    return direction == "asc"


def parse_sort(
    request: Request,
    allowed: Mapping[str, InstrumentedAttribute[Any]],
    tiebreak: str = "id",
) -> list[tuple[str, bool]]:
    """[(api_key, ascending)], from `sort=k[:dir],…` or `sort_key=k,…&sort_dir=d,…`.

    As Octavia's PaginationHelper: `created_at` then `id` follow the requested keys
    (ascending); `tiebreak`, the primary key, always ends the order so that markers
    are unambiguous for rows keyed otherwise.
    """
    keys: list[tuple[str, bool]] = []
    params = request.query_params
    if params.get("sort"):
        for part in params["sort"].split(","):
            key, *direction = part.strip().split(":")
            if len(direction) > 1:
                raise BadRequest(f"Supplied sort key '{part}' is not valid.")
            keys.append((key, _direction(direction[0]) if direction else True))
    else:
        sort_keys = [k for raw in params.getlist("sort_key") for k in raw.split(",")]
        sort_dirs = [d for raw in params.getlist("sort_dir") for d in raw.split(",")]
        for i, key in enumerate(sort_keys):
            keys.append((key, _direction(sort_dirs[i]) if i < len(sort_dirs) else True))
    for key, _ in keys:
        if key not in allowed:
            raise BadRequest(f"Supplied sort key '{key}' is not valid.")
    for key in ("created_at", "id", tiebreak):
        if key in allowed and key not in [k for k, _ in keys]:
            keys.append((key, True))
    return keys


def parse_limit(request: Request) -> int:
    """Octavia's limit: absent, `infinite` or below 1 means no limit (here MAX_LIMIT)."""
    raw = request.query_params.get("limit")
    if raw is None or raw == "infinite":
        return MAX_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise RoutingError(f"Supplied pagination limit '{raw}' is not valid.") from None
    return MAX_LIMIT if limit < 1 else min(limit, MAX_LIMIT)


def list_collection(
    request: Request,
    session: Session,
    stmt: Select[Any],
    model: type[Any],
    collection: str,
    serialize: Callable[[Any], dict[str, Any]],
    aliases: Mapping[str, InstrumentedAttribute[Any]] | None = None,
    *,
    unknown_filters: Literal["refuse", "ignore"] = "refuse",
    marker_scope: Select[Any] | None = None,
    enrich: Callable[[Session, list[Any]], Callable[[Any], Any]] | None = None,
) -> dict[str, Any]:
    """Run a list request: `stmt` is already scoped to what the caller may see.

    The marker is looked up in `marker_scope` (default: `stmt` before the query's
    filters), the rows the caller may see: as Octavia, a marker need not match the
    filters, but unlike Octavia it must be visible to the caller.

    Octavia refuses a filter it does not know (PaginationHelper, enforce_valid_params);
    `unknown_filters="ignore"` is for routes that apply some filters of their own
    (Neutron's `status` and `fixed_ips` on networks and ports) and leave the rest here.
    `enrich(session, rows)` gives what `serialize` reads of each row (default: the row).
    """
    columns: dict[str, InstrumentedAttribute[Any]] = {
        attr.key: attr
        for attr in model.__mapper__.all_orm_descriptors
        if isinstance(attr, InstrumentedAttribute) and hasattr(attr.property, "columns")
    }
    columns.update(aliases or {})
    # Most rows are keyed by "id"; catalogue rows are not (quotas by project_id,
    # availability zones by name): sort ties and markers use the real primary key.
    mapper = model.__mapper__
    pk = mapper.get_property_by_column(mapper.primary_key[0]).key
    params = request.query_params
    scoped = stmt

    sort = parse_sort(request, columns, tiebreak=pk)
    limit = parse_limit(request)
    for key in set(params.keys()) - RESERVED:
        column = columns.get(key)
        if column is None:
            if unknown_filters == "refuse":
                raise BadRequest(UNKNOWN_FILTER)
            continue
        values = [_coerce(column, v) for v in params.getlist(key)]
        stmt = stmt.where(column == values[0] if len(values) == 1 else column.in_(values))

    tag_col = columns.get("tags")
    if tag_col is not None:
        if tags := _tag_values(request, "tags"):
            stmt = stmt.where(and_(*[tag_clause(tag_col, t) for t in tags]))
        if tags := _tag_values(request, "tags-any"):
            stmt = stmt.where(or_(*[tag_clause(tag_col, t) for t in tags]))
        if tags := _tag_values(request, "not-tags"):
            stmt = stmt.where(not_(and_(*[tag_clause(tag_col, t) for t in tags])))
        if tags := _tag_values(request, "not-tags-any"):
            stmt = stmt.where(not_(or_(*[tag_clause(tag_col, t) for t in tags])))
    elif any(k in params for k in ("tags", "tags-any")):
        stmt = stmt.where(false())

    page_reverse = params.get("page_reverse", "false").lower() == "true"
    marker_id = params.get("marker")
    if marker_id:
        # Looked up among the rows the caller may see, so that another project's id
        # is as unknown as an id that does not exist.
        marker = session.scalars(
            (marker_scope if marker_scope is not None else scoped)
            .where(mapper.primary_key[0] == marker_id)
            .limit(1)
        ).first()
        if marker is None:
            raise BadRequest(f"Supplied pagination marker '{marker_id}' is not valid.")
        # Keyset pagination: rows strictly after the marker in the sort order.
        clauses = []
        for i, (key, asc) in enumerate(sort):
            col = columns[key]
            equal = [_same(columns[k], getattr(marker, columns[k].key)) for k, _ in sort[:i]]
            step = _beyond(col, getattr(marker, col.key), forward=asc != page_reverse)
            clauses.append(and_(*equal, step))
        stmt = stmt.where(or_(*clauses))

    order = []
    for key, asc in sort:
        col = columns[key]
        # NULL sorts lowest on every database (SQLite's default), as `_beyond` assumes.
        order.append(col.asc().nulls_first() if asc != page_reverse else col.desc().nulls_last())
    rows = list(session.scalars(stmt.order_by(*order).limit(limit)).unique())
    if page_reverse:
        rows.reverse()

    fields = requested_fields(request)
    view = enrich(session, rows) if enrich is not None else (lambda row: row)
    items = [select_fields(serialize(view(r)), fields) for r in rows]
    markers = [str(getattr(r, pk)) for r in rows]
    return {collection: items, f"{collection}_links": _links(request, markers, limit)}


def _same(column: InstrumentedAttribute[Any], value: Any) -> ColumnElement[bool]:
    """`column` equals the marker's value, NULL included."""
    return column.is_(None) if value is None else column == literal(value, column.type)


def _beyond(column: InstrumentedAttribute[Any], value: Any, *, forward: bool) -> Any:
    """`column` comes strictly after the marker's value (NULL lowest): booleans compare as
    booleans, and a NULL marker value neither fails nor matches everything."""
    if value is None:
        return column.is_not(None) if forward else false()
    bound = literal(value, column.type)
    return column > bound if forward else or_(column < bound, column.is_(None))


def _links(request: Request, markers: list[str], limit: int) -> list[dict[str, str]]:
    """Octavia's links (PaginationHelper._make_links): `previous` when the request had a
    marker, `next` when the page is full, parameters in Octavia's order.

    Octavia carries only limit, sort and sort_key over, so that following its link
    loses sort_dir and the filters; here those are carried over too (after
    Octavia's), so that the next page is the next page of the same list. `fields`
    only shapes the items and is dropped, as in Octavia.
    """
    if not markers:
        return []
    base = f"{versions.base_url(request)}{request.url.path}?"
    params = request.query_params
    carried = [f"limit={limit}"]
    for key in ("sort", "sort_key"):
        if params.get(key):
            carried.append(f"{key}={quote(params[key], safe=':,')}")
    dropped = {"limit", "sort", "sort_key", "marker", "page_reverse", "fields"}
    carried += [
        f"{quote(k)}={quote(v, safe=':,')}" for k, v in params.multi_items() if k not in dropped
    ]
    links = []
    if params.get("marker"):
        previous = [*carried, f"marker={quote(markers[0])}", "page_reverse=True"]
        links.append({"href": base + "&".join(previous), "rel": "previous"})
    if len(markers) >= limit:
        following = [*carried, f"marker={quote(markers[-1])}"]
        links.append({"href": base + "&".join(following), "rel": "next"})
    return links
