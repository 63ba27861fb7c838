"""Pure helpers of the agent: show stat/proc parsing, config diffs, syslog, paths."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from openha.agent.haproxy import (
    normalize_status,
    parse_show_stat,
    runtime_answer_ok,
    runtime_changes,
    summarize_errors,
)
from openha.agent.logs import parse_syslog
from openha.agent.netns import IFNAMSIZ, MAX_LEGS, _delete_link, host_veth_name, tag_candidates
from openha.agent.paths import instance_paths, namespace_name

SHOW_STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,\
wretr,wredis,status,weight
fe1,FRONTEND,,,3,5,9980,120,4096,8192,0,0,7,,,,,OPEN,
be1,m1,0,0,1,2,,60,0,0,,0,,0,0,0,0,UP 1/3,3
be1,m2,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT (via be1/m1),1
be1,m3,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,1
be1,m4,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1
be1,m5,0,0,0,0,,0,0,0,,0,,0,0,0,0,DRAIN,0
be1,BACKEND,0,0,1,2,998,60,0,0,0,0,,0,0,0,0,UP,3
openha_protect,BACKEND,0,0,0,0,1,0,0,0,0,0,,0,0,0,0,UP,0
openha_protect_trip,BACKEND,0,0,0,0,1,9,0,0,0,0,,0,0,0,0,UP,0
openha_protect_refresh,FRONTEND,,,0,1,2000,0,0,0,0,0,0,,,,,OPEN,
"""

BASE = """global
    stats socket /x/stats.sock mode 600 level admin expose-fd listeners
defaults
    mode http
frontend fe1
    bind 10.0.0.5:80
    default_backend be1
backend be1
    balance roundrobin
    server m1 10.0.1.1:80 weight 1 check inter 2s
    server m2 10.0.1.2:80 weight 1 check inter 2s
"""


def test_parse_show_stat() -> None:
    s = parse_show_stat(SHOW_STAT)
    fe = s.listeners["fe1"]
    assert (fe.bytes_in, fe.bytes_out, fe.active_connections) == (4096, 8192, 3)
    assert (fe.total_connections, fe.request_errors) == (120, 7)
    assert s.members == {
        "m1": "UP",
        "m2": "MAINT",
        "m3": "NO_CHECK",
        "m4": "DOWN",
        "m5": "DRAIN",
    }
    assert s.pools == {"be1": "UP"}  # OpenHA's own proxies (openha_*) are no pool
    assert list(s.listeners) == ["fe1"]  # nor a listener


def test_normalize_status() -> None:
    assert normalize_status("UP 2/3") == "UP"
    assert normalize_status("DOWN (agent)") == "DOWN"
    assert normalize_status("MAINT(resolution)") == "MAINT"
    assert normalize_status("MAINT (via be1/m1)") == "MAINT"
    assert normalize_status("DRAIN (agent)") == "DRAIN"
    assert normalize_status("DRAIN") == "DRAIN"
    assert normalize_status("NOLB 1/2") == "NOLB"
    assert normalize_status("") == "UNKNOWN"


def test_namespace_names_never_collide() -> None:
    """Two uuids sharing their first 8 (or 10) hex digits get two namespaces and two tags."""
    a = "8c0e5a1e-11aa-2222-3333-444455556666"
    b = "8c0e5a1e-11bb-2222-3333-444455556666"
    assert namespace_name(a) != namespace_name(b)
    tags_a, tags_b = tag_candidates(namespace_name(a)), tag_candidates(namespace_name(b))
    assert tags_a[0] == tags_b[0] == "8c0e5a1e11"  # readable first choice, shared here...
    assert tags_a[1] != tags_b[1]  # ...so the next candidates differ
    assert len(set(tags_a)) == len(tags_a)
    for tag in tags_a:
        assert len(host_veth_name(tag, MAX_LEGS - 1)) <= IFNAMSIZ
    # Only canonical lowercase uuids: another spelling of one uuid would share a namespace.
    for bad in ("8C0E5A1E-11AA-2222-3333-444455556666", "8c0e5a1e11aa22223333444455556666", "x"):
        with pytest.raises(ValueError):
            namespace_name(bad)


