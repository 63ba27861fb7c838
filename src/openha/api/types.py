"""Value types every API resource shares: request-body base, enum checks, ports, TLS, timeouts.

Request bodies are pydantic models built from these; the grammars of strings that
reach a HAProxy config live in `openha.domain.grammar`. Octavia's defaults for
TLS-terminating listeners and TLS pools are here too, next to their types.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from openha.api.errors import BadRequest
from openha.domain import constants as c
from openha.domain import grammar


class StrictModel(BaseModel):
    """Request bodies: unknown attributes are a 400, as in Octavia."""

    model_config = ConfigDict(extra="forbid")


def column_default(model: type[Any], key: str) -> Any:
    """What a new row of `model` holds in `key` when nothing is given (None: no default)."""
    column = model.__table__.c.get(key)
    default = column.default if column is not None else None
    if default is None:
        return None
    return default.arg(None) if default.is_callable else default.arg


def with_defaults(
    values: Mapping[str, Any],
    model: type[Any],
    not_null: Iterable[str] = (),
    refusal: str = "Invalid input for field/attribute {key}. Value: 'None'.",
) -> dict[str, Any]:
    """`values` (a body's fields) with each null replaced by the column's default, as
    Octavia's _set_default_on_none does on create and update; 400 for a null in `not_null`.

    The model's column defaults are Octavia's defaults: there is no second table of them.
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            if key in not_null:
                raise BadRequest(refusal.format(key=key))
            value = column_default(model, key)
        out[key] = value
    return out


def one_of(values: Iterable[Any]) -> AfterValidator:
    """An enum check with Octavia's wording, usable in Annotated[...] for any field."""
    allowed = tuple(values)

    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"Value should be one of: {', '.join(str(v) for v in allowed)}")
        return value

    return AfterValidator(check)


# An integer bounded only by its column (Octavia sets no upper bound for these).
Int32 = Annotated[int, Field(le=c.MAX_INT32)]
PortNumber = Annotated[int, Field(ge=c.MIN_PORT, le=c.MAX_PORT)]
# Listener timeouts, in milliseconds.
Timeout = Annotated[int, Field(ge=0, le=c.MAX_TIMEOUT)]

# --- TLS --------------------------------------------------------------------------------

_CONTAINER_REF = re.compile(r"^[\x21-\x7e]+$")


def _check_container_ref(value: str) -> str:
    if not _CONTAINER_REF.match(value):
        raise ValueError("must be printable ASCII without spaces")
    return value


ALPN_PROTOCOLS = ("http/1.0", "http/1.1", "h2")
# Octavia's [api_settings] defaults for TLS-terminating listeners and TLS pools.
DEFAULT_TLS_CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256"
)
DEFAULT_TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
DEFAULT_LISTENER_ALPN = ("h2", "http/1.1", "http/1.0")
DEFAULT_POOL_ALPN = ("http/1.1", "http/1.0")

ContainerRef = Annotated[
    str, Field(min_length=1, max_length=255), AfterValidator(_check_container_ref)
]
TlsCiphers = Annotated[
    str, Field(min_length=1, max_length=2048), AfterValidator(grammar.check_ciphers)
]
TlsVersion = Annotated[str, one_of(c.TLS_VERSIONS)]
AlpnProtocol = Annotated[str, one_of(ALPN_PROTOCOLS)]


def check_tls_lists(versions: list[str] | None, alpn: list[str] | None) -> None:
    """Octavia's check_tls_version_list / check_alpn_protocols: an empty list is a mistake."""
    if versions is not None and not versions:
        raise BadRequest(
            "Validation failure: Empty TLS version list. Either specify at least one TLS "
            "version or remove this parameter to use the default."
        )
    if alpn is not None and not alpn:
        raise BadRequest(
            "Validation failure: Empty ALPN protocol list. Either specify at least one ALPN "
            "protocol or remove this parameter to use the default."
        )


def refuse_children(listener_protocol: str) -> None:
    """A PROMETHEUS listener serves its LB's metrics: no pool, no L7 policy (Octavia)."""
    if listener_protocol == "PROMETHEUS":
        raise BadRequest("Protocol PROMETHEUS listeners cannot have child objects.")


def check_pool_protocol(listener_protocol: str, pool_protocol: str) -> None:
    """A listener only forwards to pools whose protocol it can speak to."""
    refuse_children(listener_protocol)
    if pool_protocol not in c.LISTENER_POOL_PROTOCOL_MAP.get(listener_protocol, ()):
        raise BadRequest(
            f"Validation failure: The pool protocol '{pool_protocol}' is invalid while the "
            f"listener protocol is '{listener_protocol}'."
        )
