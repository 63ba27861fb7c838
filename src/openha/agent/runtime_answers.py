"""Parsers of HAProxy runtime API answers, for diagnostics: `show info`, `show stat`,
`show errors` and `show table`.

Pure text → plain data, no socket: the agent's diagnostics (`agent.diagnostics`) send
the commands and the unit tests feed these captured answers. Heartbeats keep using
the lean `agent.haproxy.parse_show_stat`; here every column an operator asks about is
kept, keyed by HAProxy's own column names.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from openha.agent.redact import redact_header_line

# `show info` fields worth a look when something is wrong (the rest is build trivia).
INFO_FIELDS = (
    "Version",
    "Pid",
    "Uptime_sec",
    "Nbthread",
    "Maxconn",
    "Hard_maxconn",
    "Ulimit-n",
    "Maxsock",
    "CurrConns",
    "CumConns",
    "CumReq",
    "ConnRate",
    "MaxConnRate",
    "SessRate",
    "MaxSessRate",
    "CurrSslConns",
    "Idle_pct",
    "Run_queue",
    "Tasks",
    "Jobs",
    "Listeners",
    "Stopping",
    "ActivePeers",
    "ConnectedPeers",
    "DroppedLogs",
    "PoolUsed_bytes",
    "Start_time_sec",
)

# `show stat` columns kept per row type (HAProxy's names).
FRONTEND_COLUMNS = (
    "status",
    "scur",
    "smax",
    "slim",
    "stot",
    "rate",
    "rate_max",
    "rate_lim",
    "conn_rate",
    "req_rate",
    "req_tot",
    "ereq",
    "dreq",
    "hrsp_4xx",
    "hrsp_5xx",
    "bin",
    "bout",
)
BACKEND_COLUMNS = (
    "status",
    "scur",
    "smax",
    "slim",
    "stot",
    "qcur",
    "act",
    "bck",
    "chkdown",
    "lastchg",
    "downtime",
    "econ",
    "eresp",
    "hrsp_5xx",
    "algo",
)
SERVER_COLUMNS = (
    "status",
    "addr",
    "weight",
    "scur",
    "smax",
    "slim",
    "stot",
    "qcur",
    "check_status",
    "check_code",
    "check_duration",
    "check_desc",
    "last_chk",
    "check_health",
    "check_rise",
    "check_fall",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "econ",
    "eresp",
    "hrsp_5xx",
)
_NUMERIC = re.compile(r"^-?\d+$")


def _value(text: str) -> int | str | None:
    """A CSV cell as a number when it is one, None when empty."""
    if text == "":
        return None
    return int(text) if _NUMERIC.match(text) else text


def parse_show_info(text: str) -> dict[str, int | str | None]:
    """The essentials of `show info` (`Name: value` lines)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            found[key.strip()] = value.strip()
    return {key: _value(found[key]) for key in INFO_FIELDS if key in found}


def parse_show_stat(text: str) -> dict[str, Any]:
    """`show stat` as {"frontends": {id: …}, "backends": {id: …}, "servers": [...]}.

    The CSV module reads the quoted free-text columns (check descriptions) properly;
    a server row carries its backend's id as `backend` and its own as `id`.
    """
    text = text.lstrip()
    if text.startswith("# "):
        text = text[2:]
    frontends: dict[str, dict[str, Any]] = {}
    backends: dict[str, dict[str, Any]] = {}
    servers: list[dict[str, Any]] = []
    for row in csv.DictReader(io.StringIO(text)):
        px, sv = row.get("pxname") or "", row.get("svname") or ""
        if not px or not sv:
            continue
        if sv == "FRONTEND":
            frontends[px] = {k: _value(row.get(k) or "") for k in FRONTEND_COLUMNS}
        elif sv == "BACKEND":
            backends[px] = {k: _value(row.get(k) or "") for k in BACKEND_COLUMNS}
        else:
            server: dict[str, Any] = {"backend": px, "id": sv}
            server.update({k: _value(row.get(k) or "") for k in SERVER_COLUMNS})
            # "* L4CON": a check is running; its previous result is what the rest says.
            status = str(server.get("check_status") or "")
            server["check_running"] = status.startswith("* ")
            server["check_status"] = status.removeprefix("* ") or None
            servers.append(server)
    return {"frontends": frontends, "backends": backends, "servers": servers}


_ERROR_HEAD = re.compile(
    r"^\[(?P<when>[^\]]+)\] (?P<side>frontend|backend) (?P<proxy>\S+) \(#-?\d+\): (?P<what>.*)$"
)
_ERROR_PEERS = re.compile(
    r"backend (?P<backend>\S+) \(#-?\d+\), server (?P<server>\S+) \(#-?\d+\), "
    r"event #(?P<event>\d+), src (?P<source>\S+)"
)
_ERROR_POSITION = re.compile(r"error at position (?P<pos>\d+)")
_DUMP_LINE = re.compile(r"^\s+\d{5}\s\s(?P<data>.*)$")
MAX_ERROR_DUMP_LINES = 20


def parse_show_errors(text: str) -> dict[str, Any]:
    """`show errors`: the total, and each captured protocol error with its first lines.

    The captured bytes may hold a client's credentials: header lines that carry them
    (Authorization, Cookie…) come back redacted.
    """
    total = 0
    events: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        if line.startswith("Total events captured"):
            tail = line.rpartition(":")[2].strip()
            total = int(tail) if tail.isdigit() else 0
            continue
        head = _ERROR_HEAD.match(line)
        if head:
            current = {
                "when": head["when"],
                "side": head["side"],
                "proxy": head["proxy"],
                "error": head["what"].strip(),
                "backend": None,
                "server": None,
                "source": None,
                "position": None,
                "dump": [],
            }
            events.append(current)
            continue
        if current is None:
            continue
        peers = _ERROR_PEERS.search(line)
        if peers:
            current["backend"] = None if peers["backend"] == "<NONE>" else peers["backend"]
            current["server"] = None if peers["server"] == "<NONE>" else peers["server"]
            current["source"] = peers["source"]
            current["event"] = int(peers["event"])
        position = _ERROR_POSITION.search(line)
        if position:
            current["position"] = int(position["pos"])
        dump = _DUMP_LINE.match(line)
        if dump and len(current["dump"]) < MAX_ERROR_DUMP_LINES:
            current["dump"].append(redact_header_line(dump["data"]))
    return {"total": total, "events": events}


_TABLE = re.compile(
    r"^# table: (?P<name>[^,]+), type: (?P<type>[^,]+), size:(?P<size>\d+), used:(?P<used>\d+)"
)


def parse_show_table(text: str) -> list[dict[str, Any]]:
    """`show table` (no argument): every stick table with its type, size and use."""
    tables = []
    for line in text.splitlines():
        m = _TABLE.match(line.strip())
        if m:
            tables.append(
                {
                    "name": m["name"].strip(),
                    "type": m["type"].strip(),
                    "size": int(m["size"]),
                    "used": int(m["used"]),
                }
            )
    return tables
