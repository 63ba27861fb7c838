"""Render the configuration of an agent's own rsyslogd: HAProxy lines to files and collectors.

One rsyslogd per agent, with everything under the agent's directory (never the
system's `/etc/rsyslog.conf`). It listens on one unix stream socket where every
instance's HAProxy forwards its log ring, and for each line:
- access lines (the JSON objects HAProxy builds) are written as they are to
  `<logs_root>/<lb id>/access.log`, the LB id taken from the syslog tag `lb-<id>`
  the renderer of HAProxy configs sets; other lines (admin events: servers up and
  down, reloads) are wrapped in a JSON object and written to `admin.log` beside it;
- lines of a load balancer whose delivery includes a syslog target are also sent
  to that collector as RFC 5424 over TCP (octet-counted framing) or TLS, through an
  action queue that spills to disk while the collector is away, up to a spool
  limit, past which lines are dropped (and counted: `impstats`).
Which load balancer goes to which collector is a lookup table rsyslog reloads on
SIGHUP, so a new load balancer never restarts rsyslogd; only a new collector does.
Messages are at most 16 KiB (HAProxy's lines at most 8 KiB): each of the many
connections (one per HAProxy process) holds a buffer of that size.

Every value written here is a path of the agent's own, a number, or a target that
`openha.domain.logtargets` checked strictly; strings are still checked again for
anything that could end an rsyslog string before they are written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from openha.domain.logtargets import SyslogTarget

TAG_PREFIX = "lb-"
LOOKUP_TABLE = "oh_targets"
STATS_RULESET = "oh_stats"
_SAFE = re.compile(r"[A-Za-z0-9_./:@+=,-]+")


class RsyslogRenderError(ValueError):
    """A value that cannot be written into the rsyslog configuration."""


def _s(value: str) -> str:
    """An rsyslog string literal of a value that needs no escaping (else refused)."""
    if not _SAFE.fullmatch(value):
        raise RsyslogRenderError(f"refusing to write {value!r} into the rsyslog configuration")
    return f'"{value}"'


@dataclass(frozen=True)
class RsyslogLayout:
    socket: str  # where HAProxy forwards its ring (unix stream)
    work_dir: str  # queues spill here
    logs_root: str  # <logs_root>/<lb id>/{access,admin}.log
    stats_file: str  # impstats counters, a JSON object per line
    lookup_file: str  # LB tag -> ",<target id>,…," (see `lookup_table`)
    own_log: str  # rsyslogd's own messages and lines of no load balancer


@dataclass(frozen=True)
class Forward:
    """One remote syslog collector, and the disk its queue may fill while it is away."""

    target: SyslogTarget
    spool_bytes: int
    ca_file: str


def lookup_table(targets_by_lb: Mapping[str, Sequence[str]]) -> str:
    """rsyslog's lookup table: which collectors each load balancer's lines go to."""
    table = [
        {"index": TAG_PREFIX + lb_id, "value": "," + ",".join(sorted(ids)) + ","}
        for lb_id, ids in sorted(targets_by_lb.items())
        if ids
    ]
    return json.dumps({"version": 1, "nomatch": "", "type": "string", "table": table}) + "\n"


def _forward(fwd: Forward) -> str:
    t = fwd.target
    name = f"oh_fwd_{t.id}"
    tls = ""
    if t.protocol == "tls":
        tls = (
            ' StreamDriver="ossl" StreamDriverMode="1" StreamDriverAuthMode="x509/name"'
            f" StreamDriverPermittedPeers={_s(t.permitted_peer or t.host)}"
            f" StreamDriver.CAFile={_s(fwd.ca_file)}"
        )
    return f"""
    if $.oh_t contains ",{t.id}," then {{
        action(type="omfwd" name={_s(name)} target={_s(t.host)} port="{int(t.port)}"
               protocol="tcp" TCP_Framing="octet-counted" template="oh_rfc5424"{tls}
               queue.type="LinkedList" queue.filename={_s(name)} queue.size="50000"
               queue.maxDiskSpace="{int(fwd.spool_bytes)}" queue.saveOnShutdown="on"
               queue.timeoutEnqueue="0" queue.checkpointInterval="1000"
               action.resumeRetryCount="-1" action.resumeInterval="1"
               action.resumeIntervalMax="5" action.reportSuspension="on")
    }}"""


def render_rsyslog(
    layout: RsyslogLayout, forwards: Sequence[Forward], stats_interval: int = 5
) -> str:
    """The whole rsyslog.conf of an agent."""
    if not 1 <= stats_interval <= 3600:
        raise RsyslogRenderError("the stats interval must be 1 to 3600 seconds")
    fwd = "".join(_forward(f) for f in forwards)
    lookup = ""
    if forwards:
        lookup = f'\n    set $.oh_t = lookup("{LOOKUP_TABLE}", $programname);{fwd}'
    root = layout.logs_root.rstrip("/")
    _s(root)
    return f"""# rsyslogd of an OpenHA agent: written by the agent, which restarts it when this
