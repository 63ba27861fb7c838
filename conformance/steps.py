"""The vocabulary the scenario is written in: one `Step` per request sent to both servers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROJECT = "conformance"
OTHER_PROJECT = "conformance-other"
# A well-formed id that names nothing on either server.
UNKNOWN_ID = "00000000-1111-4222-8333-444444444444"


@dataclass
class Step:
    label: str
    method: str
    path: str  # "{alias}" is replaced by that server's id for the alias
    body: Any = None
    # The created object's id is remembered under this alias (nested ids as alias.path).
    register: str | None = None
    # Compare key sets and types only: values depend on each deployment's configuration.
    shape_only: bool = False
    # For a list: remember each item's id as register.0, register.1 ... in list order.
    register_items: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def get(label: str, path: str, **kw: Any) -> Step:
    return Step(label, "GET", path, **kw)


def post(label: str, path: str, body: Any, **kw: Any) -> Step:
    return Step(label, "POST", path, body, **kw)


def put(label: str, path: str, body: Any, **kw: Any) -> Step:
    return Step(label, "PUT", path, body, **kw)


def delete(label: str, path: str, **kw: Any) -> Step:
    return Step(label, "DELETE", path, **kw)
