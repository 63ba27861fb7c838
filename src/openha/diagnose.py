"""`openha diagnose LB`: a load balancer's diagnostics, fetched from the API and rendered
with rich for a person (`--json` prints the answer itself).

Operators get `/v2/manage/loadbalancers/{id}/diagnostics`; a token without the admin
role falls back to the tenant's subset under `/v2/lbaas`. What is wrong is written in
red first (an unreachable agent, a failed apply, a member that cannot be reached),
the detail follows per instance.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from openha.agent.protocol import VRRP_BACKUP, VRRP_MASTER
from openha.domain import constants as c
from openha.domain.status import member_status

# Words shown green: a frontend listening, a VRRP role, a settled status.
OK_STATES = {"OPEN", VRRP_MASTER, VRRP_BACKUP, c.ACTIVE, c.ONLINE, c.NO_MONITOR, c.HOST_UP}


class DiagnoseError(Exception):
    """The API could not be asked, or refused."""


def resolve_lb(api: httpx.Client, lb: str) -> str:
    """A load balancer's id from its id or its (unique) name."""
    try:
        return str(uuid.UUID(lb))
    except ValueError:
        pass
    named = api.get("/v2/lbaas/loadbalancers", params={"name": lb})
    matches = named.json().get("loadbalancers", []) if named.status_code == 200 else []
    if len(matches) != 1:
        raise DiagnoseError(f"{len(matches)} load balancers are named {lb!r}")
    return str(matches[0]["id"])


def fetch(api: httpx.Client, lb: str, probe: bool) -> dict[str, Any]:
    """The operator's diagnostics, else (not an admin) the tenant's."""
    lb_id = resolve_lb(api, lb)
    params = {"probe": "members"} if probe else {}
    resp = api.get(f"/v2/manage/loadbalancers/{lb_id}/diagnostics", params=params)
    if resp.status_code == 403:
        resp = api.get(f"/v2/lbaas/loadbalancers/{lb_id}/diagnostics", params=params)
    if resp.status_code != 200:
        raise DiagnoseError(f"{resp.status_code}: {resp.text[:300]}")
    return dict(resp.json()["diagnostics"])


# --- rendering ---------------------------------------------------------------------------


def _state(value: Any) -> Text:
    text = "-" if value is None else str(value)
    # HAProxy's server words read as Octavia's (UP is ONLINE), check results as they are.
    ok = (
        text in OK_STATES
        or member_status(text, True, True) == c.ONLINE
        or text.startswith(("L7OK", "L6OK", "L4OK"))
    )
    return Text(text, style="green" if ok else "bold red")


def _ago(at: Any) -> str:
    if not isinstance(at, int | float):
        return "-"
    seconds = max(0.0, time.time() - at)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", expand=False)
    for column in columns:
        table.add_column(column)
    return table


def _processes(live: dict[str, Any]) -> Table:
    table = _table("Processes", "process", "pid", "uptime", "detail")
    hap = live["processes"]["haproxy"]
    detail = (
        f"starts {hap['starts']}, reloads {hap['reloads']}, failed reloads "
        f"{hap['failed_reloads']}, runtime updates {hap['runtime_updates']}"
    )
    if hap.get("draining_pids"):
        detail += f", draining {hap['draining_pids']}"
    failed = hap.get("last_failed_reload")
    if failed:
        detail += f"\nlast failed reload {_ago(failed.get('at'))}: {failed.get('error', '')}"
    pid = Text(str(hap["pid"])) if hap["running"] else Text("not running", style="bold red")
    table.add_row("haproxy", pid, f"{hap.get('uptime_seconds') or '-'}s", detail)
    keep = live["processes"].get("keepalived")
    if keep:
        kpid = Text(str(keep["pid"])) if keep["running"] else Text("not running", style="bold red")
        kdetail = Text.assemble(
            "VRRP ",
            _state(keep.get("vrrp_state")),
            f", priority {keep.get('priority')}, starts as {keep.get('initial_state')}"
            f"{' nopreempt' if keep.get('nopreempt') else ''}, last transition "
            f"{_ago(keep.get('last_transition_at'))}",
        )
        table.add_row("keepalived", kpid, f"{keep.get('uptime_seconds') or '-'}s", kdetail)
    return table


