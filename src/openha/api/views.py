"""Responses: one pydantic view per resource, read from its row (`from_attributes`).

A view lists the fields a resource answers with, once, and `View.render(row)`
reads them from the row's attributes and relationships. A field that is not a
plain attribute says where it comes from: a validation alias (`AliasPath("host",
"management_url")`), or one of the annotated types below (`OneRef`, `Ids`, ...).
Envelopes, `fields=` selection and pagination are added by `openha.api.resources`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, computed_field


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# Octavia renders naive UTC timestamps without an offset.
Timestamp = Annotated[datetime | None, PlainSerializer(iso)]


class View(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def render(cls, row: object) -> dict[str, Any]:
        return cls.model_validate(row).model_dump(by_alias=True)

    @classmethod
    def render_json(cls, row: object) -> dict[str, Any]:
        """`render`, with JSON's types only: lists answer it without FastAPI's encoder
        walking a thousand objects again."""
        return cls.model_validate(row).model_dump(mode="json", by_alias=True)


class Ref(View):
    """Octavia's reference to another object: {"id": ...}."""

    id: str


def _one_ref(ident: str) -> list[dict[str, str]]:
    return [{"id": ident}]


def _ids(rows: Iterable[Any]) -> list[str]:
    return [row.id for row in rows]


def _or_empty_list(value: Any) -> Any:
    return value or []


def _or_empty_dict(value: Any) -> Any:
    return value or {}


def _or_none(value: Any) -> Any:
    return value or None


# A parent id answered as Octavia's one-element list: `loadbalancers: [{"id": ...}]`.
OneRef = Annotated[list[Ref], BeforeValidator(_one_ref)]
# Related rows answered by their ids alone (Neutron's `subnets: [id, ...]`).
Ids = Annotated[list[str], BeforeValidator(_ids)]
# JSON columns that may hold NULL, answered as [] and {}.
Strings = Annotated[list[str], BeforeValidator(_or_empty_list)]
StringMap = Annotated[dict[str, str], BeforeValidator(_or_empty_dict)]
# An empty list (or object) answered as null.
NullIfEmpty = BeforeValidator(_or_none)


class TreeView(Ref):
    """What every object of a load balancer's tree answers with."""

    project_id: str
    provisioning_status: str
    operating_status: str
    admin_state_up: bool
    created_at: Timestamp
    updated_at: Timestamp
    tags: Strings

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tenant_id(self) -> str:
        """Octavia's types answer the project under its old name too (api/common/types.py)."""
        return self.project_id