# changes. Only HAProxy's lines of this host's load balancers come here.
global(workDirectory={_s(layout.work_dir)} maxMessageSize="16k"
       processInternalMessages="on" parser.permitSlashInProgramName="off")
main_queue(queue.type="FixedArray" queue.size="200000" queue.dequeueBatchSize="1024")

module(load="imptcp" threads="1")
module(load="impstats" interval="{stats_interval}" format="json" resetCounters="off"
       log.syslog="on" ruleset="{STATS_RULESET}")

lookup_table(name="{LOOKUP_TABLE}" file={_s(layout.lookup_file)} reloadOnHUP="on")

template(name="oh_access_path" type="list") {{
    constant(value="{root}/")
    property(name="programname" position.from="{len(TAG_PREFIX) + 1}" securepath="replace")
    constant(value="/access.log")
}}
template(name="oh_admin_path" type="list") {{
    constant(value="{root}/")
    property(name="programname" position.from="{len(TAG_PREFIX) + 1}" securepath="replace")
    constant(value="/admin.log")
}}
# HAProxy writes "tag[pid]: message": the message starts after one space.
template(name="oh_access_line" type="list") {{
    property(name="msg" position.from="2")
    constant(value="\\n")
}}
template(name="oh_admin_line" type="list") {{
    constant(value="{{\\"ts\\":")
    property(name="timegenerated" dateFormat="unixtimestamp")
    constant(value=".")
    property(name="timegenerated" dateFormat="subseconds")
    constant(value=",\\"kind\\":\\"admin\\",\\"lb\\":\\"")
    property(name="programname" position.from="{len(TAG_PREFIX) + 1}" format="json")
    constant(value="\\",\\"severity\\":\\"")
    property(name="syslogseverity-text")
    constant(value="\\",\\"message\\":\\"")
    property(name="msg" position.from="2" format="json")
    constant(value="\\"}}\\n")
}}
template(name="oh_rfc5424" type="list") {{
    constant(value="<")
    property(name="pri")
    constant(value=">1 ")
    property(name="timereported" dateFormat="rfc3339")
    constant(value=" ")
    property(name="hostname")
    constant(value=" ")
    property(name="app-name")
    constant(value=" ")
    property(name="procid")
    constant(value=" - - ")
    property(name="msg" position.from="2")
}}
template(name="oh_raw" type="list") {{
    property(name="msg")
    constant(value="\\n")
}}

ruleset(name="{STATS_RULESET}") {{
    action(type="omfile" file={_s(layout.stats_file)} template="oh_raw")
}}

ruleset(name="oh_haproxy") {{
    if not ($programname startswith "{TAG_PREFIX}") then {{
        action(type="omfile" file={_s(layout.own_log)})
        stop
    }}
    if $msg startswith " {{" then {{
        action(type="omfile" name="oh_access" dynaFile="oh_access_path"
               template="oh_access_line" dynaFileCacheSize="1000" createDirs="on"
               dirCreateMode="0700" fileCreateMode="0600" ioBufferSize="256k"
               flushOnTXEnd="on" asyncWriting="off")
    }} else {{
        action(type="omfile" name="oh_admin" dynaFile="oh_admin_path"
               template="oh_admin_line" dynaFileCacheSize="200" createDirs="on"
               dirCreateMode="0700" fileCreateMode="0600" flushOnTXEnd="on")
    }}{lookup}
}}

# Writable by all: each instance's HAProxy, chrooted as its own uid, reaches it through
# a hard link in its chroot; this directory is root's alone (agent.sandbox).
input(type="imptcp" path={_s(layout.socket)} unlink="on" fileCreateMode="0666"
      ruleset="oh_haproxy" supportOctetCountedFraming="on")

# rsyslogd's own messages.
action(type="omfile" file={_s(layout.own_log)})
"""