def _apply(inst: dict[str, Any], live: dict[str, Any]) -> Text:
    text = Text(
        f"generation desired {live['desired_generation']} / applied "
        f"{live['applied_generation']} (state {live['state']})"
    )
    last = live.get("last_apply")
    if last:
        text.append(f"\nlast apply: generation {last['generation']} {_ago(last['at'])}, ")
        if last["ok"]:
            text.append(f"ok ({last['action']}, {last['seconds']}s)", style="green")
        else:
            text.append(f"FAILED: {last['error']}", style="bold red")
    if live.get("last_error"):
        text.append(f"\nlast error: {live['last_error']}", style="bold red")
    return text


def _runtime(runtime: dict[str, Any]) -> list[Any]:
    if "error" in runtime:
        return [Text(f"HAProxy runtime API: {runtime['error']}", style="bold red")]
    info = runtime.get("info", {})
    parts: list[Any] = [
        Text(
            f"HAProxy {info.get('Version', '?')}, pid {info.get('Pid')}, up "
            f"{info.get('Uptime_sec')}s, connections {info.get('CurrConns')}/"
            f"{info.get('Maxconn')}, rate {info.get('ConnRate')}/s, idle {info.get('Idle_pct')}%"
        )
    ]
    fes = _table("Listeners", "frontend", "status", "sessions", "rate", "req errors", "5xx")
    for name, row in runtime.get("frontends", {}).items():
        fes.add_row(
            name, _state(row["status"]), f"{row['scur']}/{row['slim']}",
            str(row.get("rate")), str(row.get("ereq")), str(row.get("hrsp_5xx")),
        )  # fmt: skip
    parts.append(fes)
    servers = _table(
        "Members", "pool", "member", "address", "status", "check", "last check", "sessions"
    )
    for pool, row in runtime.get("backends", {}).items():
        servers.add_row(pool, "(pool)", "", _state(row["status"]), "", "",
                        f"{row['scur']}/{row.get('slim')}")  # fmt: skip
    for row in runtime.get("servers", []):
        check = f"{row.get('check_status') or '-'} {row.get('check_code') or ''}".strip()
        if row.get("check_duration") is not None:
            check += f" {row['check_duration']}ms"
        last = " ".join(str(x) for x in (row.get("check_desc"), row.get("last_chk")) if x)
        servers.add_row(
            row["backend"][:8], row["id"], str(row.get("addr") or ""), _state(row["status"]),
            check, last, f"{row['scur']}/{row.get('slim') or '-'}",
        )  # fmt: skip
    parts.append(servers)
    errors = runtime.get("errors", {})
    if errors.get("total"):
        parts.append(Text(f"{errors['total']} protocol error(s) captured:", style="yellow"))
        for event in errors["events"][-5:]:
            parts.append(
                Text(
                    f"  [{event['when']}] {event['side']} {event['proxy']}: {event['error']} "
                    f"from {event.get('source')} at byte {event.get('position')}"
                )
            )
    tables = runtime.get("stick_tables") or []
    if tables:
        parts.append(
            Text(
                "stick tables: " + ", ".join(f"{t['name']} {t['used']}/{t['size']}" for t in tables)
            )
        )
    return parts


def _plumbing(plumbing: dict[str, Any] | None) -> list[Any]:
    if not plumbing:
        return []
    if "error" in plumbing:
        return [Text(f"plumbing: {plumbing['error']}", style="bold red")]
    if not plumbing.get("exists"):
        return [Text(f"namespace {plumbing['namespace']} does not exist", style="bold red")]
    addrs = ", ".join(
        f"{a['interface']} {a['address']}{' (VIP)' if a['vip'] else ''}"
        for a in plumbing["addresses"]
    )
    routes = ", ".join(
        f"{r['dst']}{' via ' + r['gateway'] if r.get('gateway') else ''} dev {r['interface']}"
        for r in plumbing["routes"]
    )
    neigh = ", ".join(
        f"{n['address']} {n['mac'] or '-'} {n['state']}" for n in plumbing["neighbours"]
    )
    garp = plumbing.get("garp")
    lines = [
        f"namespace {plumbing['namespace']}",
        f"addresses: {addrs or '-'}",
        f"routes: {routes or '-'}",
        f"neighbours on {', '.join(plumbing['vip_subnets'])}: {neigh or '-'}",
        "gratuitous ARP: "
        + (f"{_ago(garp['at'])} for {garp['address']}" if garp else "none recorded"),
    ]
    handoff = plumbing.get("handoff") or {}
    if handoff.get("to") or handoff.get("table"):
        # Only during a migration: connections unknown here go to the retiring instance.
        table = {True: "table in place", False: "no table", None: "table unknown"}
        lines.append(
            f"connection hand-off: to {handoff.get('to') or '-'} ({table[handoff.get('table')]})"
        )
    return [Text("\n".join(lines))]


