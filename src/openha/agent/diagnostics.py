"""One instance's diagnostics, gathered live on its host: everything an operator would
otherwise ssh in and `ip netns exec` for.

- processes: HAProxy's serving pid and any still draining, uptime, starts, reloads
  and failed reloads (`agent.history`); keepalived's pid, VRRP state, configured
  role and priority, and when the state last changed;
- generations and the last apply's outcome;
- HAProxy's runtime API: `show info` essentials, every frontend/backend/server with
  check results, `show errors`, stick tables (`agent.runtime_answers`);
- the config HAProxy runs, redacted, and the unified diff to a config it refused
  (`agent.redact`);
- the namespace's plumbing and the last gratuitous ARP (`agent.plumbing`);
- the sandbox: uid, chroot, cgroup, limits, usage against them, what could not be
  applied, and each process's ids, capabilities, root and groups (`agent.sandbox`);
- on demand, the active probe of every member (`agent.probe`).
Nothing here takes the instance's lock: an apply may run for seconds, and diagnostics
are most wanted exactly then. Each part that fails says why in its place; the rest
is still answered.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from openha.agent import kernelguard
from openha.agent.haproxy import HAProxyInstance
from openha.agent.keepalived import KeepalivedInstance
from openha.agent.plumbing import read_plumbing
from openha.agent.probe import probe_targets, run_probe
from openha.agent.procs import confinement
from openha.agent.protocol import InstanceStatus
from openha.agent.redact import config_diff, redact_config
from openha.agent.runtime_answers import (
    parse_show_errors,
    parse_show_info,
    parse_show_stat,
    parse_show_table,
)
from openha.domain.spec import InstanceSpec

RUNTIME_TIMEOUT = 0.5
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_uptime(pid: int) -> float | None:
    """Seconds since `pid` started (from /proc), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
        with open("/proc/uptime") as fh:
            boot = float(fh.read().split()[0])
    except (OSError, ValueError):
        return None
    # Field 22 of stat (starttime, in clock ticks since boot); the tail starts at field 3.
    return round(boot - int(fields[19]) / _CLK_TCK, 1)


def sandbox_view(haproxy: HAProxyInstance, keepalived: KeepalivedInstance) -> dict[str, Any]:
    """The instance's uid, chroot, cgroup, limits and usage, and how each of its
    processes is actually confined (read from /proc)."""
    view: dict[str, Any] = haproxy.sandbox.describe() if haproxy.sandbox is not None else {}
    pids = sorted(set(haproxy.processes()) | set(filter(None, [keepalived.pid()])))
    view["processes"] = {str(pid): confinement(pid) for pid in pids}
    return view


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def haproxy_processes(haproxy: HAProxyInstance, history: dict[str, Any]) -> dict[str, Any]:
    pid = haproxy.pid()
    draining = [p for p in haproxy.processes() if p != pid] if pid is not None else []
    counts = history.get("counts", {})
    return {
        "pid": pid,
        "running": pid is not None,
        "uptime_seconds": process_uptime(pid) if pid is not None else None,
        "draining_pids": draining,
        "starts": counts.get("start", 0),
        "failed_starts": counts.get("failed_start", 0),
        "reloads": counts.get("reload", 0),
        "failed_reloads": counts.get("failed_reload", 0),
        "runtime_updates": counts.get("runtime_update", 0),
        "last_reload": history.get("last_reload"),
        "last_failed_reload": history.get("last_failed_reload"),
    }


_PRIORITY = re.compile(r"^\s*priority\s+(\d+)", re.MULTILINE)
_STATE = re.compile(r"^\s*state\s+(MASTER|BACKUP)", re.MULTILINE)


def keepalived_processes(keepalived: KeepalivedInstance) -> dict[str, Any]:
    pid = keepalived.pid()
    config = _read(keepalived.paths.keepalived_config) or ""
    priority = _PRIORITY.search(config)
    initial = _STATE.search(config)
    return {
        "pid": pid,
        "running": pid is not None,
        "uptime_seconds": process_uptime(pid) if pid is not None else None,
        "vrrp_state": keepalived.vrrp_state(),
        "initial_state": initial.group(1) if initial else None,
        "nopreempt": "nopreempt" in config,
        "priority": int(priority.group(1)) if priority else None,
        # The notify script rewrites the state file at every transition.
        "last_transition_at": _mtime(keepalived.paths.vrrp_state_file),
        "haproxy_down_flag": (_read(keepalived.paths.haproxy_down) or "").strip() == "1",
    }


