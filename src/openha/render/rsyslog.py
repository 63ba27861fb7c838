"""Render the configuration of an agent's own rsyslogd: HAProxy lines to files and collectors.

One rsyslogd per agent, with everything under the agent's directory (never the
system's `/etc/rsyslog.conf`). Each instance's HAProxy forwards its log ring to an
input of its own: a unix stream socket per slot (`<inputs_dir>/<n>.sock`, named
`oh_in_<n>`), which the agent hands to one instance at a time (a hard link in its
chroot, owned by its uid alone). The load balancer a line is filed under is the one
its input belongs to (the lookup table `oh_inputs`, reloaded on SIGHUP), never the
tag the sender wrote: an instance cannot write into another's log. Slots come in
blocks of `INPUT_BLOCK`, so only a host outgrowing its block restarts rsyslogd. A
last socket (`socket`, root's alone) trusts the tag `lb-<id>` of what root's own
processes send (tools, the benchmarks' hand-written HAProxy). Then, for each line:
- access lines (the JSON objects HAProxy builds) are written as they are to
  `<logs_root>/<lb id>/access.log`; other lines (admin events: servers up and
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
INPUTS_TABLE = "oh_inputs"
INPUT_PREFIX = "oh_in_"
ROOT_INPUT = "oh_root"
# Instance inputs are rendered by the block: one more instance than the block holds
# restarts rsyslogd (lines wait in HAProxy's rings meanwhile), any other only HUPs it.
INPUT_BLOCK = 64
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
    socket: str  # root's own input (unix stream): the sender's tag names the LB
    work_dir: str  # queues spill here
    logs_root: str  # <logs_root>/<lb id>/{access,admin}.log
    stats_file: str  # impstats counters, a JSON object per line
    lookup_file: str  # LB id -> ",<target id>,…," (see `lookup_table`)
    own_log: str  # rsyslogd's own messages and lines of no load balancer
    inputs_dir: str  # <inputs_dir>/<n>.sock: the instances' inputs, one each
    inputs_file: str  # input name -> LB id (see `inputs_table`)

    def input_socket(self, slot: int) -> str:
        return f"{self.inputs_dir.rstrip('/')}/{int(slot)}.sock"


def input_name(slot: int) -> str:
    return f"{INPUT_PREFIX}{int(slot)}"


def input_slots(highest: int | None) -> int:
    """How many instance inputs to render when `highest` is the highest slot in use."""
    return INPUT_BLOCK * (1 + (highest or 0) // INPUT_BLOCK)


@dataclass(frozen=True)
class Forward:
    """One remote syslog collector, and the disk its queue may fill while it is away."""

    target: SyslogTarget
    spool_bytes: int
    ca_file: str


def lookup_table(targets_by_lb: Mapping[str, Sequence[str]]) -> str:
    """rsyslog's lookup table: which collectors each load balancer's lines go to."""
    table = [
        {"index": lb_id, "value": "," + ",".join(sorted(ids)) + ","}
        for lb_id, ids in sorted(targets_by_lb.items())
        if ids
    ]
    return json.dumps({"version": 1, "nomatch": "", "type": "string", "table": table}) + "\n"


def inputs_table(lb_by_slot: Mapping[int, str]) -> str:
    """rsyslog's lookup table: the load balancer each instance input's lines belong to."""
    table = [
        {"index": input_name(slot), "value": _lb_id(lb_id)}
        for slot, lb_id in sorted(lb_by_slot.items())
    ]
    return json.dumps({"version": 1, "nomatch": "", "type": "string", "table": table}) + "\n"


_LB_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def _lb_id(value: str) -> str:
    """A load balancer id as it may become a directory name (no `/`, no `..`)."""
    if not _LB_ID.fullmatch(value):
        raise RsyslogRenderError(f"refusing {value!r} as a load balancer id")
    return value


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


def _inputs(layout: RsyslogLayout, slots: int) -> str:
    return "".join(
        f'input(type="imptcp" name="{input_name(n)}" path={_s(layout.input_socket(n))}'
        ' unlink="on"\n      fileCreateMode="0600" ruleset="oh_haproxy"'
        ' supportOctetCountedFraming="on")\n'
        for n in range(slots)
    )


def render_rsyslog(
    layout: RsyslogLayout,
    forwards: Sequence[Forward],
    stats_interval: int = 5,
    inputs: int = INPUT_BLOCK,
) -> str:
    """The whole rsyslog.conf of an agent, with `inputs` instance inputs."""
    if not 1 <= stats_interval <= 3600:
        raise RsyslogRenderError("the stats interval must be 1 to 3600 seconds")
    if not 0 <= inputs <= 1 << 16:
        raise RsyslogRenderError("at most 65536 instance inputs")
    fwd = "".join(_forward(f) for f in forwards)
    lookup = ""
    if forwards:
        lookup = f'\n    set $.oh_t = lookup("{LOOKUP_TABLE}", $.lb);{fwd}'
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
lookup_table(name="{INPUTS_TABLE}" file={_s(layout.inputs_file)} reloadOnHUP="on")

template(name="oh_access_path" type="list") {{
    constant(value="{root}/")
    property(name="$.lb" securepath="replace")
    constant(value="/access.log")
}}
template(name="oh_admin_path" type="list") {{
    constant(value="{root}/")
    property(name="$.lb" securepath="replace")
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
    property(name="$.lb" format="json")
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
    constant(value="{TAG_PREFIX}")
    property(name="$.lb")
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
    # An instance's line belongs to its input's LB, whatever its tag says; on root's
    # own input, the tag names it.
    if $inputname == "{ROOT_INPUT}" then {{
        set $.lb = re_extract($programname, '^{TAG_PREFIX}([A-Za-z0-9-]{{1,64}})$', 0, 1, "");
    }} else {{
        set $.lb = lookup("{INPUTS_TABLE}", $inputname);
    }}
    if $.lb == "" then {{
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

# Root's own input: only root's processes reach it (mode 0600).
input(type="imptcp" name="{ROOT_INPUT}" path={_s(layout.socket)} unlink="on"
      fileCreateMode="0600" ruleset="oh_haproxy" supportOctetCountedFraming="on")
# The instances' inputs, root's until the agent gives one to an instance's uid and
# links it into that instance's chroot (agent.sandbox); their directory is root's alone.
{_inputs(layout, inputs)}
# rsyslogd's own messages.
action(type="omfile" file={_s(layout.own_log)})
"""
