"""Parsers and redaction behind diagnostics, fed answers captured from HAProxy 2.6."""

from __future__ import annotations

from pathlib import Path

from openha.agent.history import InstanceHistory
from openha.agent.probe import Check, probe_targets, words
from openha.agent.redact import REDACTED, config_diff, redact_config, redact_header_line
from openha.agent.runtime_answers import (
    parse_show_errors,
    parse_show_info,
    parse_show_stat,
    parse_show_table,
)

SHOW_INFO = """Name: HAProxy
Version: 2.6.12-1+deb12u4
Release_date: 2026/10/17
Nbthread: 2
Pid: 29373
Uptime: 0d 0h00m02s
Uptime_sec: 2
Maxconn: 9985
CurrConns: 7
CumConns: 5
Idle_pct: 100
node: vm
Stopping: 0
Build info: 2.6.12-1+deb12u4
"""

STAT_HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,"
    "lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,"
    "hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,"
    "cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,"
    "ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,"
    "check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo\n"
)
SHOW_STAT = STAT_HEADER + (
    "fe1,FRONTEND,,,3,4,100,12,82,217,0,0,1,,,,,OPEN,,,,,,,,,1,2,0,,,,0,1,0,1,,,,0,0,0,0,1,0,,1,"
    "1,1,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,\n"
    "be1,s1,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,2,2,,1,3,1,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0"
    ',,,,0,0,0,,,,,-1,"Connection refused, twice",,0,0,0,0,,,,Layer4 connection problem,,1,1,0,'
    ",,,127.0.0.1:18999,,http,\n"
    "be1,s2,0,0,2,5,,9,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,9,0,,1,3,2,,0,,2,0,,0,* L7OK,200,3,0,0,0,0,0"
    ",0,,,,0,0,0,,,,,-1,HTTP status check returned code <200>,,0,0,0,0,,,,Layer7 check passed,,"
    "1,1,1,,,,127.0.0.1:18998,,http,\n"
    "be1,BACKEND,0,0,2,5,10,9,82,217,0,0,,1,0,0,0,UP,1,1,0,,1,2,2,,1,3,0,,0,,1,1,,1,,,,0,0,0,0,"
    "1,0,,,,1,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin\n"
)

SHOW_ERRORS = """Total events captured on [01/Dec/2026:09:12:21.006] : 1

[01/Dec/2026:09:12:20.954] frontend fe1 (#2): invalid request
  backend <NONE> (#-1), server <NONE> (#-1), event #0, src 127.0.0.1:57998
  buffer starts at 0 (including 0 out), 16356 free,
  len 28, wraps at 16336, error at position 3
  H1 connection flags 0x00000100, H1 stream flags 0x00000810
  H1 msg state MSG_RQMETH(2), H1 msg flags 0x00001400
  H1 chunk len 0 bytes, H1 body len 0 bytes :

  00000  GET\\x01 / HTTP/1.1\\r\\n
  00017  Authorization: Bearer s3cr3t\\r\\n
  00026  \\r\\n
"""


def test_show_info_keeps_the_essentials_as_numbers() -> None:
    info = parse_show_info(SHOW_INFO)
    assert info["Version"] == "2.6.12-1+deb12u4" and info["Pid"] == 29373
    assert info["CurrConns"] == 7 and info["Maxconn"] == 9985 and info["Uptime_sec"] == 2
    assert "Release_date" not in info and "node" not in info


def test_show_stat_gives_frontends_backends_and_servers_with_their_checks() -> None:
    stat = parse_show_stat(SHOW_STAT)
    assert stat["frontends"]["fe1"]["status"] == "OPEN"
    assert stat["frontends"]["fe1"]["scur"] == 3 and stat["frontends"]["fe1"]["slim"] == 100
    assert stat["frontends"]["fe1"]["ereq"] == 1
    assert stat["backends"]["be1"]["status"] == "UP" and stat["backends"]["be1"]["act"] == 1
    assert stat["backends"]["be1"]["algo"] == "roundrobin"
    down, up = stat["servers"]
    assert (down["backend"], down["id"], down["status"]) == ("be1", "s1", "DOWN")
    assert down["check_status"] == "L4CON" and down["check_running"] is False
    assert down["last_chk"] == "Connection refused, twice"  # a quoted comma stays
    assert down["check_desc"] == "Layer4 connection problem"
    assert down["addr"] == "127.0.0.1:18999" and down["check_code"] is None
    assert up["check_status"] == "L7OK" and up["check_running"] is True
    assert up["check_code"] == 200 and up["check_duration"] == 3 and up["scur"] == 2


def test_show_errors_lists_events_and_redacts_credentials() -> None:
    errors = parse_show_errors(SHOW_ERRORS)
    assert errors["total"] == 1
    (event,) = errors["events"]
    assert event["proxy"] == "fe1" and event["side"] == "frontend"
    assert event["error"] == "invalid request" and event["position"] == 3
    assert event["source"] == "127.0.0.1:57998" and event["backend"] is None
    assert event["dump"][0] == "GET\\x01 / HTTP/1.1\\r\\n"
    assert event["dump"][1] == f"Authorization: {REDACTED}\\r\\n"
    assert "s3cr3t" not in str(errors)
    assert parse_show_errors("Total events captured on [x] : 0\n") == {"total": 0, "events": []}


