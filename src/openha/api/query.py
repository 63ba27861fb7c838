"""Octavia's list semantics in one place: filters, tags, sorting, pagination, fields."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from sqlalchemy import Boolean, Integer, Select, Text, and_, false, not_, or_, type_coerce
from sqlalchemy.orm import InstrumentedAttribute, Session

from openha.api.errors import BadRequest, NotFound

MAX_LIMIT = 1000
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
            return int(raw)
        except ValueError:
            raise BadRequest(f"Invalid filter value for {column.key}: '{raw}'.") from None
    return raw


def _tag_values(request: Request, key: str) -> list[str]:
    out: list[str] = []
    for raw in request.query_params.getlist(key):
        out.extend(t for t in raw.split(",") if t)
    return out


def _tag_clause(column: InstrumentedAttribute[Any], tag: str) -> Any:
    escaped = tag.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    # type_coerce: compare the stored ",a,b," text, not a TagList-encoded pattern.
    return type_coerce(column, Text).like(f"%,{escaped},%", escape="\\")


def requested_fields(request: Request) -> list[str]:
    fields: list[str] = []
    for raw in request.query_params.getlist("fields"):
        fields.extend(f for f in raw.split(",") if f)
    return fields


def select_fields(item: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k in fields} if fields else item


def parse_sort(
    request: Request,
    allowed: Mapping[str, InstrumentedAttribute[Any]],
    tiebreak: str = "id",
) -> list[tuple[str, bool]]:
    """[(api_key, ascending)], from `sort=k:dir,…` or `sort_key`/`sort_dir`.

    `tiebreak` (the primary key) always ends the order so that markers are unambiguous.
    """
    keys: list[tuple[str, bool]] = []
    params = request.query_params
    if params.get("sort"):
        for part in params["sort"].split(","):
            key, _, direction = part.strip().partition(":")
            keys.append((key, (direction or "asc").lower() != "desc"))
            if direction and direction.lower() not in ("asc", "desc"):
                raise BadRequest(f"Invalid sort direction '{direction}'.")
    else:
        sort_keys = params.getlist("sort_key")
        sort_dirs = params.getlist("sort_dir")
        for i, key in enumerate(sort_keys):
            direction = sort_dirs[i] if i < len(sort_dirs) else "asc"
            if direction.lower() not in ("asc", "desc"):
                raise BadRequest(f"Invalid sort direction '{direction}'.")
            keys.append((key, direction.lower() != "desc"))
    for key, _ in keys:
        if key not in allowed:
            raise BadRequest(f"Invalid sort key '{key}'.")
    if not keys:
        keys = [("created_at", True)] if "created_at" in allowed else []
    if tiebreak not in [k for k, _ in keys]:
        keys.append((tiebreak, True))
    return keys


def list_collection(
    request: Request,
    session: Session,
    stmt: Select[Any],
    model: type[Any],
    collection: str,
    serialize: Callable[[Any], dict[str, Any]],
    aliases: Mapping[str, InstrumentedAttribute[Any]] | None = None,
) -> dict[str, Any]:
    """Run a list request: `stmt` is already scoped to what the caller may see."""
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

    for key in set(params.keys()) - RESERVED:
        column = columns.get(key)
        if column is None:
            continue  # Octavia ignores attributes it cannot filter on
        values = [_coerce(column, v) for v in params.getlist(key)]
        stmt = stmt.where(column == values[0] if len(values) == 1 else column.in_(values))

    tag_col = columns.get("tags")
    if tag_col is not None:
        if tags := _tag_values(request, "tags"):
            stmt = stmt.where(and_(*[_tag_clause(tag_col, t) for t in tags]))
        if tags := _tag_values(request, "tags-any"):
            stmt = stmt.where(or_(*[_tag_clause(tag_col, t) for t in tags]))
        if tags := _tag_values(request, "not-tags"):
            stmt = stmt.where(not_(and_(*[_tag_clause(tag_col, t) for t in tags])))
        if tags := _tag_values(request, "not-tags-any"):
            stmt = stmt.where(not_(or_(*[_tag_clause(tag_col, t) for t in tags])))
    elif any(k in params for k in ("tags", "tags-any")):
        stmt = stmt.where(false())

    sort = parse_sort(request, columns, tiebreak=pk)
    page_reverse = params.get("page_reverse", "false").lower() == "true"
    limit = MAX_LIMIT
    if params.get("limit"):
        try:
            limit = int(params["limit"])
        except ValueError:
            raise BadRequest("limit must be an integer.") from None
        if limit < 0:
            raise BadRequest("limit must be zero or positive.")
        limit = min(limit or MAX_LIMIT, MAX_LIMIT)

    marker_id = params.get("marker")
    if marker_id:
        marker = session.get(model, marker_id)
        if marker is None:
            raise NotFound(f"Marker {marker_id} could not be found.")
        # Keyset pagination: rows strictly after the marker in the sort order.
        clauses = []
        for i, (key, asc) in enumerate(sort):
            forward = asc != page_reverse
            col = columns[key]
            value = getattr(marker, col.key)
            equal = [columns[k] == getattr(marker, columns[k].key) for k, _ in sort[:i]]
            step = col > value if forward else col < value
            clauses.append(and_(*equal, step))
        stmt = stmt.where(or_(*clauses))

    order = []
    for key, asc in sort:
        col = columns[key]
        order.append(col.asc() if asc != page_reverse else col.desc())
    rows = list(session.scalars(stmt.order_by(*order).limit(limit + 1)).unique())
    has_more = len(rows) > limit
    rows = rows[:limit]
    if page_reverse:
        rows.reverse()

    fields = requested_fields(request)
    items = [select_fields(serialize(r), fields) for r in rows]
    markers = [str(getattr(r, pk)) for r in rows]
    links = _links(request, markers, limit, has_more, page_reverse, bool(marker_id))
    return {collection: items, f"{collection}_links": links}


def _links(
    request: Request,
    markers: list[str],
    limit: int,
    has_more: bool,
    page_reverse: bool,
    had_marker: bool,
) -> list[dict[str, str]]:
    if not markers:
        return []
    base = str(request.url.replace(query=""))
    keep = [
        (k, v)
        for k, v in request.query_params.multi_items()
        if k not in ("marker", "limit", "page_reverse")
    ]
    links = []
    more_forward = has_more if not page_reverse else had_marker
    more_backward = had_marker if not page_reverse else has_more
    if more_forward:
        q = [*keep, ("limit", str(limit)), ("marker", markers[-1])]
        links.append({"href": f"{base}?{urlencode(q)}", "rel": "next"})
    if more_backward:
        q = [*keep, ("limit", str(limit)), ("marker", markers[0]), ("page_reverse", "True")]
        links.append({"href": f"{base}?{urlencode(q)}", "rel": "previous"})
    return links
