"""`openha diagnose` rendering: every shape of answer (live, fallback, tenant) reads well."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from openha.diagnose import render

LB = {"id": "lb-1", "name": "web", "provisioning_status": "ERROR", "operating_status": "DEGRADED"}


def live() -> dict[str, Any]:
    now = time.time()
    return {
        "state": "ERROR",
        "desired_generation": 5,
        "applied_generation": 4,
        "last_error": "cannot listen on 10.0.0.5:8082: Address in use",
        "last_apply": {"at": now, "generation": 5, "ok": False, "action": "none",
                       "error": "cannot listen on 10.0.0.5:8082", "seconds": 0.1},
        "processes": {
            "haproxy": {"pid": 42, "running": True, "uptime_seconds": 12.0, "draining_pids": [],
                        "starts": 1, "failed_starts": 0, "reloads": 3, "failed_reloads": 1,
                        "runtime_updates": 2, "last_reload": {"at": now},
                        "last_failed_reload": {"at": now, "error": "bind failed"}},
            "keepalived": {"pid": 43, "running": True, "uptime_seconds": 11.0,
                           "vrrp_state": "MASTER", "initial_state": "BACKUP", "nopreempt": True,
                           "priority": 100, "last_transition_at": now},
        },
        "runtime": {
            "info": {"Version": "2.6.12", "Pid": 42, "Uptime_sec": 12, "CurrConns": 1,
                     "Maxconn": 100, "ConnRate": 0, "Idle_pct": 99},
            "frontends": {"li-1": {"status": "OPEN", "scur": 1, "slim": 100, "rate": 0,
                                   "ereq": 0, "hrsp_5xx": 0}},
            "backends": {"po-1": {"status": "UP", "scur": 0, "slim": 10, "act": 1}},
            "servers": [
                {"backend": "po-1", "id": "me-1", "addr": "10.0.0.10:80", "status": "DOWN",
                 "check_status": "L4CON", "check_code": None, "check_duration": 0,
                 "check_desc": "Layer4 connection problem", "last_chk": "Connection refused",
                 "scur": 0, "slim": None},
            ],
            "errors": {"total": 1, "events": [{"when": "01/Dec", "side": "frontend",
                       "proxy": "li-1", "error": "invalid request", "source": "10.0.0.9:1",
                       "position": 3}]},
            "stick_tables": [{"name": "po-1", "type": "ip", "size": 100, "used": 2}],
        },
        "config": {"haproxy": "global\n", "rejected": "global\nfrontend x\n",
                   "diff": "--- a\n+++ b\n+frontend li-2\n"},
        "plumbing": {"namespace": "ohi-1", "exists": True,
                     "addresses": [{"interface": "eth0", "address": "10.0.0.5/24", "vip": True}],
                     "routes": [{"dst": "default", "gateway": "10.0.0.1", "interface": "eth0"}],
                     "vip_subnets": ["10.0.0.0/24"],
                     "neighbours": [{"address": "10.0.0.10", "mac": None, "state": "FAILED"}],
                     "garp": None},
        "probe": [{"pool_id": "po-1", "member_id": "me-1", "address": "10.0.0.10", "port": 80,
                   "check": "http", "ok": False,
                   "tcp": {"ok": False, "ms": 0.3, "error": "Connection refused"},
                   "health_check": {"ok": False, "ms": 0.3, "error": "Connection refused"}}],
        "gathered_ms": 12.5,
    }  # fmt: skip


def shown(diag: dict[str, Any]) -> str:
    console = Console(width=200, record=True, color_system=None)
    render(diag, console)
    return console.export_text()


def test_a_live_instance_shows_what_is_wrong() -> None:
    inst = {"instance_id": "in-1", "role": "MASTER", "host": {"name": "h1", "status": "UP"},
            "reachable": True, "live": live()}  # fmt: skip
    out = shown({"loadbalancer": LB, "instances": [inst], "probe": True})
    for text in ("MASTER instance in-1 on h1", "FAILED: cannot listen", "failed reloads 1",
                 "VRRP MASTER", "L4CON", "Connection refused", "+frontend li-2",
                 "1 protocol error", "po-1 2/100", "10.0.0.10 - FAILED", "Probe"):  # fmt: skip
        assert text in out, (text, out)
    assert "connection hand-off" not in out  # no migration under way


def test_a_migration_shows_the_connection_hand_off() -> None:
    diag = live()
    diag["plumbing"]["handoff"] = {"to": "10.0.0.7", "table": True}
    inst = {"instance_id": "in-1", "role": "STANDALONE", "host": {"name": "h1", "status": "UP"},
            "reachable": True, "live": diag}  # fmt: skip
    out = shown({"loadbalancer": LB, "instances": [inst], "probe": False})
    assert "connection hand-off: to 10.0.0.7 (table in place)" in out, out


def test_an_unreachable_agent_and_a_tenant_view() -> None:
    down = {"instance_id": "in-2", "role": "STANDALONE", "host": {"name": "h2", "status": "UP"},
            "reachable": False, "error": "agent http://x unreachable: refused",
            "fallback": {"source": "last heartbeat", "heartbeat_at": "2026-12-01T10:00:00Z",
                         "status": {"state": "ACTIVE", "members": {"me-1": "UP"}}}}  # fmt: skip
    out = shown({"loadbalancer": LB, "instances": [down], "probe": False})
    assert "agent not reachable" in out and "member me-1: UP" in out
    tenant = {"role": "STANDALONE", "reachable": True, "pools": {},
              "members": [{"pool_id": "po-1", "member_id": "me-1", "status": "UP",
                           "check_status": "L7OK", "check_code": 200}]}  # fmt: skip
    out = shown({"loadbalancer": LB, "instances": [tenant], "probe": False})
    assert "me-1" in out and "L7OK 200" in out