def test_show_table_lists_stick_tables() -> None:
    text = "# table: be1, type: ip, size:100, used:3\n"
    text += "# table: peers/x, type: string, size:9, used:0\n"
    assert parse_show_table(text) == [
        {"name": "be1", "type": "ip", "size": 100, "used": 3},
        {"name": "peers/x", "type": "string", "size": 9, "used": 0},
    ]
    assert parse_show_table("") == []


def test_redaction_hides_secrets_and_nothing_else() -> None:
    config = "\n".join(
        [
            "global",
            "    stats auth admin:hunter2",
            "userlist u",
            "    user bob insecure-password letmein",
            "    user eve password $6$hash",
            "frontend f",
            "    acl r1 req.hdr('X-Api-Key') -m str 'k3y'",
            "    acl r2 req.cook('sess') -m str 'c00kie'\\''s'",
            "    acl r3 path -m beg '/public'",
            "    http-request set-header Authorization 'Basic Zm9v'",
            "    auth_pass vrrpw",
        ]
    )
    out = redact_config(config)
    for secret in ("hunter2", "letmein", "$6$hash", "k3y", "c00kie", "Zm9v", "vrrpw"):
        assert secret not in out, secret
    assert "stats auth admin:<redacted>" in out
    assert "acl r1 req.hdr('X-Api-Key') -m str '<redacted>'" in out
    assert "acl r3 path -m beg '/public'" in out  # not a secret: kept
    assert len(out.splitlines()) == len(config.splitlines())
    assert redact_header_line("Cookie: a=b\\r\\n") == f"Cookie: {REDACTED}\\r\\n"
    assert redact_header_line("Host: x\\r\\n") == "Host: x\\r\\n"


def test_config_diff_is_unified_and_redacted() -> None:
    good = "global\n    stats auth a:old\nbackend b\n    timeout server 5s\n"
    bad = "global\n    stats auth a:new\nbackend b\n    timeout server 5x\n"
    diff = config_diff(good, bad)
    assert diff.startswith("--- haproxy.cfg (last good)\n+++ haproxy.cfg\n")
    assert "-    timeout server 5s\n+    timeout server 5x\n" in diff
    assert "old" not in diff and "new" not in diff  # the secret's change is not told
    assert config_diff(good, good) == ""


def test_words_read_haproxy_quoting() -> None:
    assert words("uri '/it'\\''s' hdr Host \"a b\" x\\x41y") == [
        "uri", "/it's", "hdr", "Host", "a b", "xAy",
    ]  # fmt: skip


def test_probe_targets_come_from_the_config() -> None:
    config = """global
    maxconn 10
frontend f1
    bind 10.0.0.5:80
    default_backend p1
backend p1
    mode http
    option httpchk
    http-check send meth HEAD uri '/hea'\\''lth' ver HTTP/1.1 hdr Host 'www.example.com'
    http-check expect rstatus '^(200|204)$'
    server m1 10.0.0.10:8080 weight 1 check inter 1s fall 1 rise 1 addr 10.0.0.11 port 9090
    server m2 10.0.0.12:8080 weight 1 check inter 1s fall 1 rise 1 check-ssl verify none
backend p2
    mode tcp
    server m3 [fd00::3]:443 weight 1 ssl verify none sni ssl_fc_sni
"""
    m1, m2, m3 = probe_targets(config)
    assert (m1.pool_id, m1.member_id, m1.address, m1.port) == ("p1", "m1", "10.0.0.10", 8080)
    assert (m1.check_address, m1.check_port) == ("10.0.0.11", 9090)
    assert m1.check == Check("http", "HEAD", "/hea'lth", "HTTP/1.1", "www.example.com",
                             "rstatus", "^(200|204)$")  # fmt: skip
    assert m2.check is not None and m2.check.kind == "https"
    assert (m3.address, m3.port, m3.check, m3.tls) == ("fd00::3", 443, None, True)


def test_history_counts_survive_a_new_agent(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    history = InstanceHistory(path)
    history.count("reload")
    history.count("reload")
    history.count("failed_reload", "cannot bind")
    history.applied(7, "none", "haproxy said no", 0.25)
    history.garp_sent("10.0.0.5", "eth0")
    again = InstanceHistory(path).snapshot()  # as a restarted agent reads it
    assert again["counts"] == {"reload": 2, "failed_reload": 1}
    assert again["last_failed_reload"]["error"] == "cannot bind"
    assert again["last_apply"]["ok"] is False and again["last_apply"]["generation"] == 7
    assert "last_good_apply" not in again
    assert again["garp"]["address"] == "10.0.0.5"
    history.applied(8, "reload", None, 0.5)
    assert InstanceHistory(path).snapshot()["last_good_apply"]["generation"] == 8
    InstanceHistory(tmp_path / "gone" / "history.json").count("start")  # no directory: no error
