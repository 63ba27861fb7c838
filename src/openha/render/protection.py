"""A protection profile as HAProxy machinery: the map files and the frame the templates write.

The configuration holds a *frame* that does not depend on the limits' values:
a stick table per load balancer (source address -> concurrent connections,
connection, request and error rates, limit trips), one for per-path counters,
and rules that compare each counter with a threshold. The values live in map
files shipped beside the configuration (`map_files`), so the agent can replace
them through the runtime API (`prepare map` / `add map` / `commit map`) with no
reload: that is how under-attack mode tightens a running load balancer.

The rules do not look the thresholds up in the limits map per request: a map
lookup into a variable costs about half a microsecond, several per request a
tenth of a cheap request's price. The process reads each threshold into a
process-wide variable (`LIMIT_VARIABLES`) once at start (`set-var` in `global`)
and again whenever the agent connects to its *refresh listener* (a unix socket
only root can reach, `REFRESH_FRONTEND`) after changing the map. Reading such a
variable costs next to nothing, and the variables change with the map, without a
reload, for connections already open too.

Map files are whitespace-separated `key value` lines and `#` starts a comment:
every key written here is a checked CIDR, a fixed word, or a path prefix whose
grammar (`openha.domain.protection.check_path_prefix`) has no blank, quote or `#`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from openha.domain.protection import (
    ACTION_CODES,
    RATE_PERIOD_S,
    UNLIMITED,
    ProtectionSettings,
    check_path_prefix,
    check_source_cidr,
)

LIMITS_MAP = "protect-limits.map"
DENY_MAP = "protect-deny.map"
ALLOW_MAP = "protect-allow.map"
PATHS_MAP = "protect-paths.map"
MAP_FILES = (LIMITS_MAP, DENY_MAP, ALLOW_MAP, PATHS_MAP)
# Every proxy of the frame is named so (listeners and pools are named by their ids, UUIDs):
# the agent leaves them out of a listener's or pool's statistics.
INTERNAL_PROXY_PREFIX = "openha_"
# The backends holding the tables (stick tables need a section of their own to be
# shared by every listener of the load balancer and by the peers of a pair).
SOURCE_TABLE = "openha_protect"
PATH_TABLE = "openha_protect_paths"
# Per kind of limit (conn, req, hdr), how many times this instance tripped it: a
# counter for metrics, kept a day after the last trip.
TRIPS_TABLE = "openha_protect_trips"
# The backend answering the requests over a limit (429, tarpit, drop, reject or 431).
TRIP_BACKEND = "openha_protect_trip"
TRIPS_EXPIRE = "24h"
TABLE_SIZE = "100k"
# An idle source's counters go after this; longer than the rate period so a source
# pausing between bursts keeps its history.
TABLE_EXPIRE = f"{RATE_PERIOD_S * 6}s"
TARPIT_TIMEOUT_MS = 5000
# A source sending this many times its request limit is a flooder: it gets the tarpit
# (then its 429) whatever the action, so that answering it costs next to nothing.
FLOOD_FACTOR = 10
# The largest path-table key: an IPv6 address, ':' and a path limit id.
PATH_KEY_LENGTH = 64
# The listener whose every connection re-reads the limits map into the variables.
REFRESH_FRONTEND = "openha_protect_refresh"


@dataclass(frozen=True)
class LimitVariable:
    """A process-wide variable `proc.<name>` holding `key`'s value in the limits map
    (`default` when the map lacks it), times `factor`."""

    name: str
    key: str
    default: int
    factor: int = 1


LIMIT_VARIABLES = (
    LimitVariable("oh_cc", "conn_cur", UNLIMITED),
    LimitVariable("oh_cr", "conn_rate", UNLIMITED),
    LimitVariable("oh_rq", "req_rate", UNLIMITED),
    LimitVariable("oh_er", "err_rate", UNLIMITED),
    LimitVariable("oh_fl", "req_rate", UNLIMITED, FLOOD_FACTOR),
    LimitVariable("oh_hb", "hdr_bytes", UNLIMITED),
    LimitVariable("oh_hc", "hdr_count", UNLIMITED),
    LimitVariable("oh_hdr_on", "hdr_on", 0),
    LimitVariable("oh_paths_on", "paths_on", 0),
    LimitVariable("oh_act", "action", ACTION_CODES["429"]),
    LimitVariable("oh_ra", "retry_after", RATE_PERIOD_S),
)

# What a files_dir may look like to be written inside a converter's argument list.
_FILES_DIR = re.compile(r"/[A-Za-z0-9_./-]{0,200}")


class ProtectionRenderError(ValueError):
    """A protection profile holds a value that cannot be written into a map file."""


def limits(settings: ProtectionSettings) -> dict[str, int]:
    """The limits map's entries: every threshold, the action's code and Retry-After."""

    def value(limit: int | None) -> int:
        return UNLIMITED if limit is None else limit

    header_limited = (settings.max_header_bytes, settings.max_header_count) != (None, None)
    entries = {
        "conn_cur": value(settings.max_connections),
        "conn_rate": value(settings.connection_rate),
        "req_rate": value(settings.request_rate),
        "err_rate": value(settings.error_rate),
        "hdr_bytes": value(settings.max_header_bytes),
        "hdr_count": value(settings.max_header_count),
        "action": ACTION_CODES[settings.action],
        "retry_after": settings.retry_after,
        # Whether a request pays for the header and path checks at all: only while the
        # profile in force has such limits (switched at run time like the rest).
        "hdr_on": int(header_limited),
        "paths_on": int(bool(settings.path_limits)),
    }
    for index, limit in enumerate(settings.path_limits):
        entries[f"p{index}"] = limit.request_rate
    return entries


def _cidr_lines(cidrs: list[str], what: str) -> str:
    lines = []
    for cidr in cidrs:
        try:
            normal = check_source_cidr(cidr)
        except ValueError:
            raise ProtectionRenderError(f"{what} entry {cidr!r} is not a CIDR") from None
        lines.append(f"{normal} 1\n")
    return "".join(lines)


def map_files(settings: ProtectionSettings | None) -> dict[str, str]:
    """The four map files' contents (empty files when there is no profile)."""
    if settings is None:
        return {name: "" for name in MAP_FILES}
    # Longest prefix first: HAProxy's map_beg answers with the first match in file order.
    ordered = sorted(
        enumerate(settings.path_limits), key=lambda item: (-len(item[1].path_prefix), item[0])
    )
    paths = []
    for index, limit in ordered:
        try:
            prefix = check_path_prefix(limit.path_prefix)
        except ValueError:
            raise ProtectionRenderError(f"path prefix {limit.path_prefix!r} refused") from None
        paths.append(f"{prefix} p{index}\n")
    return {
        LIMITS_MAP: "".join(f"{key} {value}\n" for key, value in limits(settings).items()),
        DENY_MAP: _cidr_lines(settings.deny, "deny"),
        ALLOW_MAP: _cidr_lines(settings.allow, "allow"),
        PATHS_MAP: "".join(paths),
    }


