"""Benchmark: noisy neighbours. Does a flood against one load balancer hurt another?

Two SINGLE load balancers of the same flavor, A and B, on one agent host (a real
`openha agent` process, the product's renderer, each with a fast backend of its own).
From a client namespace of its own, B gets a light closed-loop load (`wrk -t1 -c4`):
- idle: B alone;
- flood: the same, while a second client namespace floods A (`wrk -t1 -c200`, bounded
  by its duration and one client thread).
Each tenant's outside world, its client and its member, runs in a cgroup of the
benchmark's own with a CPU quota (`--world-cpu`, the same idle and under the flood),
standing for the machines they would be elsewhere: on two cores, unbounded, A's
client and member would take the CPU of B's client and member, and B's throughput
would measure the benchmark's machinery, not the LB host's walls. Only the LB host's
part is shared: the HAProxies (whose cores are printed: A's at its quota shows the
flood saturates it), rsyslogd, the agent, the kernel.
It runs twice: with the flavor's walls (`cpu_weight` equal, `cpu_max` per instance,
the default memory and task limits) and, as the baseline in the same run, with no CPU
quota (equal weights only). Printed: B's p99 latency and req/s idle and under flood,
the ratios flood/idle (targets: p99 within 2x, req/s within 10 % of its share, i.e.
of B alone under its quota), A's req/s, and the cores B's and A's HAProxies used.

Then a runaway: A's memory limit drops to its minimum (`memory_max_mb` 16) and a client
holds 2,000 connections to A with half-sent requests (a buffer each); the kernel's OOM
killer stops A inside its group, the agent restarts it, and B keeps answering: printed
are A's OOM kills (from its cgroup), whether A's process changed, B's pid unchanged and
B's failed requests during the episode (probe every 5 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from density import answers, instance_spec, pick_subnet
from harness import (
    AgentProcess,
    FakeAPI,
    FastBackend,
    Probe,
    _raise_on_sigterm,
    machine_line,
    print_table,
    require_root,
    wait_for,
)
from throughput import WrkResult, cpu_seconds, parse_wrk

from openha.agent import cgroups
from openha.agent.haproxy import HAProxyInstance
from openha.agent.netns import NamespaceExec
from openha.agent.paths import instance_paths, log_paths
from openha.agent.purge import purge
from openha.agent.syslogd import Syslogd
from openha.domain.spec import InstanceSpec, ResourceSpec
from openha.lab import ClientNamespace, Lab


def put(agent: AgentProcess, spec: InstanceSpec) -> None:
    resp = agent.put(spec)
    if resp.status_code != 200:
        raise RuntimeError(f"{spec.instance_id}: {resp.status_code} {resp.text[:300]}")


def walls(spec: InstanceSpec, generation: int, resources: ResourceSpec) -> InstanceSpec:
    return spec.model_copy(update={"generation": generation, "resources": resources})


def sandbox_view(agent: AgentProcess, spec: InstanceSpec) -> dict[str, Any]:
    """The agent's diagnostics of the instance's sandbox: uid, cgroup, limits, usage."""
    with agent.client() as api:
        resp = api.get(f"/v1/instances/{spec.instance_id}/diagnostics")
    return dict(resp.json().get("sandbox") or {})


def oom_kills(agent: AgentProcess, spec: InstanceSpec) -> int:
    return int((sandbox_view(agent, spec).get("usage") or {}).get("oom_kills") or 0)


class Bounded:
    """A cgroup of the benchmark's own, with a CPU quota: one tenant's client and member."""

    def __init__(self, name: str, cores: float) -> None:
        mount = cgroups.detect().mounts.get("cpu") or cgroups.detect().mounts.get("unified")
        if mount is None:
            raise RuntimeError("no cpu cgroup controller to bound the clients with")
        self.dir = mount / f"ohbench-{name}-{os.getpid()}"
        self.dir.mkdir(exist_ok=True)
        quota = round(cores * cgroups.CFS_PERIOD_US)
        if (self.dir / "cpu.max").exists():
            (self.dir / "cpu.max").write_text(f"{quota} {cgroups.CFS_PERIOD_US}")
        else:
            (self.dir / "cpu.cfs_period_us").write_text(str(cgroups.CFS_PERIOD_US))
            (self.dir / "cpu.cfs_quota_us").write_text(str(quota))

    def wrk(self, namespace: str, url: str, seconds: int, threads: int, conns: int) -> WrkResult:
        cmd = (
            f"echo $$ > {self.dir}/cgroup.procs && exec ip netns exec {namespace} wrk "
            f"-t{threads} -c{conns} -d{seconds}s --latency {url}"
        )
        out = subprocess.run(
            ["sh", "-c", cmd], check=True, capture_output=True, text=True, timeout=seconds + 30
        )
        return parse_wrk(out.stdout)

    def adopt(self, pid: int) -> None:
        (self.dir / "cgroup.procs").write_text(str(pid))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.dir.rmdir()


def measure(
    b_client: str,
    a_client: str,
    url_a: str,
    url_b: str,
    seconds: int,
    worlds: tuple[Bounded, Bounded],
    cpu: Callable[[], tuple[float, float]],
    outside: Callable[[], tuple[float, float]],
) -> tuple[WrkResult, WrkResult, WrkResult, tuple[float, ...]]:
    """B alone, then B while A is flooded: (B idle, B under flood, A's flood, cores used
    by B idle, by B and by A under the flood, then by what no wall holds under the
    flood: the agent's rsyslogd and the kernel's softirq work); `cpu` reads A's and B's
    CPU seconds, `outside` those two."""
    world_a, world_b = worlds
    (_, b0), start = cpu(), time.monotonic()
    idle = world_b.wrk(b_client, url_b, seconds, 1, 4)
    b_idle = (cpu()[1] - b0) / (time.monotonic() - start)
    results: dict[str, WrkResult] = {}

    def flood() -> None:
        results["a"] = world_a.wrk(a_client, url_a, seconds + 2, 1, 200)

    thread = threading.Thread(target=flood)
    thread.start()
    time.sleep(1.0)  # the flood is under way
    (a0, b0), (r0, s0), since = cpu(), outside(), time.monotonic()
    busy = world_b.wrk(b_client, url_b, seconds, 1, 4)
    (a1, b1), (r1, s1), took = cpu(), outside(), time.monotonic() - since
    thread.join()
    spent = (b_idle, (b1 - b0) / took, (a1 - a0) / took, (r1 - r0) / took, (s1 - s0) / took)
    return idle, busy, results["a"], spent


def outside_walls(agent_dir: Path) -> Callable[[], tuple[float, float]]:
    """CPU seconds of the agent's rsyslogd and of the kernel's softirq work (all CPUs)."""
    syslogd = Syslogd(log_paths(agent_dir).syslog_dir)
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> tuple[float, float]:
        pid = syslogd.pid()
        rsyslogd = cpu_seconds([pid]) if pid is not None else 0.0
        cpu_line = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return rsyslogd, int(cpu_line[7]) / tick  # user nice system idle iowait irq softirq

    return read


def hold_half_requests(namespace: str, vip: str, count: int, seconds: float) -> int:
    """`count` connections to A, each with a request cut mid-header, held `seconds`."""
    socks: list[socket.socket] = []
    with NamespaceExec(namespace) as nsexec:
        done = threading.Event()
        opened = [0]

        def run() -> None:
            nsexec()  # this thread's network namespace (setns is per thread)
            body = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"x" * 8000
            for _ in range(count):
                try:
                    s = socket.create_connection((vip, 80), timeout=1)
                    s.sendall(body)
                    socks.append(s)
                    opened[0] += 1
                except OSError:
                    time.sleep(0.01)
            done.wait(seconds)
            for s in socks:
                with contextlib.suppress(OSError):
                    s.close()

        worker = threading.Thread(target=run)
        worker.start()
        worker.join(seconds + 60)
        done.set()
    return opened[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=8, help="each wrk run (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per mode (default 2)")
    parser.add_argument("--cpu-max", type=float, default=0.5, help="each LB's quota in cores")
    parser.add_argument(
        "--world-cpu",
        type=float,
        default=0.6,
        help="CPU quota (cores) of each tenant's client and member together",
    )
    parser.add_argument(
        "--access-log",
        choices=("all", "errors", "none"),
        default="all",
        help="both LBs' access log (default all, the default flavor's)",
    )
    args = parser.parse_args()
    require_root()
    _raise_on_sigterm()
    print(f"# isolation ({machine_line()}; access log {args.access_log})\n")
    agent_dir = Path(tempfile.mkdtemp(prefix="ohi-b-", dir="/tmp"))
    try:
        with Lab(subnet=str(pick_subnet(16))) as lab, FakeAPI() as api:
            backends = [FastBackend(lab, f"web{i}", threads=2) for i in (1, 2)]
            a_client = lab.add_namespace("flood", lab.allocate_ip())
            b_client = lab.add_namespace("steady", lab.allocate_ip())
            client = ClientNamespace(lab)
            agent = AgentProcess(agent_dir, api_url=api.url)
            worlds = (Bounded("a", args.world_cpu), Bounded("b", args.world_cpu))
            for world, backend in zip(worlds, backends, strict=True):
                world.adopt(backend.haproxy.proc.pid)
            try:
                agent.spawn()
                a, b = (
                    instance_spec(lab, agent_dir, lab.allocate_ip(), be, args.access_log)
                    for be in backends
                )
                api.wanted = [a.instance_id, b.instance_id]
                url_a, url_b = f"http://{a.vip_address}/", f"http://{b.vip_address}/"
                generation = 1
                rows = []
                outside = outside_walls(agent_dir)
                modes = {
                    "no quota (weights only)": ResourceSpec(cpu_weight=100),
                    f"quota {args.cpu_max:g} core each": ResourceSpec(
                        cpu_weight=100, cpu_max=args.cpu_max
                    ),
                }
                for mode, res in modes.items():
                    for spec in (a, b):
                        put(agent, walls(spec, generation, res))
                    generation += 1
                    for url in (url_a, url_b):
                        wait_for(lambda url=url: answers(client, url), timeout=30)
                    idle_p99, busy_p99, idle_rps, busy_rps, a_rps = [], [], [], [], []
                    cores: list[tuple[float, ...]] = []

                    def used() -> tuple[float, float]:
                        def seconds(x: InstanceSpec) -> float:
                            return float(sandbox_view(agent, x)["usage"]["cpu_seconds"] or 0)

                        return seconds(a), seconds(b)

                    for _ in range(args.rounds):
                        idle, busy, flood, spent = measure(
                            b_client, a_client, url_a, url_b, args.seconds, worlds, used,
                            outside,
                        )  # fmt: skip
                        idle_p99.append(idle.p99_ms)
                        busy_p99.append(busy.p99_ms)
                        idle_rps.append(idle.rps)
                        busy_rps.append(busy.rps)
                        a_rps.append(flood.rps)
                        cores.append(spent)
                    med = statistics.median
                    rows.append([
                        mode, f"{med(idle_p99):.2f}", f"{med(busy_p99):.2f}",
                        f"{med(busy_p99) / med(idle_p99):.2f}", f"{med(idle_rps):,.0f}",
                        f"{med(busy_rps):,.0f}", f"{med(busy_rps) / med(idle_rps):.2f}",
                        f"{med(a_rps):,.0f}",
                        " / ".join(f"{med(c[i] for c in cores):.2f}" for i in range(3)),
                        " / ".join(f"{med(c[i] for c in cores):.2f}" for i in (3, 4)),
                    ])  # fmt: skip
                print_table(
                    f"B under a flood of A (medians of {args.rounds} rounds of {args.seconds} s; "
                    f"each tenant's client and member bounded to {args.world_cpu:g} core)",
                    [
                        "walls", "B p99 idle ms", "B p99 flood ms", "p99 ratio (<= 2)",
                        "B req/s idle", "B req/s flood", "req/s ratio (>= 0.9)", "A req/s",
                        "cores: B idle / B flood / A flood",
                        "cores under flood: rsyslogd / softirq",
                    ],
                    rows,
                )  # fmt: skip

                # The runaway: A's memory limit at its minimum, then held connections.
                probe = Probe(lab)
                put(agent, walls(a, generation, ResourceSpec(memory_max_mb=16)))
                put(agent, walls(b, generation, ResourceSpec()))
                a_proc = HAProxyInstance(instance_paths(agent_dir, a.instance_id), a.namespace)
                b_proc = HAProxyInstance(instance_paths(agent_dir, b.instance_id), b.namespace)
                a_pid, b_pid = a_proc.pid(), b_proc.pid()
                kills_before = oom_kills(agent, a)
                probe.target(url_b)
                since = time.monotonic()
                held = hold_half_requests(a_client, a.vip_address, 2000, 5.0)
                time.sleep(2.0)
                probe.target(None)
                samples = probe.samples(since, url_b)
                failed = sum(1 for s in samples if not s.ok)
                kills = oom_kills(agent, a) - kills_before
                wait_for(lambda: answers(client, url_a), timeout=30)
                print_table(
                    "A runs away (memory_max_mb 16, 2,000 half-sent requests held)",
                    ["figure", "value"],
                    [
                        ["connections A accepted", held],
                        ["OOM kills in A's group", kills],
                        ["A's process replaced", a_proc.pid() != a_pid],
                        ["A serves again", True],
                        ["B's process unchanged", b_proc.pid() == b_pid],
                        ["B probe requests / failed", f"{len(samples)} / {failed}"],
                    ],
                )
                sandbox = sandbox_view(agent, b)
                print(f"B's sandbox: uid {sandbox.get('uid')}, cgroup {sandbox.get('cgroup')} "
                      f"({sandbox.get('cgroup_mode')})")  # fmt: skip
            finally:
                agent.stop()
                for backend in backends:  # a group holding a process cannot be removed
                    backend.close()
                for world in worlds:
                    world.close()
    finally:
        purge(agent_dir)
        shutil.rmtree(agent_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
