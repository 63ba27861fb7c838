"""The sources an instance sees most of, read from the protection stick table (`show table`).

One `show table openha_protect` answers every tracked source with its counters:
`0x…: key=192.0.2.7 use=0 exp=59960 shard=0 gpc0=4 gpc0_rate(10000)=4
conn_rate(10000)=9 conn_cur=1 http_req_rate(10000)=9 http_err_rate(10000)=0`.
Rates are per the table's period (the profile's `RATE_PERIOD_S`); `gpc0` counts the
source's limit trips, so a source whose trip rate is not zero is being limited now.

Beside them, the thresholds the process compares with right now (its `proc.oh_*`
variables, `get var`): what under-attack mode put in force, read from the process
itself rather than from the map file the agent wrote.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from openha.render.protection import LIMIT_VARIABLES, SOURCE_TABLE

_ENTRY = re.compile(r"^0x[0-9a-f]+:\s+key=(?P<key>\S+)\s+(?P<rest>.*)$")
_FIELD = re.compile(r"(?P<name>[a-z_0-9]+)(?:\((?P<period>\d+)\))?=(?P<value>-?\d+)")
_VAR = re.compile(r"^proc\.(?P<name>[a-z_]+): type=\w+ value=<(?P<value>-?\d+)>$", re.M)
# The variables read back, by the limits map's key (a derived one, times a factor, is not).
_LIMIT_VARIABLES = {v.name: v.key for v in LIMIT_VARIABLES if v.factor == 1}

# The stick-table columns reported, under the names the API answers with.
COLUMNS = {
    "conn_cur": "connections",
    "conn_rate": "connection_rate",
    "http_req_rate": "request_rate",
    "http_err_rate": "error_rate",
    "gpc0": "limited_total",
    "gpc0_rate": "limited_rate",
}


def parse_show_table(text: str) -> list[dict[str, Any]]:
    """Every entry of a `show table` answer: source and counters (missing ones are 0)."""
    out = []
    for line in text.splitlines():
        found = _ENTRY.match(line.strip())
        if not found:
            continue
        entry: dict[str, Any] = {"source": found["key"], **dict.fromkeys(COLUMNS.values(), 0)}
        for field in _FIELD.finditer(found["rest"]):
            name = COLUMNS.get(field["name"])
            if name is not None:
                entry[name] = int(field["value"])
        entry["limited"] = entry["limited_rate"] > 0
        out.append(entry)
    return out


def parse_trips(text: str) -> dict[str, int]:
    """The trips table (`show table openha_protect_trips`): limit kind -> trips so far."""
    trips = {}
    for line in text.splitlines():
        found = _ENTRY.match(line.strip())
        if found:
            counter = re.search(r"\bgpc0=(\d+)", found["rest"])
            trips[found["key"]] = int(counter.group(1)) if counter else 0
    return trips


def rank(entries: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The `limit` busiest sources: by request rate, then connection rate, then connections."""
    return sorted(
        entries,
        key=lambda e: (-e["request_rate"], -e["connection_rate"], -e["connections"], e["source"]),
    )[:limit]


def limits_in_force(runtime: Callable[[str], str]) -> dict[str, int]:
    """The thresholds the running process compares with, by the limits map's keys."""
    answer = runtime(";".join(f"get var proc.{name}" for name in _LIMIT_VARIABLES))
    return {
        _LIMIT_VARIABLES[m["name"]]: int(m["value"])
        for m in _VAR.finditer(answer)
        if m["name"] in _LIMIT_VARIABLES
    }


def top_talkers(runtime: Callable[[str], str], limit: int) -> dict[str, Any]:
    """This instance's busiest sources and limits in force; `protected` is False when
    it has no table."""
    answer = runtime(f"show table {SOURCE_TABLE}")
    if not answer.lstrip().startswith("# table:"):
        return {"protected": False, "sources": [], "tracked": 0, "limits": {}}
    entries = parse_show_table(answer)
    return {
        "protected": True,
        "sources": rank(entries, limit),
        "tracked": len(entries),
        "limits": limits_in_force(runtime),
    }
