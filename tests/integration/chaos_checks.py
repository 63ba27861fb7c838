"""The chaos run's checks: convergence, loaded state = desired state, traffic, leftovers.

Each check returns the problems it finds ([] when all is well), so `eventually` can
retry it and fail with the last findings.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from chaos_procs import World
from stack import processes_naming

from openha.agent import keeper
from openha.agent.haproxy import cli_command
from openha.agent.netns import namespace_exists, namespace_pids, owned_host_links
from openha.agent.paths import instance_paths, log_paths, namespace_name
from openha.agent.procs import pid_alive
from openha.agent.syslogd import Syslogd

# srv_admin_state bits that mean maintenance (HAProxy's SRV_ADMF_MAINT): forced, inherited,
# resolution. Not 0x04 (CMAINT): it only remembers that the config said `disabled`, and
# stays set after `set server … state ready` while the server serves.
MAINT_BITS = 0x01 | 0x02 | 0x20


# --- desired versus loaded ------------------------------------------------------------------


@dataclass
class Desired:
    """What one load balancer's HAProxy must run, read through the API."""

    lb: dict[str, Any]
    frontends: dict[str, int]  # enabled listener id -> port
    default_pool: dict[str, str | None]  # enabled listener id -> its rendered default pool
    backends: dict[str, dict[str, tuple[str, int, int, bool]]]  # pool -> member -> state
    disabled_listeners: list[int] = field(default_factory=list)  # ports that must not answer
    monitored: dict[str, bool] = field(default_factory=dict)  # rendered pool -> has a monitor
    member_status: dict[str, str] = field(default_factory=dict)  # member -> operating_status


def desired(api: httpx.Client, lb_id: str) -> Desired:
    lb = api.get(f"/v2/lbaas/loadbalancers/{lb_id}").json()["loadbalancer"]
    frontends: dict[str, int] = {}
    default_pool: dict[str, str | None] = {}
    disabled: list[int] = []
    pools: dict[str, dict[str, Any]] = {}
    for ref in lb["pools"]:
        pool = api.get(f"/v2/lbaas/pools/{ref['id']}").json()["pool"]
        pools[pool["id"]] = pool
    backends: dict[str, dict[str, tuple[str, int, int, bool]]] = {}
    monitored: dict[str, bool] = {}
    statuses: dict[str, str] = {}
    for ref in lb["listeners"]:
        li = api.get(f"/v2/lbaas/listeners/{ref['id']}").json()["listener"]
        if not li["admin_state_up"]:
            disabled.append(li["protocol_port"])
            continue
        frontends[li["id"]] = li["protocol_port"]
        pool = pools.get(li["default_pool_id"] or "")
        if pool is None or not pool["admin_state_up"]:
            default_pool[li["id"]] = None
            continue
        default_pool[li["id"]] = pool["id"]
        members = api.get(f"/v2/lbaas/pools/{pool['id']}/members").json()["members"]
        backends[pool["id"]] = {
            m["id"]: (m["address"], m["protocol_port"], m["weight"], not m["admin_state_up"])
            for m in members
        }
        monitored[pool["id"]] = bool(pool.get("healthmonitor_id"))
        statuses.update({m["id"]: m["operating_status"] for m in members})
    return Desired(lb, frontends, default_pool, backends, disabled, monitored, statuses)


def loaded_servers(stats_socket: Path) -> dict[str, dict[str, tuple[str, int, int, bool]]]:
    """`show servers state`: backend -> server -> (address, port, weight, in maintenance)."""
    out: dict[str, dict[str, tuple[str, int, int, bool]]] = {}
    text = cli_command(stats_socket, "show servers state")
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("# be_id"))
    cols = header[2:].split()
    for line in lines:
        if not line.strip() or line.startswith("#") or line.strip() == "1":
            continue
        row = dict(zip(cols, line.split(), strict=False))
        admin = int(row["srv_admin_state"])
        out.setdefault(row["be_name"], {})[row["srv_name"]] = (
            row["srv_addr"],
            int(row["srv_port"]),
            int(row["srv_uweight"]),
            bool(admin & MAINT_BITS),
        )
    return out


def loaded_proxies(stats_socket: Path) -> tuple[set[str], set[str]]:
    """`show stat`: (frontend names, backend names) HAProxy runs."""
    text = cli_command(stats_socket, "show stat")
    frontends, backends = set(), set()
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, kind = line.split(",")[:2]
        if kind == "FRONTEND":
            frontends.add(name)
        elif kind == "BACKEND":
            backends.add(name)
    return frontends, backends


