"""Benchmark: HTTP throughput and latency through an OpenHA listener vs a minimal HAProxy.

Same HAProxy binary, same lab bridge, same three backends (HAProxy answering 200 by
itself, so backends never limit), same wrk run from a client namespace
(`wrk -t2 -c50 -d10s --latency`). Contenders, run alternately for `--rounds` rounds:
- `openha`: an LB made through the API with the default flavor (HTTP listener, round
  robin pool, 3 members, HTTP health monitor; access_log "all": a JSON line per
  request, through HAProxy's log ring to the agent's rsyslogd and into the LB's file),
  served by the agent's HAProxy in its instance namespace;
- `openha-none`: the same with `{"access_log": "none"}` (no traffic logs at all).
- `openha-errors`: the same LB made with a flavor whose profile says
  `{"access_log": "errors"}` (HAProxy `option dontlog-normal`: only failed or abnormal
  requests are logged), on the same agent;
- `baseline`: a hand-written minimal haproxy.cfg (same maxconn, default threads) in
  a namespace of its own on the same bridge, without logs: what `openha-none` is
  measured against;
- `baseline-logs`: the same hand-written config logging the same lines the same way
  (the same JSON log-format and request id, a log ring forwarded to the same agent's
  rsyslogd, which files them under a load balancer id of its own): what `openha`
  is measured against;
- with `--explain`, the rendered configs run by hand (a foreground HAProxy in a
  namespace of its own, no agent): `openha-cfg-nolog`, the default flavor's config with
  its `log` lines and `option httplog` removed, to price per-request logging, and
  `openha-errors-cfg`, the errors flavor's config as rendered (logging kept), to tell
  what the config costs from what running it in the agent's instance costs.
Prints req/s and wrk's p50/p99 latency per round, then medians and the ratios
(openha / baseline-logs, openha-none / baseline, openha-errors / baseline). Target
ratio >= 0.97. wrk numbers its requests (`linecheck.py`); after each run of a
contender that logs every request, the bench waits until the pipeline has drained
and prints, run by run, the requests sent, answered, received by HAProxy (`show
stat` req_tot, less ereq: wrk's empty connection at each start, which `option
dontlognull` leaves unlogged) and filed, with every numbered request that has no
line and when it was sent; then the drops HAProxy announced for its log ring and
rsyslogd's own counters.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import linecheck
from harness import (
    FastBackend,
    HAProxyProcess,
    Lab,
    RemoveDir,
    Stack,
    bench_stack,
    hand_config,
    machine_line,
    print_table,
    require_root,
    wait_for,
)

from openha.agent.haproxy import cli_command
from openha.agent.paths import log_paths
from openha.render.haproxy import (
    DEFAULT_LISTENER_MAXCONN,
    LOG_LINE_LENGTH,
    LOG_RING,
    LOG_RING_SIZE,
    UNIQUE_ID_FORMAT,
    access_log_format,
)

TARGET_RATIO = 0.97

# What `baseline-logs` adds: the lines OpenHA's default flavor logs, the same way.
GLOBAL_LOGS = """\
    stats socket {workdir}/stats.sock mode 600 level admin
    log ring@{ring} len {length} local0
    log-tag lb-{lb_id}
