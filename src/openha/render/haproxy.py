"""Render one load balancer's HAProxy configuration: all listeners, pools and L7 policies.

The controller calls `render_haproxy` with the LB's desired tree; the agent only
checks (`haproxy -c`) and applies the text. The work is split in two:

* this module turns the spec into small view objects, deciding *what* to render
  (which objects are enabled and used, in which order, with which HAProxy
  keywords) and re-checking every user value with the strict grammars of
  `openha.domain.grammar`;
* the Jinja2 templates in `templates/` decide *how* it is written. Every free-form
  value goes through the `q` filter (grammar re-check, then one HAProxy word:
  strong quotes, with apostrophes and control characters as escapes between
  them) and every identifier through `ident`, so nothing a tenant typed can end
  a token or a line, whatever it holds.

Semantics follow Octavia's amphora driver (`combined_listeners` templates) with
two deliberate differences: backends are named by pool id alone (so stats and
server state keep stable names however many listeners share a pool), and a PING
health monitor is a TCP connect check (an unprivileged HAProxy in a namespace
cannot send ICMP, and Octavia's external ping script would need `external-check`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from openha.domain import constants as c
from openha.domain import grammar
from openha.domain.protection import ProtectionSettings
from openha.domain.spec import (
    HealthMonitorSpec,
    L7PolicySpec,
    L7RuleSpec,
    ListenerSpec,
    LoadBalancerSpec,
    MemberSpec,
    PoolSpec,
)
from openha.render import tls
from openha.render.protection import ProtectionFrame, ProtectionRenderError, frame

__all__ = [
    "ACCESS_LOG_MODES",
    "DEFAULT_FD_LIMIT",
    "DEFAULT_LISTENER_MAXCONN",
    "DEFAULT_NBTHREAD",
    "MAXCONN_CAP",
    "AccessLog",
    "HAProxyPaths",
    "PeerSpec",
    "PeersSpec",
    "RenderError",
    "UnsupportedFeature",
    "access_log_format",
    "expected_status",
    "ident",
    "instance_maxconn",
    "maxconn_for_fd_limit",
    "quote",
    "render_haproxy",
]


AccessLog = Literal["all", "errors", "none"]
# "all": a line per request or connection; "errors": only failed or abnormal ones
# (HAProxy's advice for busy sites); "none": no traffic logs at all (Octavia's
# disabled connection logging). Admin events (servers up/down) are always logged.
ACCESS_LOG_MODES: tuple[str, ...] = ("all", "errors", "none")


class RenderError(ValueError):
    """The spec holds a value the renderer refuses to write into a configuration."""


class UnsupportedFeature(RenderError):
    """A valid Octavia object that this HAProxy renderer cannot serve (yet)."""


# --- limits and defaults -------------------------------------------------------------------

DEFAULT_FD_LIMIT = 20000  # the hard RLIMIT_NOFILE measured on LB hosts (see DESIGN.md)


def maxconn_for_fd_limit(hard_limit: int) -> int:
    """The largest global maxconn HAProxy can start with under `hard_limit` descriptors.

    HAProxy reserves two descriptors per proxied connection (client and server side)
    and refuses to start ("Cannot raise FD limit") when maxconn needs more than the
    hard limit. A fifth of the limit is kept for listeners, health checks, peers,
    logs and the runtime sockets.
    """
    if hard_limit < 10:
        raise ValueError("the file descriptor limit is too small to run HAProxy")
    return hard_limit * 4 // 5 // 2


# The largest global maxconn an instance may have under the hosts' descriptor limit.
MAXCONN_CAP = maxconn_for_fd_limit(DEFAULT_FD_LIMIT)  # 8000
# Connections per listener whose connection_limit is -1 (unlimited). Each unit of
# maxconn costs ~0.12 KB in every HAProxy process whether used or not (descriptor
# tables), and a host of a thousand instances shares ~2.4 M file handles: 2000 keeps an
# idle instance small and lets many fit; the operator may raise it
# (`haproxy_default_maxconn`), and a listener's own connection_limit always wins.
DEFAULT_LISTENER_MAXCONN = 2000
# HAProxy threads per instance: a fixed small number, never the host's core count.
DEFAULT_NBTHREAD = 1

# Old workers keep serving their open connections after a reload; this bounds how
# long, so frequent reloads cannot pile up processes holding memory and ports.
HARD_STOP_AFTER = "10m"
# How long an old process takes to close its idle keep-alive connections after a reload.
CLOSE_SPREAD_TIME = "1s"
# Octavia's stick table size for SOURCE_IP and APP_COOKIE persistence.
STICK_TABLE_SIZE = "10k"
# Octavia's cookie-persistence cookie name (HTTP_COOKIE ignores cookie_name there too).
PERSISTENCE_COOKIE = "SRV"
PEERS_SECTION = "openha_peers"
SERVER_STATE_FILE = "server-state"
LOG_LINE_LENGTH = 8192
# The ring buffer HAProxy writes its log lines to; its forwarder hands them over a
# unix stream socket to the host's rsyslogd in batches (far cheaper per line than a
# datagram each, and nothing is lost while rsyslogd catches up within the ring).
LOG_RING = "openha_log"
LOG_RING_SIZE = 1 << 20
# The syslog tag of an instance's lines: rsyslog files them under the LB's id.
LOG_TAG_PREFIX = "lb-"
# What may be written as it is inside a JSON string of the log format: a project id
# holding anything else is left out of the lines (the API adds it to every record).
_PLAIN_JSON_VALUE = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")

_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the final NUL
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")  # proxy, server, ACL, peer names
# What may appear between strong quotes as it is: everything but the apostrophe that
# would end them and the control characters a line must not carry. Those are written
# between the quoted runs as HAProxy escapes (`\'`, `\xNN`), which HAProxy joins into
# the same word.
_LITERAL_RUN = re.compile(r"[^'\x00-\x1f\x7f]+")

# Paths of the agent's own sockets and directories: plain printable ASCII.
_PRINTABLE = re.compile(r"[\x20-\x26\x28-\x7e]+")

_LISTENER_MODES: dict[str, Literal["http", "tcp"]] = {
    "HTTP": "http",
    "HTTPS": "tcp",
    "TCP": "tcp",
    "PROMETHEUS": "http",
    tls.TLS_LISTENER: "http",
}
_UNSUPPORTED_LISTENERS = ("UDP", "SCTP")
# A PROMETHEUS listener answers `GET /metrics` with HAProxy's exporter (Octavia serves
# its own proxy of it there). The instance's HAProxy runs this LB alone, and the
# query is replaced by these scopes, so a scraper reads this LB's listeners, pools and
# members, never the process's (the host's) figures, whatever it asks for.
PROMETHEUS_PATH = "/metrics"
PROMETHEUS_SCOPES = "scope=frontend&scope=backend&scope=server"
_UNSUPPORTED_POOLS = ("UDP", "SCTP")
_BALANCE = {"ROUND_ROBIN": "roundrobin", "LEAST_CONNECTIONS": "leastconn", "SOURCE_IP": "source"}
_MATCH = {
    "REGEX": "-m reg",
    "STARTS_WITH": "-m beg",
    "ENDS_WITH": "-m end",
    "CONTAINS": "-m sub",
    "EQUAL_TO": "-m str",
}
_PERSISTENCE: dict[str, Literal["SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE"]] = {
    "SOURCE_IP": "SOURCE_IP",
    "HTTP_COOKIE": "HTTP_COOKIE",
    "APP_COOKIE": "APP_COOKIE",
}
_PROXY_PROTOCOL = {"PROXY": "send-proxy", "PROXYV2": "send-proxy-v2"}
_CHECK_KINDS: dict[str, Literal["http", "https", "tcp", "tls-hello", "ping"]] = {
    "HTTP": "http",
    "HTTPS": "https",
    "TCP": "tcp",
    "TLS-HELLO": "tls-hello",
    "PING": "ping",
}


# --- inputs besides the spec -------------------------------------------------------------


def _absolute_quotable_path(value: str) -> str:
    if not _PRINTABLE.fullmatch(value):
        raise ValueError("must be printable ASCII without quotes (')")
    if not value.startswith("/") or "/../" in f"{value}/":
        raise ValueError("must be an absolute path without '..'")
    return value


# The agent gives each instance's HAProxy its uid and gid through these (`agent.sandbox`):
# the controller cannot know them, and the config stays the same on every host.
SANDBOX_UID_ENV = "OPENHA_LB_UID"
SANDBOX_GID_ENV = "OPENHA_LB_GID"


class HAProxyPaths(BaseModel):
    """Where the instance's HAProxy finds the agent's sockets and its state directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stats_socket: str  # runtime API (admin level), also passes listeners on reload
    chroot: str  # where HAProxy locks itself in once started (an empty directory)
    # Both reached after the chroot, so named as seen from inside it:
    log_socket: str  # unix datagram socket where the agent hears admin events (no traffic)
    syslog_socket: str  # unix stream socket of the host's rsyslogd: every line, to files
    state_dir: str  # server-state-file lives here (read before the chroot)
    # The spec's files: certificates, crt-lists, maps (read before the chroot; 0600, the
    # instance's uid's).
    files_dir: str | None = None
    # Where the protection profile's refresh listener binds (before the chroot).
    protect_socket: str | None = None

    @field_validator("stats_socket", "log_socket", "syslog_socket", "protect_socket")
    @classmethod
    def _socket_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _absolute_quotable_path(value)
        if len(value.encode()) > _SUN_PATH_MAX:
            raise ValueError(f"unix socket paths are limited to {_SUN_PATH_MAX} bytes")
        return value

    @field_validator("state_dir", "chroot")
    @classmethod
    def _state_dir(cls, value: str) -> str:
        return _absolute_quotable_path(value)

    @field_validator("files_dir")
    @classmethod
    def _files_dir(cls, value: str | None) -> str | None:
        return None if value is None else _absolute_quotable_path(value)

    @property
    def server_state_file(self) -> str:
        """The file the agent fills with `show servers state` before a reload.

        HAProxy reads it at start-up so members keep their health state across
        reloads; a missing file only costs a warning.
        """
        return f"{self.state_dir.rstrip('/')}/{SERVER_STATE_FILE}"