def haproxy_runtime(haproxy: HAProxyInstance) -> dict[str, Any]:
    """HAProxy's own view, through its stats socket; `error` when it does not answer."""
    answers: dict[str, str] = {}
    try:
        for command in ("show info", "show stat", "show errors", "show table"):
            answers[command] = haproxy.runtime(command, RUNTIME_TIMEOUT)
    except OSError as exc:
        return {"error": f"stats socket: {exc.strerror or exc}"}
    stats = parse_show_stat(answers["show stat"])
    return {
        "info": parse_show_info(answers["show info"]),
        "frontends": stats["frontends"],
        "backends": stats["backends"],
        "servers": stats["servers"],
        "errors": parse_show_errors(answers["show errors"]),
        "stick_tables": parse_show_table(answers["show table"]),
    }


def config_view(haproxy: HAProxyInstance, keepalived_config: str | None) -> dict[str, Any]:
    last_good = haproxy.known_config() or haproxy.current_config()
    rejected = _read(haproxy.paths.rejected)
    view: dict[str, Any] = {
        "haproxy": redact_config(last_good) if last_good is not None else None,
        "rejected": redact_config(rejected) if rejected is not None else None,
        # From the last good config to the one refused: what the failed change was.
        "diff": config_diff(last_good, rejected) if rejected is not None else "",
    }
    if keepalived_config:
        view["keepalived"] = redact_config(keepalived_config)
    return view


def _garp(
    spec: InstanceSpec | None, history: dict[str, Any], keepalived: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The last gratuitous ARP for the VIP: the agent's own record, or keepalived's
    announcement when it became MASTER (it owns a pair's VIP; the agent sends none)."""
    if spec is None or not spec.vip_managed_by_keepalived or keepalived is None:
        return history.get("garp")
    if keepalived.get("vrrp_state") != "MASTER":
        return None
    return {
        "at": keepalived.get("last_transition_at"),
        "address": spec.vip_address,
        "interface": spec.vip_interface,
        "by": "keepalived",
    }


def diagnose(
    status: InstanceStatus,
    spec: InstanceSpec | None,
    haproxy: HAProxyInstance,
    keepalived: KeepalivedInstance,
    *,
    probe: bool = False,
) -> dict[str, Any]:
    """Everything about one instance, read now (see the module docstring)."""
    started = time.monotonic()
    history = haproxy.history.snapshot()
    running = status.haproxy_running and haproxy.pid() is not None
    config = haproxy.known_config() or haproxy.current_config() or ""
    with ThreadPoolExecutor(max_workers=3) as pool:
        # The probe and the netlink reads wait on the network, not on each other.
        probing = (
            pool.submit(run_probe, haproxy.namespace, probe_targets(config))
            if probe and spec is not None
            else None
        )
        plumbing = pool.submit(read_plumbing, spec) if spec is not None else None
        runtime = haproxy_runtime(haproxy) if running else {"error": "haproxy is not running"}
        out: dict[str, Any] = {
            "instance_id": status.instance_id,
            "load_balancer_id": status.load_balancer_id,
            "role": spec.role if spec else None,
            "namespace": haproxy.namespace,
            "state": status.state,
            "desired_generation": status.desired_generation,
            "applied_generation": status.applied_generation,
            "last_error": status.last_error,
            "last_apply": history.get("last_apply"),
            "last_good_apply": history.get("last_good_apply"),
            "processes": {"haproxy": haproxy_processes(haproxy, history)},
            "runtime": runtime,
            "config": config_view(haproxy, spec.keepalived_config if spec else None),
        }
        if spec is not None and spec.keepalived_config:
            out["processes"]["keepalived"] = keepalived_processes(keepalived)
        out["sandbox"] = sandbox_view(haproxy, keepalived)
        try:
            out["plumbing"] = plumbing.result() if plumbing else None
        except Exception as exc:  # netlink errors come in many types: report, never fail
            out["plumbing"] = {"error": f"{type(exc).__name__}: {exc}"}
        if out["plumbing"] is not None:
            out["plumbing"]["garp"] = _garp(spec, history, out["processes"].get("keepalived"))
        try:
            out["kernel"] = kernelguard.read(haproxy.namespace)
        except Exception as exc:  # a namespace gone meanwhile: report, never fail
            out["kernel"] = {"error": f"{type(exc).__name__}: {exc}"}
        if probing is not None:
            try:
                out["probe"] = probing.result()
            except Exception as exc:
                out["probe_error"] = f"{type(exc).__name__}: {exc}"
    out["gathered_ms"] = round((time.monotonic() - started) * 1000, 1)
    out["gathered_at"] = time.time()
    return out
