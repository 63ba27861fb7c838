"""Render an instance's keepalived configuration and its VRRP notify script.

The pair shares the VIP with VRRP over unicast: each instance names its peer's
address, so adverts from anything else on the segment are ignored. VRRPv3 is
the default because only v3 allows sub-second adverts (~0.6 s failover at
0.25 s); v3 has no authentication field (RFC 5798 removed it), so with v3 the
unicast peer list and the per-segment router id are what keep strangers out,
and `auth_pass` is rendered only for VRRPv2.

keepalived learns that its HAProxy died from a `track_file` the agent writes ("1"
when it sees HAProxy die, "0" once it serves again; see `agent.service`): inotify,
no process started while all is well. The check script this replaced forked `sh`
and `socat` every second per instance, which 200 pairs on one host could not carry.
The notify script writes each VRRP transition to a state file the agent reports.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import jinja2

from openha.render.haproxy import RenderError

_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_PATH = re.compile(r"^/[A-Za-z0-9_./-]+$")
_SECRET = re.compile(r"^[A-Za-z0-9]{1,8}$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MASTER_PRIORITY: Final = 100
BACKUP_PRIORITY: Final = 90

# The host user keepalived runs check and notify scripts as (`agent.sandbox` creates it).
SCRIPT_USER = "openha-lb"

_TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class VrrpSpec:
    lb_id: str
    instance_id: str
    vrid: int
    priority: int
    interface: str
    local_address: str
    peer_addresses: tuple[str, ...]
    vip: str
    vip_prefixlen: int
    track_file: str  # non-zero: this instance's HAProxy is down (keepalived goes FAULT)
    notify_script: str
    advert_int: float = 0.25
    vrrp_version: int = 3
    auth_pass: str | None = None


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.match(value):
        raise RenderError(f"{what} {value!r} is not allowed in a keepalived configuration")
    return value


def _addr(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise RenderError(f"{what} {value!r} is not an IP address") from None


def render_keepalived(spec: VrrpSpec) -> str:
    if not 1 <= spec.vrid <= 255:
        raise RenderError(f"VRRP router id {spec.vrid} is outside 1-255")
    if not 1 <= spec.priority <= 254:
        raise RenderError(f"VRRP priority {spec.priority} is outside 1-254")
    if spec.vrrp_version not in (2, 3):
        raise RenderError("vrrp_version must be 2 or 3")
    if spec.vrrp_version == 2 and spec.advert_int < 1:
        raise RenderError("VRRPv2 adverts are whole seconds")
    if not 0.01 <= spec.advert_int <= 255:
        raise RenderError(f"advert interval {spec.advert_int} is out of range")
    vip = _addr(spec.vip, "VIP")
    max_prefix = 32 if ipaddress.ip_address(vip).version == 4 else 128
    if not 0 <= spec.vip_prefixlen <= max_prefix:
        raise RenderError(f"VIP prefix length {spec.vip_prefixlen} is invalid")
    auth = None
    if spec.vrrp_version == 2 and spec.auth_pass:
        auth = _check(_SECRET, spec.auth_pass, "auth_pass")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    short = spec.instance_id.replace("-", "")[:8]
    return env.get_template("keepalived.conf.j2").render(
        lb_id=_check(_NAME, spec.lb_id, "load balancer id"),
        instance_id=_check(_NAME, spec.instance_id, "instance id"),
        router_name=f"ohi-{short}",
        script_user=SCRIPT_USER,
        instance_name=f"lb_{_check(_NAME, spec.lb_id.replace('-', ''), 'name')[:16]}",
        vrrp_version=spec.vrrp_version,
        track_file=_check(_PATH, spec.track_file, "track file"),
        notify_script=_check(_PATH, spec.notify_script, "notify script"),
        interface=_check(_IFNAME, spec.interface, "interface"),
        vrid=spec.vrid,
        priority=spec.priority,
        advert_int=f"{spec.advert_int:g}",
        local_address=_addr(spec.local_address, "local address"),
        peer_addresses=[_addr(p, "peer address") for p in spec.peer_addresses],
        auth_pass=auth,
        vip=vip,
        vip_prefixlen=spec.vip_prefixlen,
    )


def render_notify_script(state_file: str) -> str:
    """keepalived's notify script: the instance's VRRP state, written atomically.

    keepalived runs it with TYPE NAME STATE PRIORITY on each transition only.
    """
    _check(_PATH, state_file, "state file")
    return (
        "#!/bin/sh\n"
        "# Rendered by OpenHA: keepalived calls it as: notify TYPE NAME STATE PRIORITY.\n"
        'case "$3" in\n'
        "  MASTER|BACKUP|FAULT)\n"
        f"    printf '%s\\n' \"$3\" > '{state_file}.tmp' &&\n"
        f"      mv -f '{state_file}.tmp' '{state_file}' ;;\n"
        "esac\n"
    )
