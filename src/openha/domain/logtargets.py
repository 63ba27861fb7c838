"""Where access logs are delivered besides the host's disk: remote syslog and S3 stores.

A target comes from the deployment (`Settings.log_targets`) or from a flavor profile
(`log_targets`, a list). Each one is checked here, strictly, because its values are
written into the host's rsyslog configuration (syslog targets) or used to address an
object store (S3 targets): a host name is an RFC 1123 name or an IP literal, a port
a number, a bucket an S3 bucket name, an endpoint a bare `http(s)://host[:port]`.
Nothing else is accepted (extra keys are refused), so nothing a caller sends can
break out of an rsyslog string or reach a path.

Credentials never travel here: an S3 target names a store, the agent host brings
its own credentials (boto3's usual chain: environment, `~/.aws`, instance roles).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

MAX_TARGETS = 4
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}$")
# S3 bucket naming rules: 3-63 lowercase letters, digits, dots and hyphens, starting and
# ending with a letter or digit, no two dots in a row, not an IP address.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ENDPOINT = re.compile(
    r"^(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:(?P<port>\d{1,5}))?/?$"
)
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def check_host(value: str) -> str:
    """An RFC 1123 host name or an IP address literal (IPv6 without brackets)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(value):
        raise ValueError("must be a host name (RFC 1123) or an IP address")
    return value.lower()


def check_bucket(value: str) -> str:
    if not _BUCKET.fullmatch(value) or ".." in value:
        raise ValueError("must be an S3 bucket name (3-63 of a-z 0-9 . -)")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return value
    raise ValueError("a bucket name must not look like an IP address")


def check_endpoint(value: str) -> str:
    match = _ENDPOINT.fullmatch(value)
    if not match:
        raise ValueError("must be http(s)://host[:port] with no path, user or query")
    host = match.group("host")
    check_host(host[1:-1] if host.startswith("[") else host)
    port = match.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError("port must be between 1 and 65535")
    return value.rstrip("/")


class _Target(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @property
    def id(self) -> str:
        """A stable short name for the target (rsyslog action and queue names, markers)."""
        canonical = self.model_dump_json()
        return "t" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


class SyslogTarget(_Target):
    """RFC 5424 over TCP (octet-counted framing), or over TLS (RFC 5425)."""

    type: Literal["syslog"]
    host: str
    port: int = Field(514, ge=1, le=65535)
    protocol: Literal["tcp", "tls"] = "tcp"
    # TLS only: the name the collector's certificate must carry (default: `host`).
    permitted_peer: str | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value)

    @field_validator("permitted_peer")
    @classmethod
    def _peer(cls, value: str | None) -> str | None:
        return None if value is None else check_host(value)


class S3Target(_Target):
    """gzip'd JSON-lines objects per load balancer and interval, `project/lb/YYYY/MM/DD/HH/…`."""

    type: Literal["s3"]
    endpoint: str
    bucket: str
    region: str = "us-east-1"
    # Seconds between two objects of one load balancer (a busy one also ships whenever
    # a segment fills up).
    interval: int = Field(300, ge=1, le=86400)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return check_endpoint(value)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return check_bucket(value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.fullmatch(value):
            raise ValueError("must be a region name (a-z 0-9 -)")
        return value


LogTarget = Annotated[SyslogTarget | S3Target, Field(discriminator="type")]
_TARGETS: TypeAdapter[list[LogTarget]] = TypeAdapter(list[LogTarget])


class InvalidLogTargets(ValueError):
    """A `log_targets` value that is not a list of valid targets."""


def parse_targets(value: Any) -> tuple[SyslogTarget | S3Target, ...]:
    """Strictly parsed targets; raises InvalidLogTargets with a short, clear reason."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidLogTargets("log_targets must be a list of targets")
    if len(value) > MAX_TARGETS:
        raise InvalidLogTargets(f"log_targets holds at most {MAX_TARGETS} targets")
    try:
        targets = _TARGETS.validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidLogTargets(f"log_targets[{where}]: {first['msg']}") from None
    unique: dict[str, SyslogTarget | S3Target] = {}
    for target in targets:
        unique.setdefault(target.id, target)
    return tuple(unique.values())


def merged(*groups: Sequence[SyslogTarget | S3Target]) -> tuple[SyslogTarget | S3Target, ...]:
    """Targets of several sources, each once, in order."""
    out: dict[str, SyslogTarget | S3Target] = {}
    for group in groups:
        for target in group:
            out.setdefault(target.id, target)
    return tuple(out.values())
