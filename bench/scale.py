"""Fleet scale: many load balancers on one agent host, and what the idle control plane costs.

Unlike the other benchmarks, the API, the controller and the agent run here as
separate `openha` processes (as `openha up` runs them), so that each one's CPU
can be read from /proc/<pid>/stat (utime + stime; the HAProxy processes the
agent starts are not counted). On a lab bridge with a /20 (room for a thousand
VIPs), with one fast backend HAProxy every member points at:

1. creates `--lbs` load balancers, each one POST of a full tree (HTTP listener,
   pool, `--members` members, HTTP health monitor), `--parallel` at a time, and
   waits for all of them to be ACTIVE and ONLINE: the creation rate;
2. waits `--settle` seconds, then reads each process's CPU over `--window`
   seconds: the idle control plane's share of one core (target: <= 5 % at 1,000);
3. times the lists an operator or a dashboard calls (all load balancers, pools,
   listeners, members of one pool, health monitors; a status tree), 5 times each.

Everything it made is removed at the end, also on failure, Ctrl-C or SIGTERM.
`make test` keeps a scaled-down, counting version of (2):
tests/api/test_fleet_cost.py.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from harness import (
    FastBackend,
    _raise_on_sigterm,
    machine_line,
    percentile,
    print_table,
    require_root,
)
from stack import free_port, wait_for

from openha import hosts
from openha.agent.purge import purge
from openha.credentials import create_token
from openha.db import make_engine, make_session_factory, transaction, upgrade
from openha.lab import Lab
from openha.lab.netlab import _used_networks

OPENHA = str(Path(sys.executable).parent / "openha")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_slash20() -> str:
    used = _used_networks()
    for second in range(200, 250):
        for third in range(0, 256, 16):
            net = ipaddress.ip_network(f"10.{second}.{third}.0/20")
            if not any(net.overlaps(u) for u in used):
                return str(net)
    raise RuntimeError("no free 10.x.y.0/20 for the lab")


class ControlPlane:
    """`openha api`, `openha controller` and `openha agent` as processes of their own."""

    def __init__(self, lab: Lab, root: Path, database_url: str) -> None:
        self.lab, self.root, self.database_url = lab, root, database_url
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        upgrade(database_url)
        self.sessions = make_session_factory(make_engine(database_url))
        with transaction(self.sessions) as s:
            self.admin_token = create_token(s, "admin", ["admin"])
            self.token = create_token(s, "4444444444444444444444444444444a", ["member"])
            self.credential = hosts.enroll(s, f"{lab.prefix}h0")

    def _start(self, name: str, *argv: str, env: dict[str, str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [OPENHA, *argv],
            env={
                **os.environ,
                "OPENHA_DATABASE_URL": self.database_url,
                "OPENHA_PARENT_PID": str(os.getpid()),
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self) -> None:
        self._start(
            "api",
            "api",
            env={"OPENHA_STATE_DIR": str(self.root / "api"), "OPENHA_API_BIND": self.url[7:]},
        )
        wait_for(lambda: _answers(self.url), 30, what="API up")
        self._start("controller", "controller", env={"OPENHA_STATE_DIR": str(self.root / "c")})
        agent_dir = self.root / "agent"
        self._start(
            "agent",
            "agent",
            env={
                "OPENHA_STATE_DIR": str(agent_dir),
                "OPENHA_AGENT_DIR": str(agent_dir),
                "OPENHA_AGENT_BIND": f"127.0.0.1:{free_port()}",
                "OPENHA_AGENT_API_URL": self.url,
                "OPENHA_AGENT_TOKEN": self.credential,
                "OPENHA_HOST_NAME": f"{self.lab.prefix}h0",
            },
        )
        admin = self.client(self.admin_token)
        wait_for(
            lambda: [h["status"] for h in admin.get("/v2/manage/hosts").json()["hosts"]] == ["UP"],
            60,
            what="agent up",
        )

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-Auth-Token": token}, timeout=120)

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(p.pid) for name, p in self.procs.items()}

    def close(self) -> None:
        # Controller first: an agent stopping under a running controller would be failed over.
        for name in ("controller", "agent", "api"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        purge(self.root / "agent")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def fleet_world(database_url: str | None) -> Iterator[tuple[Lab, ControlPlane]]:
    _raise_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="ohscale-", dir="/tmp"))
    try:
        with Lab(subnet=free_slash20()) as lab:
            plane = ControlPlane(lab, root, database_url or f"sqlite:///{root / 'openha.db'}")
            try:
                plane.start()
                yield lab, plane
            finally:
                plane.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def vip_subnet(lab: Lab, admin: httpx.Client) -> str:
    net = admin.post(
        "/v2.0/networks",
        json={
            "network": {
                "name": f"{lab.prefix}-net",
                "shared": True,
                "provider:network_type": "flat",
                "provider:physical_network": lab.bridge,
                "openha:bridge_managed": False,
            }
        },
    )
    assert net.status_code == 201, net.text
    hosts_ = list(lab.network.hosts())
    sub = admin.post(
        "/v2.0/subnets",
        json={
            "subnet": {
                "network_id": net.json()["network"]["id"],
                "cidr": str(lab.network),
                "ip_version": 4,
                "gateway_ip": lab.host_ip,
                # The lab hands out the low addresses to the backends.
                "allocation_pools": [{"start": str(hosts_[256]), "end": str(hosts_[-1])}],
            }
        },
    )
    assert sub.status_code == 201, sub.text
    return str(sub.json()["subnet"]["id"])


def tree(subnet_id: str, backends: list[FastBackend], members: int) -> dict[str, Any]:
    return {
        "loadbalancer": {
            "vip_subnet_id": subnet_id,
            "listeners": [
                {
                    "protocol": "HTTP",
                    "protocol_port": 80,
                    "default_pool": {
                        "name": "web",
                        "protocol": "HTTP",
                        "lb_algorithm": "ROUND_ROBIN",
                        "members": [
                            {
                                "address": backends[i % len(backends)].ip,
                                "protocol_port": backends[i % len(backends)].port,
                            }
                            for i in range(members)
                        ],
                        "healthmonitor": {
                            "type": "HTTP",
                            "delay": 5,
                            "timeout": 3,
                            "max_retries": 3,
                        },
                    },
                }
            ],
        }
    }


def create_fleet(
    tenant: httpx.Client, body: dict[str, Any], count: int, parallel: int
) -> tuple[list[str], float]:
    """Create `count` LBs; their ids and the seconds until all were ACTIVE and ONLINE."""
    start = time.monotonic()

    def one(_: int) -> str:
        resp = tenant.post("/v2/lbaas/loadbalancers", json=body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["loadbalancer"]["id"])

    with ThreadPoolExecutor(parallel) as pool:
        ids = list(pool.map(one, range(count)))

    def settled() -> bool:
        lbs = tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]
        states = {(lb["provisioning_status"], lb["operating_status"]) for lb in lbs}
        print(f"  {time.monotonic() - start:6.1f}s {sorted(states)}", flush=True)
        return states == {("ACTIVE", "ONLINE")}

    wait_for(settled, max(120, count * 2.0), interval=5, what="fleet ACTIVE and ONLINE")
    return ids, time.monotonic() - start


def idle_cpu(plane: ControlPlane, window: float) -> dict[str, float]:
    """Each process's share of one core over `window` seconds."""
    before, t0 = plane.cpu(), time.monotonic()
    time.sleep(window)
    after, elapsed = plane.cpu(), time.monotonic() - t0
    return {name: (after[name] - before[name]) / elapsed for name in before}