@dataclass(frozen=True)
class ProtectionFrame:
    """What the templates write for a protected load balancer (all checked values)."""

    limits_map: str
    refresh_socket: str
    variables: tuple[LimitVariable, ...]
    deny_map: str
    allow_map: str
    paths_map: str
    source_table: str
    path_table: str
    trips_table: str
    trip_backend: str
    refresh_frontend: str
    trips_expire: str
    table_size: str
    table_expire: str
    rate_period: str
    path_key_length: int
    unlimited: int
    tarpit_timeout: int
    flood_factor: int
    timeout_http_request: int | None
    timeout_client_max: int | None


def frame(settings: ProtectionSettings, files_dir: str, refresh_socket: str) -> ProtectionFrame:
    """The frame of `settings` (its static fields), with the maps under `files_dir`
    and the refresh listener on the unix socket `refresh_socket`."""
    if not _FILES_DIR.fullmatch(files_dir) or "/../" in f"{files_dir}/":
        raise ProtectionRenderError(f"refusing files directory {files_dir!r} in a converter")
    base = files_dir.rstrip("/")
    return ProtectionFrame(
        limits_map=f"{base}/{LIMITS_MAP}",
        refresh_socket=refresh_socket,
        variables=LIMIT_VARIABLES,
        deny_map=f"{base}/{DENY_MAP}",
        allow_map=f"{base}/{ALLOW_MAP}",
        paths_map=f"{base}/{PATHS_MAP}",
        source_table=SOURCE_TABLE,
        path_table=PATH_TABLE,
        trips_table=TRIPS_TABLE,
        trip_backend=TRIP_BACKEND,
        refresh_frontend=REFRESH_FRONTEND,
        trips_expire=TRIPS_EXPIRE,
        table_size=TABLE_SIZE,
        table_expire=TABLE_EXPIRE,
        rate_period=f"{RATE_PERIOD_S}s",
        path_key_length=PATH_KEY_LENGTH,
        unlimited=UNLIMITED,
        tarpit_timeout=TARPIT_TIMEOUT_MS,
        flood_factor=FLOOD_FACTOR,
        timeout_http_request=settings.timeout_http_request,
        timeout_client_max=settings.timeout_client_max,
    )
