"""The references listeners and pools carry, as Octavia accepts them.

A Barbican reference is a URL whose last path component is the object's UUID
(`…/v1/containers/<uuid>`, `…/v1/secrets/<uuid>`); Octavia's castellan manager
reads only that last component, so the host part may name any endpoint. A bare
UUID is accepted too: a container, else a secret.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

Kind = Literal["containers", "secrets"]


@dataclass(frozen=True)
class Ref:
    id: str
    kind: Kind | None  # None: a bare UUID, a container or a secret


def parse_ref(ref: str) -> Ref | None:
    """The object a reference names, or None when it names nothing this store could hold."""
    parts = ref.rstrip("/").split("/")
    try:
        parsed = uuid.UUID(parts[-1])
    except ValueError:
        return None
    kind: Kind | None = None
    if len(parts) > 1:
        if parts[-2] not in ("containers", "secrets"):
            return None
        kind = "containers" if parts[-2] == "containers" else "secrets"
    return Ref(str(parsed), kind)