def compare_loaded(want: Desired, stats_socket: Path) -> list[str]:
    """Every difference between what HAProxy runs and what the API says; [] when equal."""
    problems = []
    frontends, backends = loaded_proxies(stats_socket)
    if frontends != set(want.frontends):
        problems.append(f"frontends {sorted(frontends)} != wanted {sorted(want.frontends)}")
    if backends != set(want.backends):
        problems.append(f"backends {sorted(backends)} != wanted {sorted(want.backends)}")
    servers = loaded_servers(stats_socket)
    for pool_id, members in want.backends.items():
        if servers.get(pool_id, {}) != members:
            problems.append(f"pool {pool_id}: runs {servers.get(pool_id)} != wanted {members}")
    return problems


def expected_status(want: Desired, listener_id: str) -> int:
    pool = want.default_pool.get(listener_id)
    if pool is None:
        return 503
    may_serve = any(
        not maint and weight > 0 for _, _, weight, maint in want.backends[pool].values()
    )
    return 200 if may_serve else 503


def instances(w: World) -> list[dict[str, Any]]:
    resp = w.stack.admin.get("/v2/manage/instances")
    resp.raise_for_status()
    return list(resp.json()["instances"])


def settled(w: World) -> list[str]:
    """Why the system has not converged yet ([] once it has)."""
    api = w.stack.tenant
    problems = []
    for lb in api.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]:
        if lb["provisioning_status"] != "ACTIVE":
            problems.append(f"LB {lb['id']} {lb['provisioning_status']}")
    for kind in ("listeners", "pools", "healthmonitors"):
        for obj in api.get(f"/v2/lbaas/{kind}").json()[kind]:
            if obj["provisioning_status"] != "ACTIVE":
                problems.append(f"{kind} {obj['id']} {obj['provisioning_status']}")
    by_host: dict[str, set[str]] = {}
    for inst in instances(w):
        w.seen_instances.add(inst["id"])
        by_host.setdefault(inst["host_id"], set()).add(inst["id"])
        if not inst["haproxy_running"]:
            problems.append(f"instance {inst['id']} HAProxy not running")
    for agent in w.stack.agents:
        dirs = {d.name for d in agent.instance_dirs()}
        w.seen_instances |= dirs
        wanted = by_host.get(agent.host_id, set())
        if dirs != wanted:
            problems.append(f"{agent.name}: dirs {sorted(dirs)} != instances {sorted(wanted)}")
    current = set().union(*by_host.values()) if by_host else set()
    for gone in w.seen_instances - current:
        if namespace_exists(namespace_name(gone)):
            problems.append(f"orphan namespace {namespace_name(gone)}")
    return problems


def pairs_whole(w: World) -> list[str]:
    problems = []
    per_lb: dict[str, list[dict[str, Any]]] = {}
    for inst in instances(w):
        per_lb.setdefault(inst["load_balancer_id"], []).append(inst)
    for lb_id, insts in per_lb.items():
        if len(insts) == 2 and sorted(i["vrrp_state"] or "" for i in insts) != ["BACKUP", "MASTER"]:
            problems.append(f"pair {lb_id}: {[i['vrrp_state'] for i in insts]}")
    return problems


def check_loaded(w: World) -> list[str]:
    """Every running HAProxy against the API's desired state; [] when all are equal."""
    problems = []
    agent_of = {a.host_id: a for a in w.stack.agents}
    for inst in instances(w):
        want = desired(w.stack.tenant, inst["load_balancer_id"])
        agent = agent_of[inst["host_id"]]
        sock = instance_paths(agent.dir, inst["id"]).stats_socket
        try:
            diffs = compare_loaded(want, sock)
        except OSError as exc:
            diffs = [f"stats socket: {exc}"]
        problems += [f"instance {inst['id']} ({agent.name}): {d}" for d in diffs]
        if want.lb["flavor_id"] and not pid_running(
            agent.dir / "instances" / inst["id"] / "keepalived.pid"
        ):
            problems.append(f"instance {inst['id']} ({agent.name}): keepalived not running")
        ns = namespace_name(inst["id"])
        if not namespace_exists(ns):
            problems.append(f"instance {inst['id']}: no namespace {ns}")
    return problems


