"""Normalise two servers' answers and list where they differ, structurally.

What is compared: the status code; then, key by key, the key sets, the value
types and the values of the JSON bodies. What is normalised first, because
it legitimately differs between two deployments:

* ids: each server's ids are replaced by the scenario's alias of the object
  (`<lb1>`, `<lb1.listeners.0>`), any other UUID by `<uuid>`;
* timestamps by `<time>` (null stays null: a null `updated_at` is a value);
* the servers' base URLs in links by `<base>`;
* each deployment's default provider name (`amphora` and `noop`) by `<provider>`;
* `vip_network_id` / `vip_port_id`: Octavia's no-op network driver invents them.

Operating statuses are compared as they are: neither side observes a data plane
here (Octavia runs no health manager, OpenHA's observer is idle), so both answer
with what their API and controller write: an object's first status, and the one
set in the write that makes it ACTIVE.

Lists inside an object (a load balancer's listeners, a status tree's pools, a
policy's rules) are sets in Octavia, in whatever order its database returns
them: they are compared sorted by their normalised id. Top-level collections
keep their order, which sort parameters decide.

Error bodies (status >= 400) are compared by key set and value types only:
the wording of a message is not a contract.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?$")
ENVIRONMENT_IDS = frozenset({"vip_network_id", "vip_port_id"})
PROVIDER_KEYS = frozenset({"provider", "provider_name"})


@dataclass(frozen=True)
class Difference:
    step: str  # the scenario step's label
    request: str  # "GET /v2/lbaas/..." with aliases
    kind: str  # status, missing (Octavia has it), extra (OpenHA has it), type, value, length
    path: str  # where in the body: "loadbalancer.tenant_id", "loadbalancers[].id"
    octavia: Any
    openha: Any

    def group(self) -> tuple[str, str, str]:
        return self.kind, self.request, self.path


class Normaliser:
    """Turns one server's answer into a comparable document."""

    def __init__(self, base: str, provider: str, aliases: dict[str, str]) -> None:
        self.base = base
        self.provider = provider
        self.names = {ident: alias for alias, ident in aliases.items()}

    def _ids_in(self, text: str) -> str:
        return UUID.sub(lambda m: f"<{self.names.get(m.group(0), 'uuid')}>", text)

    def value(self, key: str | None, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.value(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(key, v) for v in value]
        if not isinstance(value, str):
            return value
        if key in PROVIDER_KEYS and value == self.provider:
            return "<provider>"
        if key in ENVIRONMENT_IDS:
            return "<environment id>"
        if value in self.names:
            return f"<{self.names[value]}>"
        if UUID.fullmatch(value):
            return "<uuid>"
        if TIMESTAMP.match(value):
            return "<time>"
        if value.startswith(self.base):
            return "<base>" + self._ids_in(value[len(self.base) :])
        return value

    def body(self, body: Any) -> Any:
        return _sort_nested(self.value(None, body), depth=0)


def _sort_nested(value: Any, depth: int) -> Any:
    if isinstance(value, dict):
        return {k: _sort_nested(v, depth + 1) for k, v in value.items()}
    if not isinstance(value, list):
        return value
    items = [_sort_nested(v, depth + 1) for v in value]
    if depth >= 2 and all(isinstance(v, dict) for v in items):
        items.sort(key=lambda v: json.dumps(v.get("id", v), sort_keys=True))
    return items


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def diff(
    step: str,
    request: str,
    octavia: tuple[int, Any],
    openha: tuple[int, Any],
) -> list[Difference]:
    """Every difference between two normalised answers (status, body)."""
    out: list[Difference] = []
    (o_status, o_body), (h_status, h_body) = octavia, openha
    if o_status != h_status:
        out.append(Difference(step, request, "status", "", o_status, h_status))
    # Bodies of different outcomes (201 vs 400) share nothing worth listing key by key.
    if (o_status >= 400) != (h_status >= 400):
        return out
    shape_only = o_status >= 400
    _walk(out, step, request, "", o_body, h_body, shape_only)
    return out


def _walk(
    out: list[Difference],
    step: str,
    request: str,
    path: str,
    o: Any,
    h: Any,
    shape_only: bool,
) -> None:
    def add(kind: str, where: str, ov: Any, hv: Any) -> None:
        out.append(Difference(step, request, kind, where, ov, hv))

    to, th = _type(o), _type(h)
    if to != th:
        add("type", path, o, h)
        return
    if to == "object":
        for key in o.keys() - h.keys():
            add("missing", f"{path}.{key}".lstrip("."), o[key], None)
        for key in h.keys() - o.keys():
            add("extra", f"{path}.{key}".lstrip("."), None, h[key])
        for key in o.keys() & h.keys():
            _walk(out, step, request, f"{path}.{key}".lstrip("."), o[key], h[key], shape_only)
        return
    if to == "list":
        if len(o) != len(h) and not shape_only:
            add("length", path, len(o), len(h))
        for a, b in zip(o, h, strict=False):
            _walk(out, step, request, f"{path}[]", a, b, shape_only)
        return
    if not shape_only and o != h:
        add("value", path, o, h)