def list_latencies(tenant: httpx.Client, lb_id: str) -> list[tuple[str, float, float]]:
    pool_id = tenant.get(f"/v2/lbaas/loadbalancers/{lb_id}").json()["loadbalancer"]["pools"][0][
        "id"
    ]
    paths = [
        "/v2/lbaas/loadbalancers",
        "/v2/lbaas/listeners",
        "/v2/lbaas/pools",
        "/v2/lbaas/healthmonitors",
        f"/v2/lbaas/pools/{pool_id}/members",
        f"/v2/lbaas/loadbalancers/{lb_id}/status",
    ]
    rows = []
    for path in paths:
        times = []
        for _ in range(5):
            start = time.monotonic()
            resp = tenant.get(path, params={"limit": 10000} if "status" not in path else None)
            times.append(time.monotonic() - start)
            assert resp.status_code == 200, resp.text
        rows.append((path, percentile(times, 50) * 1000, max(times) * 1000))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lbs", type=int, default=1000)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=8, help="concurrent creates")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of CPU reading")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = parser.parse_args()
    require_root()
    print(f"# Fleet scale: {args.lbs} load balancers on one agent host\n\n{machine_line()}\n")
    with fleet_world(args.database_url) as (lab, plane):
        admin, tenant = plane.client(plane.admin_token), plane.client(plane.token)
        backends = [FastBackend(lab, f"web{i}") for i in range(2)]
        subnet_id = vip_subnet(lab, admin)
        ids, took = create_fleet(
            tenant, tree(subnet_id, backends, args.members), args.lbs, args.parallel
        )
        time.sleep(args.settle)
        shares = idle_cpu(plane, args.window)
        lists = list_latencies(tenant, ids[0])
        host = admin.get("/v2/manage/hosts").json()["hosts"][0]
    print_table(
        f"Creation: {args.lbs} LBs ({args.members} members, HTTP monitor each), "
        f"{args.parallel} POSTs at a time",
        ["LBs", "seconds until all ACTIVE and ONLINE", "LB/s", "host capacity"],
        [(args.lbs, f"{took:.1f}", f"{args.lbs / took:.2f}", host["capacity"])],
    )
    total = sum(shares.values())
    print_table(
        f"Idle control plane with {args.lbs} LBs, {args.window:g} s "
        "(share of one core, utime + stime from /proc)",
        ["api", "controller", "agent", "total", "target"],
        [
            (
                *(f"{shares[n] * 100:.2f} %" for n in ("api", "controller", "agent")),
                f"{total * 100:.2f} %",
                "≤ 5 %",
            )
        ],
    )
    print_table(
        f"List latencies with {args.lbs} LBs (5 calls each)",
        ["GET", "p50 ms", "max ms"],
        [(p, f"{p50:.0f}", f"{top:.0f}") for p, p50, top in lists],
    )


if __name__ == "__main__":
    main()
