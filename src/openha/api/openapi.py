"""What `/openapi.json` says about the API, kept true to what it answers.

Clients and the fuzz (`tests/api/test_fuzz.py`) read the document, so it declares
what the routes really do: the credentials they take (security schemes, which
also run as no-op dependencies), the error bodies and statuses (400, never
FastAPI's 422), the query parameters of every list, and the envelopes of list
and show answers. None of it changes an answer: parameters are declared, not
parsed here (`openha.api.query` parses them, with Octavia's messages), and
response models are documentation (`responses=`), not filters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, create_model
from sqlalchemy import Boolean, Integer
from sqlalchemy.orm import InstrumentedAttribute

from openha.api.query import MAX_INTEGER, MIN_INTEGER, RESERVED

# Credentials, as security schemes. auto_error=False: the dependencies that use them
# (`api.context`, `api.agents`, `metrics`) decide and answer in Octavia's shapes.
TOKEN = APIKeyHeader(name="X-Auth-Token", scheme_name="token", auto_error=False)
AGENT_BEARER = HTTPBearer(
    scheme_name="agent", description="An agent's host credential.", auto_error=False
)
SCRAPE_BEARER = HTTPBearer(
    scheme_name="scrape", description="The /metrics scrape credential.", auto_error=False
)


class Fault(BaseModel):
    """What a controller refuses (WSME's shape)."""

    faultcode: str
    faultstring: str
    debuginfo: Any = None


class RoutingFault(BaseModel):
    """What is refused before a controller runs (WebOb's shape)."""

    code: int
    title: str
    description: str | None


def _error(description: str) -> dict[str, Any]:
    return {"model": Fault | RoutingFault, "description": description}


# Every route that takes input may refuse it; every one behind a credential may
# answer 401/403; every one naming an object 404; writes 409. "default" is any
# other failure, in the same shapes (and keeps FastAPI from declaring a 422).
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Invalid input: a body, a path or a query parameter"),
    401: _error("No credential, or an invalid one"),
    403: _error("The caller's role does not allow it"),
    404: _error("No such object (or not the caller's), or no such route"),
    405: _error("The route does not take this method"),
    409: _error("Conflicts with the current state"),
    "default": _error("Unexpected error"),
}


def _filter_schema(column: InstrumentedAttribute[Any]) -> dict[str, Any]:
    col_type = column.property.columns[0].type
    if isinstance(col_type, Boolean):
        return {"type": "boolean"}
    if isinstance(col_type, Integer):
        return {"type": "integer", "minimum": MIN_INTEGER, "maximum": MAX_INTEGER}
    return {"type": "string"}


def _param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def query_parameter(name: str, description: str) -> dict[str, Any]:
    return _param(name, {"type": "string"}, description)


def path_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


FIELDS = _param(
    "fields",
    {"type": "array", "items": {"type": "string"}},
    "Answer only these attributes (repeated or comma-separated)",
)


def list_parameters(
    model: type[Any], aliases: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The query parameters of a list of `model` (`api.query.list_collection` reads them)."""
    columns: dict[str, InstrumentedAttribute[Any]] = {
        attr.key: attr
        for attr in model.__mapper__.all_orm_descriptors
        if isinstance(attr, InstrumentedAttribute) and hasattr(attr.property, "columns")
    }
    columns.update(aliases or {})
    strings = {"type": "string"}
    params = [
        _param(
            "limit",
            {"anyOf": [{"type": "integer"}, {"type": "string", "enum": ["infinite"]}]},
            "Page size (at most 1000; below 1 or `infinite`: 1000)",
        ),
        _param("marker", strings, "Id of the last object of the previous page"),
        _param("page_reverse", {"type": "boolean"}, "The page before the marker"),
        _param("sort", strings, "`key[:asc|desc],...`"),
        _param("sort_key", strings, "Sort keys, comma-separated"),
        _param("sort_dir", strings, "`asc` or `desc` per sort key, comma-separated"),
        FIELDS,
    ]
    if "tags" in columns:
        for name in ("tags", "tags-any", "not-tags", "not-tags-any"):
            params.append(_param(name, strings, "Tags, comma-separated"))
    for name, column in sorted(columns.items()):
        if name in RESERVED:
            continue
        params.append(
            {
                **_param(name, {"type": "array", "items": _filter_schema(column)}, "Filter"),
                "style": "form",
                "explode": True,
            }
        )
    return params


def _documented(annotation: Any) -> Any:
    """The type a view's field has in JSON (timestamps are naive ISO strings)."""
    if annotation in (datetime, datetime | None):
        return str | None
    return annotation


def partial_view(view: type[BaseModel], title: str) -> type[BaseModel]:
    """`view` as answered: every attribute optional, as `fields=` may leave any out."""
    fields: dict[str, Any] = {}
    for i, (name, info) in enumerate(view.model_fields.items()):
        if info.exclude:
            continue
        key = info.serialization_alias or name
        fields[f"f{i}"] = (_documented(info.annotation) | None, Field(None, alias=key))
    for name, computed in view.model_computed_fields.items():
        fields[name] = (computed.return_type | None, None)
    return create_model(
        title, __config__=ConfigDict(extra="allow", populate_by_name=True), **fields
    )


class Link(BaseModel):
    href: str
    rel: str


def envelopes(
    view: type[BaseModel],
    detail: type[BaseModel] | None,
    singular: str,
    plural: str,
    links: str | None,
) -> tuple[type[BaseModel], type[BaseModel]]:
    """(list answer, show answer) models: {"<plural>": [...], "<links>": [...]} and
    {"<singular>": {...}}."""
    name = singular.title().replace("_", "")
    item = partial_view(view, f"{name}Item")
    shown = partial_view(detail, f"{name}Detail") if detail is not None else item
    listing = create_model(
        f"{name}List",
        items=(list[item], Field(alias=plural)),  # type: ignore[valid-type]
        links=(list[Link], Field(alias=links or f"{plural}_links")),
    )
    show = create_model(
        f"{name}Show",
        body=(shown, Field(alias=singular)),
    )
    return listing, show