def _probe(results: list[dict[str, Any]]) -> Table:
    table = _table("Probe (from inside the load balancer)", "pool", "member", "target", "connect",
                   "health check")  # fmt: skip
    for r in results:
        tcp = r["tcp"]
        connect = (
            Text(f"ok {tcp['ms']}ms", style="green")
            if tcp["ok"]
            else Text(f"{tcp['error']} ({tcp['ms']}ms)", style="bold red")
        )
        check = r.get("health_check")
        if check is None:
            shown = Text(r["check"] or "no monitor", style="dim")
        elif check["ok"]:
            shown = Text(f"{check.get('status') or 'ok'} {check['ms']}ms", style="green")
        else:
            shown = Text(f"{check['error']}", style="bold red")
        table.add_row(
            r["pool_id"][:8], r["member_id"], f"{r['address']}:{r['port']}", connect, shown
        )
    return table


def _instance(inst: dict[str, Any]) -> Panel:
    host = inst.get("host") or {}
    title = f"{inst.get('role')} instance {inst.get('instance_id', '')}"
    if host:
        title += f" on {host.get('name')} ({host.get('status')})"
    parts: list[Any] = []
    live = inst.get("live")
    if live is None and "fallback" in inst:
        parts.append(Text(f"agent not reachable: {inst.get('error') or ''}", style="bold red"))
        fallback = inst["fallback"]
        parts.append(Text(f"showing the last heartbeat ({fallback.get('heartbeat_at') or '?'}):"))
        status = fallback.get("status") or fallback
        for key in ("state", "applied_generation", "last_error", "vrrp_state"):
            if status.get(key) is not None:
                parts.append(Text(f"  {key}: {status[key]}"))
        members = status.get("members") or {}
        for member, state in members.items():
            parts.append(Text.assemble(f"  member {member}: ", _state(state)))
    elif live is not None:
        parts += [_apply(inst, live), _processes(live), *_runtime(live.get("runtime", {}))]
        config = live.get("config") or {}
        if config.get("diff"):
            parts.append(Text("The config HAProxy refused, against the last good one:", "yellow"))
            parts.append(Syntax(config["diff"], "diff", theme="ansi_dark"))
        parts += _plumbing(live.get("plumbing"))
        if "probe" in live:
            parts.append(_probe(live["probe"]))
        parts.append(Text(f"gathered in {live.get('gathered_ms')} ms", style="dim"))
    else:  # the tenant's subset
        members = _table("Members", "pool", "member", "status", "check", "last check")
        for row in inst.get("members", []):
            members.add_row(
                row["pool_id"][:8], row["member_id"], _state(row["status"]),
                f"{row.get('check_status') or '-'} {row.get('check_code') or ''}",
                " ".join(str(x) for x in (row.get("check_desc"), row.get("last_chk")) if x),
            )  # fmt: skip
        parts.append(members)
        if "probe" in inst:
            parts.append(_probe(inst["probe"]))
    return Panel(Group(*parts), title=title, title_align="left")


def render(diag: dict[str, Any], console: Console) -> None:
    lb = diag["loadbalancer"]
    head = Text.assemble(
        (f"Load balancer {lb.get('name') or ''} {lb['id']}\n", "bold"),
        "provisioning ",
        _state(lb["provisioning_status"]),
        ", operating ",
        _state(lb["operating_status"]),
    )
    if "desired_generation" in lb:
        head.append(
            f", generation desired {lb['desired_generation']} / applied {lb['applied_generation']}"
        )
    console.print(head)
    for inst in diag["instances"]:
        console.print(_instance(inst))
    if not diag["instances"]:
        console.print("no instance (not placed yet)")