def check_member_status(w: World) -> list[str]:
    """Members of rendered pools report what HAProxy does with them (all backends are up)."""
    problems = []
    for lb in w.stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]:
        want = desired(w.stack.tenant, lb["id"])
        for pool_id, members in want.backends.items():
            for member_id, (_, _, weight, maint) in members.items():
                if maint:
                    expected = {"OFFLINE"}
                else:
                    expected = {"ONLINE" if want.monitored[pool_id] else "NO_MONITOR"}
                    if weight == 0:
                        expected.add("DRAINING")
                got = want.member_status[member_id]
                if got not in expected:
                    problems.append(f"member {member_id} {got}, wanted {sorted(expected)}")
    return problems


def pid_running(pid_file: Path) -> bool:
    try:
        return pid_alive(int(pid_file.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return False


def checker_sees_a_difference(w: World) -> bool:
    """Put one server in MAINT behind the agent's back: `check_loaded` must see it.

    Proves the comparison can fail (a check that cannot fail proves nothing); the
    server is made ready again afterwards. False when no server is ready anywhere.
    """
    agent_of = {a.host_id: a for a in w.stack.agents}
    for inst in instances(w):
        sock = instance_paths(agent_of[inst["host_id"]].dir, inst["id"]).stats_socket
        for pool_id, members in loaded_servers(sock).items():
            for member_id, (_, _, _, maint) in members.items():
                if maint:
                    continue
                cli_command(sock, f"set server {pool_id}/{member_id} state maint")
                try:
                    problems = check_loaded(w)
                finally:
                    cli_command(sock, f"set server {pool_id}/{member_id} state ready")
                assert any(member_id in p for p in problems), problems
                assert check_loaded(w) == []
                return True
    return False


def check_traffic(w: World) -> list[str]:
    """Each enabled listener answers as its pool says; disabled ones do not answer."""
    problems = []
    for lb in w.stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]:
        want = desired(w.stack.tenant, lb["id"])
        vip = lb["vip_address"]
        for listener_id, port in want.frontends.items():
            expected = expected_status(want, listener_id)
            try:
                got: int | str = w.client.request(f"http://{vip}:{port}/", timeout=3).status
            except OSError as exc:
                got = f"{type(exc).__name__}: {exc}"
            if got != expected:
                problems.append(f"LB {lb['id']} :{port} answered {got}, wanted {expected}")
        for port in want.disabled_listeners:
            if port not in want.frontends.values():
                try:
                    got = w.client.request(f"http://{vip}:{port}/", timeout=2).status
                    problems.append(f"LB {lb['id']} disabled :{port} answered {got}")
                except OSError:
                    pass
    return problems


def eventually(check: Callable[[], list[str]], timeout: float, what: str) -> None:
    """Run `check` until it finds no problem; fail with its last findings after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            problems = check()
        except httpx.TransportError as exc:
            problems = [f"API: {exc!r}"]
        if not problems:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} not reached within {timeout:.0f}s:\n  " + "\n  ".join(problems)
            )
        time.sleep(0.5)


def check_nothing_left(w: World) -> list[str]:
    problems = []
    for agent in w.stack.agents:
        if agent.instance_dirs():
            problems.append(f"{agent.name} still has {[d.name for d in agent.instance_dirs()]}")
    for inst_id in sorted(w.seen_instances):
        ns = namespace_name(inst_id)
        if namespace_exists(ns):
            problems.append(f"namespace {ns} left (pids {namespace_pids(ns)})")
        if owned_host_links(ns):
            problems.append(f"links {owned_host_links(ns)} of {ns} left")
    # A running agent, the keeper it leaves asleep (`openha.agent.keeper`) and its rsyslogd stay.
    agent_pids = {a.proc.pid for a in w.stack.agents if a.proc is not None}
    # Each running agent's own rsyslogd belongs to the host, not to a load balancer.
    agent_pids |= {
        pid
        for a in w.stack.agents
        if a.proc is not None and (pid := Syslogd(log_paths(a.dir).syslog_dir).pid()) is not None
    }
    for agent in w.stack.agents:
        with contextlib.suppress(OSError, ValueError, IndexError):
            if agent.proc is not None:
                agent_pids.add(int((agent.dir / keeper.PID_FILE).read_text().split()[0]))
    for pid in processes_naming(w.stack.root):
        if pid not in agent_pids:
            problems.append(f"process {pid} left: {Path(f'/proc/{pid}/cmdline').read_bytes()!r}")
    return problems
