"""HAProxy's `show info` and `show stat` answers as Prometheus metric families.

Pure translation, no I/O: `InstanceMetrics.add` takes one instance's answers and
the labels that name it (project, load balancer, instance) and appends samples to
families shared by every instance of the host, so the agent's `/metrics` declares
each family once. Our rendered configs name frontends, backends and servers by
listener, pool and member id (`openha.render.haproxy`), so HAProxy's names become
`listener_id`, `pool_id` and `member_id` labels as they are.

Names follow HAProxy's own exporter (`haproxy_frontend_bytes_in_total`...), so
dashboards written for it read these too; its per-instance HTTP output is ~50 KB
for one listener and would be parsed again here, `show stat` is a few hundred bytes.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from openha.agent.haproxy import normalize_status
from openha.domain import constants as c
from openha.domain.status import member_status

_Family = CounterMetricFamily | GaugeMetricFamily
INSTANCE_LABELS = ("project_id", "loadbalancer_id", "instance_id")
_LEVEL_LABELS = {
    "frontend": ("listener_id",),
    "backend": ("pool_id",),
    "server": ("pool_id", "member_id"),
}


@dataclass(frozen=True)
class Field:
    """One `show stat` column: its metric name (after `haproxy_<level>_`), kind and help."""

    column: str
    name: str
    counter: bool
    help: str
    scale: float = 1.0  # milliseconds columns become seconds


def _g(column: str, name: str, help: str, scale: float = 1.0) -> Field:
    return Field(column, name, False, help, scale)


def _c(column: str, name: str, help: str) -> Field:
    return Field(column, name, True, help)


_COMMON = (
    _g("scur", "current_sessions", "Current sessions"),
    _g("smax", "max_sessions", "Highest number of concurrent sessions"),
    _c("stot", "sessions", "Sessions"),
    _c("bin", "bytes_in", "Bytes received from clients"),
    _c("bout", "bytes_out", "Bytes sent to clients"),
)
_SERVED = (  # backends and servers
    _g("qcur", "current_queue", "Requests waiting for a connection"),
    _c("econ", "connection_errors", "Failed connections to a member"),
    _c("eresp", "response_errors", "Response errors"),
    _c("wretr", "retry_warnings", "Connection retries"),
    _c("wredis", "redispatch_warnings", "Redispatches to another member"),
    _c("lbtot", "loadbalanced", "Times selected by the balancing algorithm"),
    _c("downtime", "downtime_seconds", "Time spent down"),
    _g("qtime", "queue_time_average_seconds", "Average queue time, last 1024 requests", 1e-3),
    _g("ctime", "connect_time_average_seconds", "Average connect time, last 1024", 1e-3),
    _g("rtime", "response_time_average_seconds", "Average response time, last 1024", 1e-3),
    _g("ttime", "total_time_average_seconds", "Average total time, last 1024", 1e-3),
)
FIELDS: Mapping[str, tuple[Field, ...]] = {
    "frontend": (
        *_COMMON,
        _g("slim", "limit_sessions", "Session limit (maxconn)"),
        _g("rate", "current_session_rate", "Sessions per second, last second"),
        _c("conn_tot", "connections", "Connections accepted"),
        _c("dreq", "requests_denied", "Requests denied (ACLs)"),
        _c("ereq", "request_errors", "Request errors"),
        _c("req_tot", "http_requests", "HTTP requests"),
    ),
    "backend": (
        *_COMMON,
        *_SERVED,
        _g("act", "active_servers", "Active members up"),
        _g("bck", "backup_servers", "Backup members up"),
    ),
    "server": (
        *_COMMON,
        *_SERVED,
        _g("weight", "weight", "Effective weight"),
        _c("chkfail", "check_failures", "Failed health checks"),
        _c("chkdown", "check_up_down", "UP to DOWN transitions"),
        _g("lastchg", "last_status_change_seconds", "Seconds since the last state change"),
    ),
}
# Families every level but the process has besides its fields (after `haproxy_<level>_`).
HTTP_RESPONSES, STATUS, UP = "http_responses", "status", "up"
_SERVING = (c.ONLINE, c.NO_MONITOR)  # UP (or going down), or not checked
_HTTP_CODES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
# `show info` fields of the process (the instance).
INFO_FIELDS = (
    _g("Uptime_sec", "uptime_seconds", "Seconds since the HAProxy process started"),
    _g("CurrConns", "current_connections", "Connections open now"),
    _c("CumConns", "connections", "Connections accepted"),
    _c("CumReq", "requests", "Requests (HTTP or TCP sessions)"),
    _g("Maxconn", "max_connections", "Global connection limit (maxconn)"),
    _g("Idle_pct", "idle_time_percent", "Idle time of the process, percent"),
)


def _number(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def split_answers(text: str) -> tuple[str, str]:
    """`show info;show stat` answers in one: (info, stat). HAProxy ends each with a blank line."""
    info, _, stat = text.partition("\n\n")
    return info, stat


def parse_info(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    return values


def parse_stat(text: str) -> Iterator[dict[str, str]]:
    """`show stat` CSV rows by column name (csv handles the quoted free-text columns)."""
    text = text.lstrip()
    if text.startswith("# "):
        text = text[2:]
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if not header:
        return
    for fields in rows:
        if len(fields) > 2:
            yield dict(zip(header, fields, strict=False))


def _level(svname: str) -> str:
    return {"FRONTEND": "frontend", "BACKEND": "backend"}.get(svname, "server")


class InstanceMetrics:
    """The families of one scrape; `add` each instance, then `families()`."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def _family(self, name: str, counter: bool, help: str, labels: tuple[str, ...]) -> _Family:
        family = self._families.get(name)
        if family is None:
            family = (
                CounterMetricFamily(name, help, labels=list(labels))
                if counter
                else GaugeMetricFamily(name, help, labels=list(labels))
            )
            self._families[name] = family
        return family

    def add_up(self, labels: tuple[str, str, str], up: bool, role: str) -> None:
        """Whether the instance's HAProxy answered, and its role (an info metric)."""
        self._family(
            "haproxy_up", False, "Whether the instance's HAProxy answered", INSTANCE_LABELS
        ).add_metric(list(labels), 1.0 if up else 0.0)
        self._family(
            "openha_instance_info",
            False,
            "An instance of a load balancer on this host, and its role",
            (*INSTANCE_LABELS, "role"),
        ).add_metric([*labels, role], 1.0)

    def add(self, labels: tuple[str, str, str], info: str, stat: str) -> None:
        values = parse_info(info)
        for f in INFO_FIELDS:
            number = _number(values.get(f.column, ""))
            if number is not None:
                name = f"haproxy_process_{f.name}" + ("_total" if f.counter else "")
                self._family(name, f.counter, f.help, INSTANCE_LABELS).add_metric(
                    list(labels), number * f.scale
                )
        for row in parse_stat(stat):
            px, sv = row.get("pxname", ""), row.get("svname", "")
            if not px or not sv:
                continue
            level = _level(sv)
            names = (px,) if level != "server" else (px, sv)
            self._row(level, (*labels, *names), row)

    def _row(self, level: str, values: tuple[str, ...], row: Mapping[str, str]) -> None:
        label_names = (*INSTANCE_LABELS, *_LEVEL_LABELS[level])
        for f in FIELDS[level]:
            number = _number(row.get(f.column, ""))
            if number is None:
                continue
            name = f"haproxy_{level}_{f.name}" + ("_total" if f.counter else "")
            self._family(name, f.counter, f.help, label_names).add_metric(
                list(values), number * f.scale
            )
        if row.get("mode") == "http" or any(row.get(f"hrsp_{c}") for c in _HTTP_CODES):
            family = self._family(
                f"haproxy_{level}_{HTTP_RESPONSES}",
                True,
                "HTTP responses by status class",
                (*label_names, "code"),
            )
            for code in _HTTP_CODES:
                number = _number(row.get(f"hrsp_{code}", ""))
                if number is not None:
                    family.add_metric([*values, code], number)
        status = row.get("status", "")
        if level == "frontend" or not status:
            return
        state = normalize_status(status)
        self._family(
            f"haproxy_{level}_{STATUS}",
            False,
            "The current state (one series, value 1: UP, DOWN, MAINT, DRAIN, NOLB, NO_CHECK)",
            (*label_names, "state"),
        ).add_metric([*values, state], 1.0)
        self._family(
            f"haproxy_{level}_{UP}",
            False,
            "1 when taking traffic (UP, or no health check), else 0",
            label_names,
        ).add_metric(list(values), 1.0 if member_status(status, True, True) in _SERVING else 0.0)

    def families(self) -> list[Metric]:
        return list(self._families.values())
