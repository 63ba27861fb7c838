"""Protection profiles: what a load balancer does against floods, slow clients and bad sources.

A profile is a set of per-source limits and guards that the HAProxy renderer turns
into stick tables, ACLs and map files. Every field is checked here, strictly, because
its values reach HAProxy files: numbers are bounded, CIDRs are normalised by the
`ipaddress` module, path prefixes follow a grammar that has no blank, quote, `#`
or control character (map files are whitespace-separated, `#` starts a comment).

Rates count per source over `RATE_PERIOD_S` seconds (HAProxy's stick-table
period, fixed so that a change of limits never needs a reload). The fields split in
two kinds:

* runtime fields (`RUNTIME_FIELDS`: limits, action, Retry-After, deny/allow lists,
  path limits) live in map files the running HAProxy reads per connection or
  request, so they change through the runtime API without a reload (under-attack
  mode);
* static fields (`STATIC_FIELDS`: `timeout_http_request`, `timeout_client_max`) are
  directives of the configuration: changing them is a reload, and under-attack
  mode keeps the base profile's.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

RATE_PERIOD_S = 10
# The largest value a limit may take; also what "no limit" is written as in a map.
MAX_LIMIT = 1_000_000
UNLIMITED = 1_000_000_000
MAX_LIST_ENTRIES = 20_000
MAX_PATH_LIMITS = 50
ACTIONS = ("429", "tarpit", "silent-drop", "reject")
Action = Literal["429", "tarpit", "silent-drop", "reject"]
# The number each action is written as in the limits map (HAProxy compares integers).
ACTION_CODES = {"429": 1, "tarpit": 2, "silent-drop": 3, "reject": 4}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A path prefix: RFC 3986 path characters, without '#' (a map comment), blanks, quotes,
# backslashes and control characters.
_PATH_PREFIX = re.compile(r"/[A-Za-z0-9\-._~!$&()*+,;=:@%/]{0,254}")

STATIC_FIELDS = ("timeout_http_request", "timeout_client_max")
RUNTIME_FIELDS = (
    "max_connections",
    "connection_rate",
    "request_rate",
    "error_rate",
    "max_header_bytes",
    "max_header_count",
    "action",
    "retry_after",
    "deny",
    "allow",
    "path_limits",
)


def check_profile_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError("must be 1-64 letters, digits, '_', '.' or '-', not starting with '_.-'")
    return value


def check_path_prefix(value: str) -> str:
    if not _PATH_PREFIX.fullmatch(value):
        raise ValueError(
            "must start with '/' and hold at most 255 URL path characters "
            "(no blank, quote, '#', '\\' or control character)"
        )
    return value


def check_source_cidr(value: str) -> str:
    """A source network, normalised (192.0.2.7/24 -> 192.0.2.0/24; an address -> /32)."""
    if not isinstance(value, str) or value != value.strip() or not value:
        raise ValueError("must be a CIDR such as 192.0.2.0/24")
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("must be a CIDR such as 192.0.2.0/24") from None


ProfileName = Annotated[str, AfterValidator(check_profile_name)]
PathPrefix = Annotated[str, AfterValidator(check_path_prefix)]
SourceCidr = Annotated[str, AfterValidator(check_source_cidr)]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT)]


def _unique_sorted(values: list[str]) -> list[str]:
    return sorted(set(values), key=lambda v: (ipaddress.ip_network(v).version, v))


class PathLimit(BaseModel):
    """Requests per source per period to paths starting with `path_prefix`."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    path_prefix: PathPrefix
    request_rate: Limit


class ProtectionSettings(BaseModel):
    """The limits and guards of a protection profile (see the module docstring).

    A limit left out (None) is no limit. Rates are per source per `RATE_PERIOD_S`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    max_connections: Limit | None = None  # concurrent connections per source
    connection_rate: Limit | None = None  # new connections per source per period
    request_rate: Limit | None = None  # HTTP requests per source per period
    error_rate: Limit | None = None  # HTTP 4xx answers per source per period
    # Slowloris guards (milliseconds): the whole request head must arrive within
    # `timeout_http_request`; no listener keeps an idle client longer than
    # `timeout_client_max` (the listener's own timeout is lowered to it).
    timeout_http_request: Annotated[int, Field(ge=100, le=300_000)] | None = None
    timeout_client_max: Annotated[int, Field(ge=100, le=86_400_000)] | None = None
    max_header_bytes: Annotated[int, Field(ge=256, le=65_536)] | None = None
    max_header_count: Annotated[int, Field(ge=1, le=100)] | None = None
    # What a source over a limit gets: a 429 with Retry-After, a tarpit (held, then
    # 429), a silent drop (the connection vanishes, nothing sent), or a reset.
    # Connection-level limits (max_connections, connection_rate) come before any HTTP:
    # they reject (or silently drop) the connection. A source at ten times its request
    # limit gets the tarpit before its 429 whatever the action (`render.protection`).
    action: Action = "429"
    retry_after: Annotated[int, Field(ge=1, le=3600)] = RATE_PERIOD_S
    deny: Annotated[
        list[SourceCidr], Field(max_length=MAX_LIST_ENTRIES), AfterValidator(_unique_sorted)
    ] = []
    allow: Annotated[
        list[SourceCidr], Field(max_length=MAX_LIST_ENTRIES), AfterValidator(_unique_sorted)
    ] = []
    path_limits: Annotated[list[PathLimit], Field(max_length=MAX_PATH_LIMITS)] = []

    @field_validator("path_limits")
    @classmethod
    def _distinct_prefixes(cls, value: list[PathLimit]) -> list[PathLimit]:
        prefixes = [p.path_prefix for p in value]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("each path_prefix may appear once")
        return value

    def runtime(self) -> dict[str, Any]:
        return self.model_dump(include=set(RUNTIME_FIELDS))


# Fields a profile body carries besides its settings.
PROFILE_META = ("name", "description")
SETTINGS_FIELDS = tuple(ProtectionSettings.model_fields)


def effective(
    base: ProtectionSettings | None, under_attack: ProtectionSettings | None
) -> tuple[ProtectionSettings | None, ProtectionSettings | None]:
    """(the profile the configuration is built from, the one its maps hold).

    Under attack, the maps hold the under-attack profile while the configuration
    keeps the base profile's static fields, so that switching is no reload. Without a
    base profile, the under-attack one is both (its first switch is a reload).
    """
    if under_attack is None:
        return base, base
    return (base or under_attack), under_attack


__all__ = [
    "ACTIONS",
    "ACTION_CODES",
    "MAX_LIMIT",
    "RATE_PERIOD_S",
    "RUNTIME_FIELDS",
    "STATIC_FIELDS",
    "UNLIMITED",
    "PathLimit",
    "ProtectionSettings",
    "check_path_prefix",
    "check_profile_name",
    "check_source_cidr",
    "effective",
]