def test_runtime_changes_for_member_only_edits() -> None:
    new = BASE.replace("server m1 10.0.1.1:80 weight 1", "server m1 10.0.1.9:8080 weight 5")
    new = new.replace(
        "server m2 10.0.1.2:80 weight 1 check inter 2s",
        "server m2 10.0.1.2:80 weight 1 check inter 2s disabled",
    )
    assert runtime_changes(BASE, new) == [
        "set server be1/m1 addr 10.0.1.9 port 8080",
        "set server be1/m1 weight 5",
        "set server be1/m2 state maint",
    ]
    assert runtime_changes(new, BASE)[-1] == "set server be1/m2 state ready"
    assert runtime_changes(BASE, BASE + "\n# comment\n") == []


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c + "    server m3 10.0.1.3:80 weight 1\n",  # a new server
        lambda c: c.replace("check inter 2s", "check inter 3s", 1),  # a check setting
        lambda c: c.replace("balance roundrobin", "balance leastconn"),
        lambda c: c.replace("server m1", "server m9"),  # a rename
        lambda c: c.replace("bind 10.0.0.5:80", "bind 10.0.0.5:81"),
        lambda c: c.replace("10.0.1.1:80", "10.0.1.1"),  # no port: cannot express at runtime
    ],
)
def test_runtime_changes_refuses_other_edits(edit) -> None:  # type: ignore[no-untyped-def]
    assert runtime_changes(BASE, edit(BASE)) is None


def test_runtime_answers() -> None:
    assert runtime_answer_ok("\n")
    assert runtime_answer_ok("IP changed from '1.1.1.1' to '1.1.1.2' by 'stats socket command'\n")
    assert not runtime_answer_ok("No such server.\n")
    assert not runtime_answer_ok(
        "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n"
    )


def test_summarize_errors() -> None:
    out = (
        "[NOTICE]   (1) : haproxy version is 2.6\n"
        "[ALERT]    (1) : config : parsing [haproxy.cfg:4] : unknown keyword 'bogus' in "
        "'frontend' section\n"
        "[ALERT]    (1) : config : Fatal errors found in configuration.\n"
    )
    text = summarize_errors(out)
    assert (
        text.splitlines()[0]
        == "parsing [haproxy.cfg:4] : unknown keyword 'bogus' in 'frontend' section"
    )
    assert "NOTICE" not in text and "ALERT" not in text


def test_parse_syslog_formats() -> None:
    assert parse_syslog("<134>Nov 26 13:22:00 haproxy[123]: 10.0.0.1:5 [x] fe be/s 0/0") == (
        134,
        "10.0.0.1:5 [x] fe be/s 0/0",
    )
    assert parse_syslog("<134>Nov  6 13:22:00 host1 haproxy[1]: hello: world")[1] == "hello: world"
    line = "<134>1 2026-11-26T13:22:00+00:00 host haproxy 123 - - msg here"
    assert parse_syslog(line) == (134, "msg here")
    assert parse_syslog("no header at all") == (None, "no header at all")


def test_paths() -> None:
    p = instance_paths("/var/lib/openha", "8c0e5a1e-1111-2222-3333-444455556666")
    assert p.stats_socket == Path(
        "/var/lib/openha/instances/8c0e5a1e-1111-2222-3333-444455556666/stats.sock"
    )
    p.check()
    assert namespace_name("8c0e5a1e-1111-2222-3333-444455556666") == (
        "ohi-8c0e5a1e111122223333444455556666"
    )
    with pytest.raises(ValueError):
        instance_paths("/x", "../etc")
    with pytest.raises(ValueError):
        instance_paths("/" + "a" * 100, "8c0e5a1e").check()


def test_bind_addresses_of_a_config() -> None:
    from openha.agent.haproxy import bind_addresses

    config = (
        "frontend a\n    bind 10.0.0.5:80\n    bind [2001:db8::5]:443 name x\n"
        "backend b\n    server s 10.0.0.9:80\n"
    )
    assert bind_addresses(config) == {("10.0.0.5", 80), ("2001:db8::5", 443)}


class _LinksGoingAway:
    """An IPRoute whose link deletes meet a link the kernel removed meanwhile, or fail."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.deleted: list[int] = []

    def link(self, command: str, index: int) -> None:
        assert command == "del"
        self.deleted.append(index)
        raise NetlinkError(self.code, "gone" if self.code == errno.ENODEV else "refused")


def test_deleting_a_link_the_kernel_already_removed_is_done() -> None:
    ipr = _LinksGoingAway(errno.ENODEV)
    _delete_link(ipr, 7)  # type: ignore[arg-type]
    assert ipr.deleted == [7]
    with pytest.raises(NetlinkError):
        _delete_link(_LinksGoingAway(errno.EPERM), 7)  # type: ignore[arg-type]