ring {ring}
    format rfc3164
    maxlen {length}
    size {ring_size}
    timeout connect 2s
    timeout server 10m
    server syslog unix@{socket} log-proto octet-count"""
DEFAULTS_LOGS = """\
    log global
    option dontlognull"""
FRONTEND_LOGS = """\
    log-format '{log_format}'
    unique-id-format '{unique_id_format}'"""


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    lb_cpu: float = 0.0  # cores used by the LB's HAProxy during the run
    agent_cpu: float = 0.0  # cores used by the OpenHA agent during the run
    syslog_cpu: float = 0.0  # cores used by the agent's rsyslogd during the run
    issued: dict[int, int] = field(default_factory=dict)  # wrk thread -> numbered requests
    completed: int = 0  # responses wrk got


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert match, text
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return WrkResult(rps, p50, p99, errors)


def wrk(
    namespace: str,
    url: str,
    seconds: int,
    threads: int,
    conns: int,
    script: Path | None = None,
    run: str = "",
) -> WrkResult:
    """One wrk run; with `script` (`linecheck.SEQ_SCRIPT`) its requests are numbered `run`."""
    cmd = ["ip", "netns", "exec", namespace, "wrk", f"-t{threads}", f"-c{conns}",
           f"-d{seconds}s", "--latency"]  # fmt: skip
    cmd += ["-s", str(script), url, "--", run] if script else [url]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=seconds + 30)
    res = parse_wrk(out.stdout)
    res.issued = linecheck.issued(out.stdout)
    res.completed = linecheck.completed(out.stdout)
    return res


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by `pids` (all their threads)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def family(pid: int) -> list[int]:
    """`pid` and its children (HAProxy's master and its workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(c) for c in children)]


def log_flavor(stack: Stack, mode: str) -> str:
    """A flavor whose profile sets the haproxy provider's `access_log` to `mode`."""
    profile = stack.admin.post(
        "/v2/lbaas/flavorprofiles",
        json={
            "flavorprofile": {
                "name": f"bench-log-{mode}",
                "provider_name": "haproxy",
                "flavor_data": json.dumps({"access_log": mode}),
            }
        },
    )
    assert profile.status_code == 201, profile.text
    flavor = stack.admin.post(
        "/v2/lbaas/flavors",
        json={
            "flavor": {
                "name": f"bench-log-{mode}",
                "flavor_profile_id": profile.json()["flavorprofile"]["id"],
            }
        },
    )
    assert flavor.status_code == 201, flavor.text
    return str(flavor.json()["flavor"]["id"])


def openha_lb(
    stack: Stack, backends: list[FastBackend], name: str, flavor_id: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "vip_subnet_id": stack.subnet_id,
        "listeners": [
            {
                "name": "http",
                "protocol": "HTTP",
                "protocol_port": 80,
                "default_pool": {
                    "name": "pool",
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                    "members": [
                        {"address": b.ip, "protocol_port": b.port, "name": b.name} for b in backends
                    ],
                    "healthmonitor": {
                        "type": "HTTP",
                        "delay": 5,
                        "timeout": 2,
                        "max_retries": 2,
                        "url_path": "/",
                    },
                },
            }
        ],
    }
    if flavor_id is not None:
        body["flavor_id"] = flavor_id
    resp = stack.tenant.post("/v2/lbaas/loadbalancers", json={"loadbalancer": body})
    assert resp.status_code == 201, resp.text
    lb = resp.json()["loadbalancer"]
    stack.wait_active(lb["id"])
    return dict(lb)


def instance_dir(stack: Stack, lb_id: str) -> Path:
    """The agent's instance directory serving `lb_id` (its config names the LB)."""
    for d in stack.agents[0].instance_dirs():
        cfg = d / "haproxy.cfg"
        if cfg.exists() and f"load balancer {lb_id}," in cfg.read_text().split("\n", 1)[0]:
            return d
    raise AssertionError(f"no instance directory for LB {lb_id}")


def baseline(
    lab: Lab, backends: list[FastBackend], logs_to: Path | None = None, nbthread: int | None = None
) -> tuple[HAProxyProcess, str, tuple[str, Path] | None]:
    """The hand-written HAProxy; with `logs_to` (an agent directory) logging as OpenHA does.

    Returns the process, its address and, when it logs, the load balancer id its lines
    are filed under and its stats socket.
    """
    ip = lab.allocate_ip()
    ns = lab.add_namespace("baselog" if logs_to else "base", ip)
    parts = {"global_extra": "", "defaults_extra": "", "frontend_extra": ""}
    lb_id = None
    workdir = ""
    if logs_to is not None:
        lb_id = str(uuid.uuid4())
        workdir = tempfile.mkdtemp(prefix="ohb-baselog-", dir="/tmp")
        lab.on_close(RemoveDir(workdir))
        parts = {
            "global_extra": GLOBAL_LOGS.format(
                workdir=workdir,
                ring=LOG_RING,
                length=LOG_LINE_LENGTH,
                lb_id=lb_id,
                ring_size=LOG_RING_SIZE,
                socket=log_paths(logs_to).syslog_socket,
            ),
            "defaults_extra": DEFAULTS_LOGS,
            "frontend_extra": FRONTEND_LOGS.format(
                log_format=access_log_format("http", lb_id, lb_id, "baseline"),
                unique_id_format=UNIQUE_ID_FORMAT,
            ),
        }
    cfg = hand_config(
        f"{ip}:80", backends, maxconn=DEFAULT_LISTENER_MAXCONN, nbthread=nbthread, **parts
    )
    proc = HAProxyProcess(ns, cfg, "baselog" if logs_to else "base", 80)
    lab.on_close(proc)
    return proc, ip, (lb_id, Path(workdir) / "stats.sock") if lb_id else None


def ring_drops(stats_socket: Path, lb_dir: Path) -> str:
    """What HAProxy says it lost in its log ring.

    A line that does not fit the ring is counted in the sink (`show events`), not in
    `show info` DroppedLogs, and announced in the ring as "N events dropped" once
    there is room again: rsyslogd files that notice in the LB's admin.log.
    """
    sinks = cli_command(stats_socket, "show events")
    pending = re.search(rf"^\s*{LOG_RING}\s*:.*?(\d+) dropped", sinks, re.M)
    announced = 0
    for path in lb_dir.glob("admin*.log"):
        for m in re.finditer(r"(\d+) events? dropped", path.read_text(errors="replace")):
            announced += int(m.group(1))
    return (
        f"ring drops announced {announced:,} (admin.log), not yet announced "
        f"{pending.group(1) if pending else '?'} (`show events`)"
    )


def rsyslog_counters(syslog_dir: Path) -> str:
    """rsyslogd's own counters that would show a line lost inside it (last impstats record)."""
    last: dict[str, dict[str, Any]] = {}
    for path in (syslog_dir / "stats.old.json", syslog_dir / "stats.json"):
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    last[str(entry.get("name"))] = entry
    keys = ("submitted", "processed", "failed", "suspended", "discarded.full", "discarded.nf",
            "full", "maxqsize")  # fmt: skip
    parts = []
    for name, entry in sorted(last.items()):
        if name == "main Q" or name == "oh_access" or name.startswith("imptcp"):
            values = ", ".join(f"{k} {entry[k]:,}" for k in keys if isinstance(entry.get(k), int))
            parts.append(f"{name}: {values}")
    return "; ".join(parts) or "no counters"


def served(stats_socket: Path) -> tuple[int, int]:
    """HTTP requests the frontends counted (`show stat` req_tot), and how many failed (ereq).

    Not `show info` CumReq, which counts streams, also the one a keep-alive
    connection opens to wait for a next request that never comes (nothing to log).
    A connection closed before it sent anything is counted as a failed request (a
    400 `CR`), which `option dontlognull` leaves unlogged by design: wrk opens one at
    each start to check the address. Every other request is one log line here.
    """
    rows = cli_command(stats_socket, "show stat").splitlines()
    header = rows[0].lstrip("# ").split(",")
    name, total, failed = header.index("svname"), header.index("req_tot"), header.index("ereq")
    frontends = [
        fields
        for fields in (row.split(",") for row in rows[1:] if row)
        if fields[name] == "FRONTEND"
    ]
    return (
        sum(int(f[total] or 0) for f in frontends),
        sum(int(f[failed] or 0) for f in frontends),
    )


def by_hand(config: str, vip: str, ip: str, workdir: str, keep_logging: bool = False) -> str:
    """OpenHA's rendered config for a foreground HAProxy of our own, bound to `ip`.

    Only what ties it to the agent's instance goes (its stats socket, server-state
    file) and, unless `keep_logging`, everything that logs per request. Log lines that
    stay keep sending to the agent's log socket.
    """
    out = []
    for line in config.splitlines():
        words = line.split()
        logs = words[:1] in (["log"], ["log-format"], ["log-tag"], ["unique-id-format"])
        if logs and not keep_logging:
            continue
        if words[:2] == ["stats", "socket"]:
            line = f"    stats socket {workdir}/stats.sock mode 600 level admin"
        if words[:1] == ["server-state-file"] or words[:1] == ["load-server-state-from-file"]:
            continue
        out.append(line.replace(f"{vip}:", f"{ip}:"))
    return "\n".join(out) + "\n"


def normalized(config: str) -> str:
    """A rendered config with ids, addresses and paths masked, to compare two LBs'."""
    config = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", config)
    config = re.sub(r"\d+\.\d+\.\d+\.\d+", "<ip>", config)
    return re.sub(r"/tmp/\S+/", "<dir>/", config)


# contender -> access_log
OPENHA = {"openha": "all", "openha-errors": "errors", "openha-none": "none"}


def run(args: argparse.Namespace) -> None:
    results: dict[str, list[WrkResult]] = {}
    # Every line is kept for the count: quotas far above what the run writes.
    big = {"OPENHA_LOG_LB_QUOTA_BYTES": str(64 << 30), "OPENHA_LOG_HOST_QUOTA_BYTES": str(64 << 30)}
    with bench_stack(agents=1, agent_env=big) as (lab, stack):
        backends = [FastBackend(lab, f"web{i}") for i in range(1, 4)]
        lbs = {
            "openha": openha_lb(stack, backends, "bench-throughput"),
            **{
                name: openha_lb(
                    stack, backends, f"bench-throughput-{mode}", log_flavor(stack, mode)
                )
                for name, mode in OPENHA.items()
                if mode != "all"
            },
        }
        insts = {name: instance_dir(stack, lb["id"]) for name, lb in lbs.items()}
        client = lab.add_namespace("wrk", lab.allocate_ip())
        base, base_ip, _ = baseline(lab, backends, nbthread=args.baseline_nbthread)
        agent_dir = stack.agents[0].dir
        base_logs, base_logs_ip, base_logged = baseline(
            lab, backends, logs_to=agent_dir, nbthread=args.baseline_nbthread
        )
        assert base_logged is not None
        by_hand_procs: dict[str, HAProxyProcess] = {}
        urls = {
            "baseline": f"http://{base_ip}/",
            "baseline-logs": f"http://{base_logs_ip}/",
            **{name: f"http://{lb['vip_address']}/" for name, lb in lbs.items()},
        }
        rendered = {name: (d / "haproxy.cfg").read_text() for name, d in insts.items()}
        if args.explain:
            # The same rendered configs outside the agent's instance (own namespace,
            # foreground HAProxy): what the config costs vs what the way it is run costs.
            for name, source, keep in (
                ("openha-cfg-nolog", "openha", False),
                ("openha-errors-cfg", "openha-errors", True),
            ):
                ip = lab.allocate_ip()
                ns = lab.add_namespace(name.replace("openha-", "")[:8], ip)
                workdir = tempfile.mkdtemp(prefix=f"ohb-{name}-", dir="/tmp")
                lab.on_close(RemoveDir(workdir))
                vip = lbs[source]["vip_address"]
                cfg = by_hand(rendered[source], vip, ip, workdir, keep_logging=keep)
                proc = HAProxyProcess(ns, cfg, name, 80)
                lab.on_close(proc)
                by_hand_procs[name] = proc
                urls[name] = f"http://{ip}/"
        seq = Path(tempfile.mkdtemp(prefix="ohb-wrk-", dir="/tmp")) / "seq.lua"
        lab.on_close(RemoveDir(str(seq.parent)))
        seq.write_text(linecheck.SEQ_SCRIPT)
        # The contenders whose every request is a line: the sequence check follows them.
        logged = {
            "openha": (insts["openha"] / "stats.sock", lbs["openha"]["id"]),
            "openha-errors": (insts["openha-errors"] / "stats.sock", lbs["openha-errors"]["id"]),
            "baseline-logs": (base_logged[1], base_logged[0]),
        }
        logs_root = log_paths(agent_dir).logs_root
        counters = {n: linecheck.LineCounter(logs_root / lb) for n, (_, lb) in logged.items()}
        checks: list[linecheck.RunCheck] = []
        for name, url in urls.items():
            wait_for(
                lambda url=url: wrk(client, url, 1, 1, 1).rps > 0,
                30,
                0.5,
                what=f"{name} answering",
            )
            # warm-up
            wrk(client, url, args.warmup, args.threads, args.connections, seq, f"{name}-warmup")
        agent_pid = stack.agents[0].proc.pid  # type: ignore[union-attr]
        syslog_pid = int((log_paths(agent_dir).syslog_dir / "rsyslogd.pid").read_text().split()[0])

        def haproxy_pids(d: Path) -> list[int]:
            return family(int((d / "haproxy.pid").read_text().split()[0]))

        lb_pids = {
            "baseline": lambda: [base.proc.pid],
            "baseline-logs": lambda: [base_logs.proc.pid],
            **{n: (lambda n=n: haproxy_pids(insts[n])) for n in OPENHA},
            **{n: (lambda p=p: [p.proc.pid]) for n, p in by_hand_procs.items()},
        }
        for r in range(args.rounds):
            for name, url in urls.items():
                pids = lb_pids[name]()
                before = cpu_seconds(pids), cpu_seconds([agent_pid]), cpu_seconds([syslog_pid])
                follow = name in counters and name != "openha-errors"
                if follow:
                    received0, failed0 = served(logged[name][0])
                    lines0 = counters[name].poll()
                started = time.time()
                res = wrk(
                    client, url, args.duration, args.threads, args.connections, seq,
                    f"{name}-r{r + 1}",
                )  # fmt: skip
                ended = time.time()
                res.lb_cpu = (cpu_seconds(pids) - before[0]) / args.duration
                res.agent_cpu = (cpu_seconds([agent_pid]) - before[1]) / args.duration
                res.syslog_cpu = (cpu_seconds([syslog_pid]) - before[2]) / args.duration
                results.setdefault(name, []).append(res)
                if follow:
                    # Drained once every request but the empty connections has its line.
                    lines, waited = linecheck.drain(
                        counters[name],
                        lambda sock=logged[name][0]: served(sock),
                        lambda rcv, lines0=lines0, c0=(received0, failed0): (
                            lines0 + (rcv[0] - c0[0]) - (rcv[1] - c0[1])
                        ),
                    )
                    received, failed = served(logged[name][0])
                    checks.append(
                        linecheck.RunCheck(
                            name,
                            f"{name}-r{r + 1}",
                            started,
                            ended,
                            res.issued,
                            res.completed,
                            received - received0,
                            failed - failed0,
                            lines - lines0,
                            waited,
                            args.connections // args.threads,
                        )
                    )
                print(
                    f"- round {r + 1} {name:18} {res.rps:10,.0f} req/s  p50 {res.p50_ms:.2f} ms"
                    f"  p99 {res.p99_ms:.2f} ms  errors {res.errors}"
                    f"  LB CPU {res.lb_cpu:.2f} cores  agent CPU {res.agent_cpu:.2f} cores"
                    f"  rsyslogd CPU {res.syslog_cpu:.2f} cores",
                    flush=True,
                )
                time.sleep(1)
        print()
        # Every run was drained before the next one; whatever is still on its way
        # (the warm-ups, the last run of a contender that is not followed) lands here.
        for name, (sock, _) in logged.items():
            linecheck.drain(
                counters[name], lambda sock=sock: served(sock), lambda rcv: rcv[0] - rcv[1]
            )
        print("Access lines, run by run (requests numbered by wrk; see linecheck.py):\n")
        for check in checks:
            for line in check.describe(
                counters[check.contender].runs.get(check.run, linecheck.Filed())
            ):
                print(line)
        print()
        for name, (sock, _) in logged.items():
            (requests, failed), lines = served(sock), counters[name].lines
            missing = requests - failed - lines if name != "openha-errors" else None
            print(
                f"- {name}: {requests:,} requests received in all (`show stat` req_tot, "
                f"warm-ups and wrk's empty connections included; {failed:,} failed: ereq), "
                f"{lines:,} access lines filed"
                + (f": **{missing:,} dropped**" if missing is not None else " (errors only)")
            )
        for name, (sock, lb_id) in logged.items():
            print(f"- {name}: {ring_drops(sock, logs_root / lb_id)}")
        print(
            f"- rsyslogd (impstats, whole run): {rsyslog_counters(log_paths(agent_dir).syslog_dir)}"
        )
        for name, d in insts.items():
            info = cli_command(d / "stats.sock", "show info")
            dropped = re.search(r"^DroppedLogs: (\d+)", info, re.M)
            print(f"- {name}: HAProxy's DroppedLogs {dropped.group(1) if dropped else '?'}")
        default_lines = set(normalized(rendered["openha"]).splitlines())
        extra = [
            line.strip()
            for line in normalized(rendered["openha-errors"]).splitlines()
            if line not in default_lines and line.strip() and not line.strip().startswith("#")
        ]
        print(
            "- the errors flavor's config differs from the default one (ids, addresses and "
            f"paths aside) by: `{'`, `'.join(extra) or 'nothing'}`"
        )
        print("\n<details><summary>OpenHA's rendered haproxy.cfg (default flavor)</summary>\n")
        print("```")
        print(re.sub(r"/tmp/\S+/", "<agent_dir>/", rendered["openha"]).strip())
        print("```\n</details>\n")
    base_rps = statistics.median(r.rps for r in results["baseline"])
    rows = []
    for name, rs in results.items():
        rps = statistics.median(r.rps for r in rs)
        rows.append(
            (
                name,
                len(rs),
                rps,
                statistics.median(r.p50_ms for r in rs),
                statistics.median(r.p99_ms for r in rs),
                sum(r.errors for r in rs),
                statistics.median(r.lb_cpu for r in rs),
                statistics.median(r.agent_cpu for r in rs),
                statistics.median(r.syslog_cpu for r in rs),
                f"{rps / base_rps:.3f}",
            )
        )
    print_table(
        f"HTTP through the LB, wrk -t{args.threads} -c{args.connections} -d{args.duration}s "
        f"(medians of {args.rounds} rounds)",
        [
            "contender",
            "rounds",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "LB HAProxy CPU (cores)",
            "agent CPU (cores)",
            "rsyslogd CPU (cores)",
            "ratio vs baseline",
        ],
        rows,
    )
    against = {"openha": "baseline-logs", "openha-none": "baseline", "openha-errors": "baseline"}
    for name, mode in OPENHA.items():
        base_name = against[name]
        ratio = statistics.median(r.rps for r in results[name]) / statistics.median(
            r.rps for r in results[base_name]
        )
        # Each round's contender against the same round's baseline: load that comes and
        # goes during the run (a shared machine) moves both sides of a pair alike.
        paired = statistics.median(
            r.rps / b.rps for r, b in zip(results[name], results[base_name], strict=True)
        )
        verdict = "meets" if ratio >= TARGET_RATIO else "misses"
        print(
            f"- OpenHA (access_log {mode}) / {base_name} = {ratio:.3f} "
            f"({verdict} the {TARGET_RATIO} target; median of per-round ratios {paired:.3f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--baseline-nbthread",
        type=int,
        default=None,
        help="nbthread of the hand-written configs (default: HAProxy's, one per core)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also run OpenHA's rendered configs by hand: the default one without logging "
        "(prices the logging) and the errors flavor's as rendered (config vs instance cost)",
    )
    args = parser.parse_args()
    require_root()
    print(f"# throughput ({machine_line()})\n", flush=True)
    run(args)


if __name__ == "__main__":
    main()