class PeerSpec(BaseModel):
    """One HAProxy of an ACTIVE_STANDBY pair, as seen in the `peers` section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    address: str
    port: int = Field(ge=1, le=65535)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return grammar.check_ip(value)


class PeersSpec(BaseModel):
    """Stick-table synchronisation between the instances of a load balancer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    local_peer: str  # this instance's peer name (HAProxy's `localpeer`)
    peers: tuple[PeerSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _local_peer_listed(self) -> PeersSpec:
        names = [peer.name for peer in self.peers]
        if len(set(names)) != len(names):
            raise ValueError("peer names must be unique")
        if self.local_peer not in names:
            raise ValueError("local_peer must be one of the peers")
        return self


# --- template filters ----------------------------------------------------------------------


def quote(value: object) -> str:
    r"""Write a free-form value as exactly one HAProxy word, after re-checking it.

    Inside '...' HAProxy interprets nothing (no escapes, no variables, no comments),
    so runs of ordinary characters go there as they are. The only ways out of
    strong quotes are the apostrophe and the line end: an apostrophe is written
    between two quoted runs as `\'`, and every control character as `\xNN`,
    escapes HAProxy's parser reads outside quotes and joins into the same word
    (configuration manual, 2.2 "Quoting and escaping"). `it's` becomes `'it'\''s'`.
    Only a NUL cannot be written (HAProxy keeps words as C strings): the grammar
    refuses it.
    """
    if not isinstance(value, str):
        raise RenderError(f"expected a string to quote, got {type(value).__name__}")
    if not value:
        raise RenderError("an empty value would be read as a missing argument")
    _checked(grammar.check_config_value, value, "value")
    parts: list[str] = []
    pos = 0
    while pos < len(value):
        run = _LITERAL_RUN.match(value, pos)
        if run:
            parts.append(f"'{run.group(0)}'")
            pos = run.end()
            continue
        char = value[pos]
        parts.append("\\'" if char == "'" else f"\\x{ord(char):02x}")
        pos += 1
    return "".join(parts)


def ident(value: object) -> str:
    """Check a name HAProxy reads unquoted: proxy, server, ACL and peer names are ids."""
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise RenderError(f"refusing to render {value!r} as a HAProxy identifier")
    return value


# --- access log lines ----------------------------------------------------------------------

# One JSON object per request (HTTP) or connection (TCP), built by HAProxy itself: no
# program touches a line between HAProxy and the file. Every value a client sends
# (method, URI, HTTP version) goes through HAProxy's `json` converter (escapes quotes,
# backslashes and control characters, drops invalid UTF-8) and is read from the
# captured request line, which outlives the request; everything else is a number,
# an address or a name HAProxy generates, or an id this renderer checked. `retries`
# is a string: HAProxy writes "+N" when it redispatched.
_HTTP_FIELDS = (
    '"listener":"%f","pool":"%b","member":"%s","client":"%ci","client_port":%cp,'
    '"method":"%[capture.req.method,json(utf8s)]","path":"%[capture.req.uri,json(utf8s)]",'
    '"http_version":"%[capture.req.ver,json(utf8s)]","status":%ST,"bytes_in":%U,"bytes_out":%B,'
    '"tq":%Tq,"tw":%Tw,"tc":%Tc,"tr":%Tr,"ta":%Ta,"termination":"%tsc","retries":"%rc",'
    '"request_id":"%ID"}'
)
_TCP_FIELDS = (
    '"listener":"%f","pool":"%b","member":"%s","client":"%ci","client_port":%cp,'
    '"bytes_in":%U,"bytes_out":%B,"tw":%Tw,"tc":%Tc,"tt":%Tt,"termination":"%ts",'
    '"retries":"%rc"}'
)
# How a request id is made (HAProxy's documented example): client and frontend
# address and port, accept time, request counter and pid, in hexadecimal.
UNIQUE_ID_FORMAT = "%{+X}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid"


def access_log_format(
    mode: Literal["http", "tcp"], lb_id: str, instance_id: str, project_id: str
) -> str:
    """The `log-format` of a listener: a JSON object naming its LB, instance and project."""
    head = (
        f'{{"ts":%Ts.%ms,"kind":"access","lb":"{ident(lb_id)}","instance":"{ident(instance_id)}",'
    )
    if _PLAIN_JSON_VALUE.fullmatch(project_id):
        head += f'"project":"{project_id}",'
    return head + (_HTTP_FIELDS if mode == "http" else _TCP_FIELDS)


# --- value helpers -------------------------------------------------------------------------


def _checked(check: Callable[[str], str], value: str, what: str) -> str:
    """Apply a grammar check; a refusal is a RenderError naming the value."""
    try:
        return check(value)
    except ValueError as exc:
        raise RenderError(f"{what} {value!r}: {exc}") from None


def _ip(value: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise RenderError(f"{what} {value!r} is not an IP address") from None


def _host(value: str, what: str) -> str:
    """An address as HAProxy's address parser wants it: IPv6 in brackets.

    Without brackets HAProxy reads the last group of an IPv6 address as a port
    (`addr 2001:db8::6` is refused as '2001:db8:').
    """
    addr = _ip(value, what)
    return f"[{addr}]" if addr.version == 6 else str(addr)


def _port(value: int, what: str) -> int:
    if not c.MIN_PORT <= value <= c.MAX_PORT:
        raise RenderError(f"{what} {value} is not a TCP port")
    return value


def _not_negative(value: int, what: str) -> int:
    if value < 0:
        raise RenderError(f"{what} must not be negative, got {value}")
    return value


def _positive(value: int, what: str) -> int:
    if value < 1:
        raise RenderError(f"{what} must be positive, got {value}")
    return value


def _timeout(value: int, what: str) -> int:
    if not 0 <= value <= c.MAX_TIMEOUT:
        raise RenderError(f"{what} {value} is out of range")
    return value


def _digit_range(lo: str, hi: str) -> list[str]:
    """Regex alternatives matching every digit string of len(lo) between lo and hi."""
    if lo == hi:
        return [lo]
    if len(lo) == 1:
        return [f"[{lo}-{hi}]"]
    if lo[0] == hi[0]:
        return [lo[0] + alt for alt in _digit_range(lo[1:], hi[1:])]
    rest = len(lo) - 1
    head: list[str] = []
    tail: list[str] = []
    first, last = int(lo[0]), int(hi[0])
    if lo[1:] != "0" * rest:  # partial first block, e.g. 205-209 of 205-399
        head = [lo[0] + alt for alt in _digit_range(lo[1:], "9" * rest)]
        first += 1
    if hi[1:] != "9" * rest:  # partial last block, e.g. 300-304 of 205-304
        tail = [hi[0] + alt for alt in _digit_range("0" * rest, hi[1:])]
        last -= 1
    middle: list[str] = []
    if first <= last:
        digit = str(first) if first == last else f"[{first}-{last}]"
        middle = [digit + "[0-9]" * rest]
    return head + middle + tail


def expected_status(expected_codes: str | None) -> tuple[Literal["status", "rstatus"], str]:
    """Translate Octavia's expected_codes into an `http-check expect` matcher.

    "200" → ("status", "200"); "200, 202" → an alternation; "200-204" → a regex
    covering exactly the range (Octavia enumerates every code instead).
    """
    codes = _checked(
        grammar.check_expected_codes, expected_codes or c.DEFAULT_EXPECTED_CODES, "expected_codes"
    )
    if "-" in codes:
        lo, hi = codes.split("-")
        if int(lo) > int(hi):
            raise RenderError(f"expected_codes range {codes!r} is reversed")
        alternatives = _digit_range(lo, hi)
    else:
        alternatives = list(dict.fromkeys(code.strip() for code in codes.split(",")))
    if len(alternatives) == 1 and alternatives[0].isdigit():
        return "status", alternatives[0]
    return "rstatus", "^(?:" + "|".join(alternatives) + ")$"


def _enabled(value: str) -> bool:
    return value.strip().lower() == "true"


# --- view objects the templates read -------------------------------------------------------


@dataclass(frozen=True)
class Acl:
    """`acl <name> <fetch>[(<key>)]<converters> [<flags>] [<value>|<literal>]`."""

    name: str
    fetch: str  # renderer constant
    key: str | None = None  # user value, quoted as the fetch argument
    converters: str = ""  # renderer constant
    flags: str = ""  # renderer constant
    value: str | None = None  # user value, quoted
    literal: str | None = None  # renderer-built: a checked integer, or -- (no pattern)


@dataclass(frozen=True)
class Term:
    acl: str
    invert: bool


@dataclass(frozen=True)
class Policy:
    action: str
    terms: tuple[Term, ...]
    target: str  # redirect URL or prefix (quoted), or backend id
    code: int | None = None


@dataclass(frozen=True)
class Frontend:
    id: str
    mode: Literal["http", "tcp"]
    bind: str
    disabled: bool
    maxconn: int
    timeout_client: int
    timeout_tcp_inspect: int
    allowed_cidrs: tuple[str, ...]
    forwarded_for: bool
    forwarded_port: bool
    forwarded_proto: str | None
    acls: tuple[Acl, ...]
    denies: tuple[Policy, ...]
    redirects: tuple[Policy, ...]
    switches: tuple[Policy, ...]
    default_backend: str | None
    prometheus: bool = False
    tls: tls.BindTls | None = None


@dataclass(frozen=True)
class Check:
    kind: Literal["http", "https", "tcp", "tls-hello", "ping"]
    delay: int
    timeout: int
    rise: int
    fall: int
    method: str = c.DEFAULT_HTTP_METHOD
    uri: str = c.DEFAULT_URL_PATH
    version: str | None = None
    host: str | None = None
    expect: Literal["status", "rstatus"] = "status"
    expect_value: str = c.DEFAULT_EXPECTED_CODES


@dataclass(frozen=True)
class Server:
    id: str
    address: str
    port: int
    weight: int
    backup: bool
    disabled: bool
    monitor_address: str | None
    monitor_port: int | None


@dataclass(frozen=True)
class Backend:
    id: str
    mode: Literal["http", "tcp"]
    balance: str
    timeout_connect: int
    timeout_server: int
    persistence: Literal["SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE"] | None
    stick_type: Literal["ip", "ipv6"]
    cookie_name: str | None
    check: Check | None
    proxy_protocol: str | None
    tls: tls.ServerTls | None
    servers: tuple[Server, ...]


# --- spec → views --------------------------------------------------------------------------


def _compared(value: str, ctype: str) -> str:
    """The text a rule compares with: Octavia writes values into its configs as they are,
    so a value "in double quotes" (the only way its grammar lets blanks in) is HAProxy
    syntax there, and the quotes are not part of the text."""
    if ctype != "REGEX" and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _pattern(name: str, fetch: str, flags: str, value: str, key: str | None = None) -> Acl:
    if not value:  # `""`: no pattern, so the ACL matches nothing, as in Octavia
        return Acl(name, fetch, key=key, flags=flags, literal="--")
    return Acl(name, fetch, key=key, flags=flags, value=value)


def _acl(rule: L7RuleSpec) -> Acl:
    name = ident(rule.id)
    rtype, ctype = rule.type, rule.compare_type
    if ctype not in _MATCH:
        raise RenderError(f"l7rule {rule.id}: unknown compare_type {ctype!r}")
    match = _MATCH[ctype]
    if ctype == "REGEX":
        _checked(grammar.check_regex, rule.value, f"l7rule {rule.id} regex")
    value = _compared(rule.value, ctype)
    if rtype == "HOST_NAME":
        # Case-insensitively, as Octavia; a value without a port is compared with the
        # host without its port, so that www.example.com also matches www.example.com:8080.
        with_port = ":" in value and ctype != "REGEX"
        host = "req.hdr(host)" if with_port else "req.hdr(host),field(1,:)"
        if ctype == "EQUAL_TO" and value.startswith("*."):
            # A wildcard names every subdomain: match on the suffix, dot included.
            return _pattern(name, host, f"-i {_MATCH['ENDS_WITH']}", value[1:])
        return _pattern(name, host, f"-i {match}", value)
    if rtype == "PATH":
        return _pattern(name, "path", match, value)
    if rtype == "FILE_TYPE":
        if ctype == "REGEX":  # Octavia: the regex applies to the whole path
            return Acl(name, "path", flags=match, value=value)
        if ctype != "EQUAL_TO":
            raise UnsupportedFeature(f"l7rule {rule.id}: FILE_TYPE supports EQUAL_TO and REGEX")
        # `path_end -m str` would compare the whole path: match the extension instead.
        return _pattern(name, "path_end", "", f".{value.removeprefix('.')}" if value else "")
    if rtype in ("HEADER", "COOKIE"):
        if not rule.key:
            raise RenderError(f"l7rule {rule.id}: {rtype} rules need a key")
        _checked(grammar.check_header_name, rule.key, f"l7rule {rule.id} key")
        fetch = "req.hdr" if rtype == "HEADER" else "req.cook"
        # In double quotes the fetch's own argument parser reads an apostrophe or a comma
        # as part of the name; the name grammar has no double quote, backslash or blank.
        return _pattern(name, fetch, match, value, key=f'"{rule.key}"')
    # SSL_* rules only match with TLS termination; on plain listeners they never match.
    if rtype == "SSL_CONN_HAS_CERT":
        return Acl(name, "ssl_c_used")
    if rtype == "SSL_VERIFY_RESULT":
        if not re.fullmatch(r"[0-9]{1,9}", rule.value):
            raise RenderError(f"l7rule {rule.id}: SSL_VERIFY_RESULT needs an integer value")
        return Acl(name, "ssl_c_verify", literal=f"eq {int(rule.value)}")
    if rtype == "SSL_DN_FIELD":
        key = _checked(grammar.check_dn_field, rule.key or "", f"l7rule {rule.id} DN field")
        return Acl(name, "ssl_c_s_dn", key=key, flags=match, value=rule.value)
    raise RenderError(f"l7rule {rule.id}: unknown type {rtype!r}")


def _policy(
    policy: L7PolicySpec, rules: tuple[L7RuleSpec, ...], backends: set[str]
) -> Policy | None:
    terms = tuple(Term(ident(rule.id), rule.invert) for rule in rules)
    if policy.action == "REJECT":
        return Policy("REJECT", terms, "")
    if policy.action in ("REDIRECT_TO_URL", "REDIRECT_PREFIX"):
        code = policy.redirect_http_code or c.DEFAULT_REDIRECT_HTTP_CODE
        if code not in c.REDIRECT_HTTP_CODES:
            raise RenderError(f"l7policy {policy.id}: redirect code {code} is not allowed")
        if policy.action == "REDIRECT_TO_URL":
            target = _checked(grammar.check_url, policy.redirect_url or "", "redirect_url")
        else:
            target = _checked(grammar.check_url_prefix, policy.redirect_prefix or "", "prefix")
        return Policy(policy.action, terms, target, code)
    if policy.action == "REDIRECT_TO_POOL":
        # Octavia drops the switch when the target pool is disabled (or gone).
        if policy.redirect_pool_id not in backends:
            return None
        return Policy(policy.action, terms, ident(policy.redirect_pool_id))
    raise RenderError(f"l7policy {policy.id}: unknown action {policy.action!r}")


def _frontend(
    listener: ListenerSpec,
    vip: str,
    lb_enabled: bool,
    maxconn: int,
    backends: set[str],
    files_dir: str | None = None,
) -> tuple[Frontend, list[str]]:
    """The frontend of an enabled listener, and the backends it uses (default first)."""
    mode = _LISTENER_MODES[listener.protocol]
    policies: list[Policy] = []
    acls: dict[str, Acl] = {}
    active = [p for p in listener.l7policies if p.admin_state_up]
    for spec in sorted(active, key=lambda p: p.position):
        rules = tuple(rule for rule in spec.rules if rule.admin_state_up)
        if not rules:  # Octavia skips policies without enabled rules
            continue
        if mode != "http":
            raise UnsupportedFeature(f"listener {listener.id}: L7 policies need an HTTP listener")
        policy = _policy(spec, rules, backends)
        if policy is None:
            continue
        policies.append(policy)
        for rule in rules:
            acls.setdefault(rule.id, _acl(rule))

    prometheus = listener.protocol == "PROMETHEUS"
    if prometheus and (policies or listener.default_pool_id):
        raise RenderError(f"listener {listener.id}: a PROMETHEUS listener has no pool or policy")
    default = listener.default_pool_id if listener.default_pool_id in backends else None
    switches = tuple(p for p in policies if p.action == "REDIRECT_TO_POOL")
    used = list(dict.fromkeys([*([default] if default else []), *(p.target for p in switches)]))

    headers = {k: _enabled(v) for k, v in listener.insert_headers.items()}
    http = mode == "http"
    bind_tls = None
    if listener.protocol == tls.TLS_LISTENER:
        bind_tls = _tls(tls.bind_tls, listener, files_dir)
    cidrs = tuple(
        dict.fromkeys(
            _checked(grammar.check_cidr, cidr, "allowed_cidr")
            for cidr in listener.allowed_cidrs or ()
        )
    )
    limit = listener.connection_limit
    frontend = Frontend(
        id=ident(listener.id),
        mode=mode,
        bind=f"{_host(vip, 'vip_address')}:{_port(listener.protocol_port, 'protocol_port')}",
        disabled=not lb_enabled,
        # -1 is Octavia's "unlimited" (and HAProxy reads 0 as "use the default"): the
        # listener default, within the instance's global limit.
        maxconn=limit if limit > 0 else maxconn,
        timeout_client=_timeout(listener.timeout_client_data, "timeout_client_data"),
        timeout_tcp_inspect=_timeout(listener.timeout_tcp_inspect, "timeout_tcp_inspect"),
        allowed_cidrs=cidrs,
        forwarded_for=http and headers.get("X-Forwarded-For", False),
        forwarded_port=http and headers.get("X-Forwarded-Port", False),
        forwarded_proto=(
            ("https" if bind_tls else "http")
            if http and headers.get("X-Forwarded-Proto", False)
            else None
        ),
        acls=tuple(acls.values()),
        # HAProxy evaluates http-request rules, then redirects, then use_backend, which
        # is exactly Octavia's documented precedence (REJECT, then redirects, then
        # REDIRECT_TO_POOL, each in position order); rendering them grouped that way
        # also avoids HAProxy's "rule placed after ... will still be processed before".
        denies=tuple(p for p in policies if p.action == "REJECT"),
        redirects=tuple(p for p in policies if p.action in ("REDIRECT_TO_URL", "REDIRECT_PREFIX")),
        switches=switches,
        default_backend=ident(default) if default else None,
        prometheus=prometheus,
        tls=bind_tls,
    )
    return frontend, used


def _check(monitor: HealthMonitorSpec | None) -> Check | None:
    if monitor is None or not monitor.admin_state_up:
        return None
    if monitor.type not in _CHECK_KINDS:
        raise UnsupportedFeature(f"health monitor {monitor.id}: type {monitor.type} unsupported")
    check = Check(
        kind=_CHECK_KINDS[monitor.type],
        # Octavia accepts a delay and a timeout of 0. HAProxy refuses `inter 0`: the
        # shortest interval the API can name, one second, is written instead. A 0
        # timeout writes no `timeout check`, so that HAProxy bounds the whole check
        # by the interval, as it does when the timeout is unset (or 0) there.
        delay=max(_not_negative(monitor.delay, "health monitor delay"), 1),
        timeout=_not_negative(monitor.timeout, "health monitor timeout"),
        rise=_positive(monitor.max_retries, "max_retries"),
        fall=_positive(monitor.max_retries_down, "max_retries_down"),
    )
    if check.kind not in ("http", "https"):
        return check
    method = monitor.http_method or c.DEFAULT_HTTP_METHOD
    if method not in c.HTTP_METHODS:
        raise RenderError(f"health monitor {monitor.id}: http_method {method!r} is not allowed")
    uri = _checked(grammar.check_url_path, monitor.url_path or c.DEFAULT_URL_PATH, "url_path")
    version = None
    if monitor.http_version is not None:
        if monitor.http_version not in c.HTTP_VERSIONS:
            raise RenderError(f"health monitor {monitor.id}: unknown http_version")
        version = f"HTTP/{monitor.http_version:.1f}"
    host = None
    if monitor.domain_name:
        host = _checked(grammar.check_hostname, monitor.domain_name, "domain_name")
    expect, expect_value = expected_status(monitor.expected_codes)
    return replace(
        check,
        method=method,
        uri=uri,
        version=version,
        host=host,
        expect=expect,
        expect_value=expect_value,
    )


def _server(member: MemberSpec) -> Server:
    if not c.MIN_WEIGHT <= member.weight <= c.MAX_WEIGHT:
        raise RenderError(f"member {member.id}: weight {member.weight} is out of range")
    return Server(
        id=ident(member.id),
        address=_host(member.address, "member address"),
        port=_port(member.protocol_port, "member protocol_port"),
        weight=member.weight,  # 0 keeps the server but sends it no new traffic (drain)
        backup=member.backup,
        disabled=not member.admin_state_up,
        monitor_address=(
            _host(member.monitor_address, "monitor_address") if member.monitor_address else None
        ),
        monitor_port=(
            _port(member.monitor_port, "monitor_port") if member.monitor_port is not None else None
        ),
    )


def _tls(build: Callable[..., object], obj: object, files_dir: str | None) -> Any:
    try:
        return build(obj, files_dir)
    except tls.TlsError as exc:
        raise RenderError(str(exc)) from None


def _backend(
    pool: PoolSpec,
    owner: ListenerSpec,
    http: bool,
    stick_type: Literal["ip", "ipv6"],
    files_dir: str | None = None,
) -> Backend:
    if pool.lb_algorithm == "SOURCE_IP_PORT":
        raise UnsupportedFeature(f"pool {pool.id}: SOURCE_IP_PORT needs the OVN provider")
    if pool.lb_algorithm not in _BALANCE:
        raise RenderError(f"pool {pool.id}: unknown lb_algorithm {pool.lb_algorithm!r}")
    mode: Literal["http", "tcp"] = "http" if http or pool.protocol == "HTTP" else "tcp"
    persistence: Literal["SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE"] | None = None
    cookie_name = None
    sp = pool.session_persistence
    if sp is not None:
        if sp.type not in _PERSISTENCE:
            raise RenderError(f"pool {pool.id}: unknown session persistence {sp.type!r}")
        # Cookies only exist in HTTP mode: HAProxy would ignore them with a warning.
        if sp.type == "SOURCE_IP" or mode == "http":
            persistence = _PERSISTENCE[sp.type]
        if persistence == "APP_COOKIE":
            if not sp.cookie_name:
                raise RenderError(f"pool {pool.id}: APP_COOKIE persistence needs a cookie_name")
            cookie_name = _checked(grammar.check_token, sp.cookie_name, "cookie_name")
    return Backend(
        id=ident(pool.id),
        mode=mode,
        balance=_BALANCE[pool.lb_algorithm],
        timeout_connect=_timeout(owner.timeout_member_connect, "timeout_member_connect"),
        timeout_server=_timeout(owner.timeout_member_data, "timeout_member_data"),
        persistence=persistence,
        stick_type=stick_type,
        cookie_name=cookie_name,
        check=_check(pool.health_monitor),
        proxy_protocol=_PROXY_PROTOCOL.get(pool.protocol),
        tls=_tls(tls.server_tls, pool, files_dir),
        servers=tuple(_server(member) for member in pool.members),
    )


def _refuse_unsupported(spec: LoadBalancerSpec) -> None:
    for listener in spec.listeners:
        if listener.protocol in _UNSUPPORTED_LISTENERS:
            raise UnsupportedFeature(
                f"listener {listener.id}: protocol {listener.protocol} is not supported yet"
            )
        if listener.protocol not in _LISTENER_MODES:
            raise RenderError(f"listener {listener.id}: unknown protocol {listener.protocol!r}")
    for pool in spec.pools:
        if pool.protocol in _UNSUPPORTED_POOLS:
            raise UnsupportedFeature(
                f"pool {pool.id}: protocol {pool.protocol} is not supported yet"
            )
        if pool.protocol not in c.POOL_PROTOCOLS:
            raise RenderError(f"pool {pool.id}: unknown protocol {pool.protocol!r}")


def instance_maxconn(
    spec: LoadBalancerSpec, listener_maxconn: int = DEFAULT_LISTENER_MAXCONN
) -> int:
    """The global maxconn of an instance: what its listeners may hold together.

    A listener counts its connection_limit, or `listener_maxconn` when unlimited; the
    sum is capped by what the descriptor limit allows (`MAXCONN_CAP`).
    """
    total = sum(
        lst.connection_limit if lst.connection_limit > 0 else listener_maxconn
        for lst in spec.listeners
        if lst.admin_state_up
    )
    return max(1, min(MAXCONN_CAP, total or listener_maxconn))


def _views(
    spec: LoadBalancerSpec, maxconn: int, files_dir: str | None = None
) -> tuple[list[Frontend], list[Backend]]:
    _refuse_unsupported(spec)
    pools = {pool.id: pool for pool in spec.pools if pool.admin_state_up}
    vip = _ip(spec.vip_address, "vip_address")
    frontends: list[Frontend] = []
    # pool id -> listeners using it, the listener whose default pool it is first
    users: dict[str, list[tuple[ListenerSpec, bool]]] = {}
    for listener in spec.listeners:
        if not listener.admin_state_up:  # Octavia does not render disabled listeners
            continue
        frontend, used = _frontend(
            listener, spec.vip_address, spec.admin_state_up, maxconn, set(pools), files_dir
        )
        frontends.append(frontend)
        for pool_id in used:
            users.setdefault(pool_id, []).append((listener, pool_id == frontend.default_backend))
    backends: list[Backend] = []
    for pool_id, pool in pools.items():  # spec order, so the output is stable
        if pool_id not in users:
            continue
        listeners = users[pool_id]
        # A backend serves every listener that uses it: timeouts come from the listener
        # whose default pool it is (else the first one switching to it).
        owner = next((lst for lst, is_default in listeners if is_default), listeners[0][0])
        http = any(_LISTENER_MODES[lst.protocol] == "http" for lst, _ in listeners)
        stick_type: Literal["ip", "ipv6"] = "ipv6" if vip.version == 6 else "ip"
        backends.append(_backend(pool, owner, http, stick_type, files_dir))
    return frontends, backends


# --- entry point ---------------------------------------------------------------------------

_TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # HAProxy syntax, not HTML: safety comes from `q` and `ident`
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["q"] = quote
    env.filters["ident"] = ident
    env.filters["addr"] = lambda value: _host(value, "address")
    return env


def render_haproxy(
    spec: LoadBalancerSpec,
    paths: HAProxyPaths,
    peers: PeersSpec | None = None,
    maxconn: int | None = None,
    access_log: AccessLog = "all",
    nbthread: int = DEFAULT_NBTHREAD,
    listener_maxconn: int = DEFAULT_LISTENER_MAXCONN,
    instance_id: str | None = None,
    log_ring_size: int = LOG_RING_SIZE,
    request_id_header: bool = False,
    protection: ProtectionSettings | None = None,
) -> str:
    """Render the complete HAProxy configuration for one load balancer instance.

    `peers` (ACTIVE_STANDBY) adds a `peers` section and shares the persistence
    stick tables with the other instance. `maxconn` is the global connection limit,
    by default derived from the listeners (`instance_maxconn`), where an unlimited
    listener counts `listener_maxconn`. `nbthread` is HAProxy's thread count.

    `protection` adds the frame of a protection profile (stick tables, per-source
    rules reading their thresholds from map files under `paths.files_dir`; see
    `openha.render.protection`) and its static guards (request head timeout, a cap
    on every listener's client timeout).

    Raises `UnsupportedFeature` for objects this renderer cannot serve and
    `RenderError` for any value that fails its grammar; nothing is ever escaped.
    """
    if access_log not in ACCESS_LOG_MODES:
        raise RenderError(f"access_log must be one of {', '.join(ACCESS_LOG_MODES)}")
    if not 1 <= nbthread <= 64:
        raise RenderError(f"nbthread must be between 1 and 64, got {nbthread}")
    if listener_maxconn < 1:
        raise RenderError(f"listener maxconn must be positive, got {listener_maxconn}")
    global_maxconn = instance_maxconn(spec, listener_maxconn) if maxconn is None else maxconn
    if global_maxconn < 1:
        raise RenderError(f"maxconn must be positive, got {global_maxconn}")
    if not 1 << 16 <= log_ring_size <= 1 << 28:
        raise RenderError(f"the log ring must hold 64 KiB to 256 MiB, got {log_ring_size}")
    frontends, backends = _views(spec, min(global_maxconn, listener_maxconn), paths.files_dir)
    protect = _protection_frame(protection, paths)
    if protect is not None and protect.timeout_client_max is not None:
        cap = protect.timeout_client_max
        # 0 is "no timeout" for a listener: the cap applies to it too.
        frontends = [
            replace(fe, timeout_client=min(fe.timeout_client or cap, cap)) for fe in frontends
        ]
    who = instance_id or spec.id
    log_formats = {
        mode: access_log_format(mode, spec.id, who, spec.project_id) for mode in ("http", "tcp")
    }
    return (
        _environment()
        .get_template("haproxy.cfg.j2")
        .render(
            lb_id=spec.id,
            generation=spec.generation,
            paths=paths,
            peers=peers,
            peers_section=PEERS_SECTION,
            maxconn=global_maxconn,
            nbthread=nbthread,
            access_log=access_log,
            hard_stop_after=HARD_STOP_AFTER,
            close_spread_time=CLOSE_SPREAD_TIME,
            log_length=LOG_LINE_LENGTH,
            log_ring=LOG_RING,
            log_ring_size=log_ring_size,
            log_tag=LOG_TAG_PREFIX + spec.id,
            log_formats=log_formats,
            unique_id_format=UNIQUE_ID_FORMAT,
            request_id_header=request_id_header,
            stick_size=STICK_TABLE_SIZE,
            persistence_cookie=PERSISTENCE_COOKIE,
            defaults={
                "connect": c.DEFAULT_TIMEOUT_MEMBER_CONNECT,
                "client": c.DEFAULT_TIMEOUT_CLIENT_DATA,
                "server": c.DEFAULT_TIMEOUT_MEMBER_DATA,
            },
            frontends=frontends,
            backends=backends,
            prometheus_path=PROMETHEUS_PATH,
            prometheus_scopes=PROMETHEUS_SCOPES,
            protect=protect,
            source_type="ipv6" if _ip(spec.vip_address, "vip_address").version == 6 else "ip",
        )
    )


def _protection_frame(
    protection: ProtectionSettings | None, paths: HAProxyPaths
) -> ProtectionFrame | None:
    if protection is None:
        return None
    if paths.files_dir is None or paths.protect_socket is None:
        raise RenderError(
            "a protection profile needs the instance's files directory and refresh socket"
        )
    try:
        return frame(protection, paths.files_dir, paths.protect_socket)
    except ProtectionRenderError as exc:
        raise RenderError(str(exc)) from None
