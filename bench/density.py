"""Benchmark: how many load balancers one agent host carries, and what each one costs.

Starts N instances through the agent's own API (no API server, no controller): a real
`openha agent` process heartbeating to a stand-in API that wants every instance, on a
lab bridge; each instance is a SINGLE load balancer as the product renders it (one
HTTP listener, a pool with one member, an HTTP health monitor every 5 s), its VIP on
the bridge, its member one of a few fast backends. Then, everything idle, it measures:
- memory per load balancer: PSS from /proc/<pid>/smaps_rollup summed over every
  process in the instance's namespace (shared pages counted once across the host:
  a page shared by k processes counts 1/k in each), RSS for comparison, the agent's own;
- threads and processes per load balancer, keepalived processes (none for SINGLE);
- CPU while idle (HAProxy health checks, the agent's heartbeats and supervision);
- creation rate through the agent API (`--parallel` PUTs at a time);
- an agent restart (SIGTERM, then start) with a probe looping through one load
  balancer: time to the first heartbeat, time until every instance is adopted,
  failed requests, and whether any HAProxy was restarted or reloaded;
- HAProxy restarts: SIGKILL one load balancer's HAProxy, time until a new one serves.

Targets (issue 8): <= 5 MB PSS per idle load balancer, threads that do not grow with
the host's cores, adoption of 1,000 instances in <= 30 s with zero failed requests.
`--count 1000` for the full run (about 24 GiB of RAM is plenty; the bridge takes 1024
ports, so N stays below ~1,015).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import (
    AgentProcess,
    FakeAPI,
    FastBackend,
    Probe,
    _raise_on_sigterm,
    machine_line,
    percentile,
    print_table,
    require_root,
    wait_for,
)

from openha.agent.haproxy import HAProxyInstance
from openha.agent.netns import namespace_pids
from openha.agent.paths import instance_paths, namespace_name
from openha.agent.purge import purge
from openha.domain.spec import (
    HealthMonitorSpec,
    InstanceSpec,
    ListenerSpec,
    LoadBalancerSpec,
    MemberSpec,
    PoolSpec,
    SubnetSpec,
)
from openha.lab import ClientNamespace, Lab
from openha.lab.netlab import _used_networks
from openha.providers.haproxy.instance_spec import haproxy_paths
from openha.render.haproxy import AccessLog, render_haproxy
from openha.settings import Settings

TARGET_PSS_MB = 5.0
TARGET_ADOPTION_S = 30.0
LBS_PER_BACKEND = 250  # keeps each backend's neighbour table small
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pick_subnet(count: int) -> ipaddress.IPv4Network:
    """A free 10.x.y.0/n on this host with room for `count` VIPs and a few namespaces."""
    prefix = 32 - max(8, (count + 64).bit_length())
    used = _used_networks()
    for _ in range(200):
        base = ipaddress.ip_network(f"10.{random.randint(200, 249)}.0.0/16")
        nets = list(base.subnets(new_prefix=prefix))
        net = random.choice(nets)
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free subnet for the lab")


def instance_spec(
    lab: Lab, agent_dir: Path, ip: str, backend: FastBackend, access_log: AccessLog = "all"
) -> InstanceSpec:
    """One SINGLE load balancer as the controller would send it: the product's renderer
    (its access log as the default flavor's unless `access_log` says otherwise)."""
    instance_id = str(uuid.uuid4())
    pool_id, listener_id = str(uuid.uuid4()), str(uuid.uuid4())
    member = MemberSpec(id=str(uuid.uuid4()), address=backend.ip, protocol_port=backend.port)
    monitor = HealthMonitorSpec(
        id=str(uuid.uuid4()), type="HTTP", delay=5, timeout=3, max_retries=3, url_path="/"
    )
    pool = PoolSpec(
        id=pool_id,
        protocol="HTTP",
        lb_algorithm="ROUND_ROBIN",
        members=(member,),
        health_monitor=monitor,
    )
    listener = ListenerSpec(
        id=listener_id, protocol="HTTP", protocol_port=80, default_pool_id=pool_id
    )
    subnet = SubnetSpec(id=str(uuid.uuid4()), cidr=str(lab.network), network_id=str(uuid.uuid4()))
    lb = LoadBalancerSpec(
        id=str(uuid.uuid4()),
        project_id="density",
        generation=1,
        vip_address=ip,
        vip_subnet=subnet,
        listeners=(listener,),
        pools=(pool,),
    )
    settings = Settings()
    config = render_haproxy(
        lb,
        haproxy_paths(instance_paths(agent_dir, instance_id)),
        nbthread=settings.haproxy_nbthread,
        listener_maxconn=settings.haproxy_default_maxconn,
        instance_id=instance_id,
        log_ring_size=settings.log_ring_size,
        access_log=access_log,
    )
    return InstanceSpec(
        instance_id=instance_id,
        load_balancer_id=lb.id,
        project_id=lb.project_id,
        generation=1,
        namespace=namespace_name(instance_id),
        # The VIP is the instance's own address: one address per load balancer.
        interfaces=(lab.interface_spec(ip),),
        vip_address=ip,
        haproxy_config=config,
    )


# --- /proc ------------------------------------------------------------------------------


def rollup(pid: int) -> dict[str, int]:
    """smaps_rollup figures in kB (Pss, Rss, ...); empty if the process is gone."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0])
    return out


def threads(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/task"))
    return 0


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""


def agent_pids(agent: AgentProcess) -> list[int]:
    assert agent.proc is not None
    return [agent.proc.pid]


# --- phases -------------------------------------------------------------------------------


def create(agent: AgentProcess, specs: list[InstanceSpec], parallel: int) -> float:
    def put(spec: InstanceSpec) -> None:
        resp = agent.put(spec)
        if resp.status_code != 200:
            raise RuntimeError(f"{spec.instance_id}: {resp.status_code} {resp.text[:300]}")

    started = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        for n, _ in enumerate(pool.map(put, specs), start=1):
            if n % 100 == 0:
                print(f"  {n} created, {time.monotonic() - started:.0f} s", flush=True)
    return time.monotonic() - started


def memory(specs: list[InstanceSpec], agent: AgentProcess) -> list[list[object]]:
    pss, rss, nthreads, nprocs, keepalived = [], [], [], [], 0
    for spec in specs:
        pids = namespace_pids(spec.namespace)
        keepalived += sum(1 for p in pids if comm(p).startswith("keepalived"))
        figures = [rollup(p) for p in pids]
        pss.append(sum(f.get("Pss", 0) for f in figures) / 1024)
        rss.append(sum(f.get("Rss", 0) for f in figures) / 1024)
        nthreads.append(sum(threads(p) for p in pids))
        nprocs.append(len(pids))
    (agent_pid,) = agent_pids(agent)
    agent_mem = rollup(agent_pid)
    n = len(specs)
    return [
        ["load balancers", n, ""],
        ["PSS per LB, MB (mean / max)", f"{statistics.mean(pss):.2f} / {max(pss):.2f}", "<= 5"],
        ["PSS of all LBs, MB", f"{sum(pss):.0f}", ""],
        ["RSS per LB, MB (mean; shared pages counted in each)", f"{statistics.mean(rss):.2f}", ""],
        [
            "HAProxy processes per LB (mean / max)",
            f"{statistics.mean(nprocs):.2f} / {max(nprocs)}",
            "",
        ],
        ["threads per LB (mean / max)", f"{statistics.mean(nthreads):.2f} / {max(nthreads)}", ""],
        ["keepalived processes (SINGLE)", keepalived, "0"],
        ["agent PSS, MB", f"{agent_mem.get('Pss', 0) / 1024:.1f}", ""],
        ["agent PSS per LB, kB", f"{agent_mem.get('Pss', 0) / n:.0f}", ""],
        ["agent threads", threads(agent_pid), ""],
        ["agent open files", len(os.listdir(f"/proc/{agent_pid}/fd")), ""],
    ]


def idle_cpu(specs: list[InstanceSpec], agent: AgentProcess, seconds: float) -> list[list[object]]:
    haproxy = [p for spec in specs for p in namespace_pids(spec.namespace)]
    (agent_pid,) = agent_pids(agent)
    h0, a0 = cpu_seconds(haproxy), cpu_seconds([agent_pid])
    time.sleep(seconds)
    h1, a1 = cpu_seconds(haproxy), cpu_seconds([agent_pid])
    return [
        [
            f"all HAProxy processes, share of one core ({seconds:.0f} s idle)",
            f"{(h1 - h0) / seconds:.1%}",
        ],
        ["agent, share of one core", f"{(a1 - a0) / seconds:.1%}"],
    ]


def restart_agent(
    agent: AgentProcess, api: FakeAPI, probe: Probe, specs: list[InstanceSpec], url: str
) -> list[list[object]]:
    """SIGTERM the agent and start it again, a probe looping through one load balancer."""
    haproxies = {
        s.instance_id: HAProxyInstance(instance_paths(agent.agent_dir, s.instance_id), s.namespace)
        for s in specs
    }
    before = {i: h.pid() for i, h in haproxies.items()}
    probe.target(url)
    time.sleep(1)
    watch_from = time.monotonic()
    agent.stop()
    time.sleep(1)
    seen = len(api.heartbeats)
    started = time.monotonic()
    agent.spawn(wait=False)
    first_heartbeat = answering = adopted = None
    deadline = started + 300
    while adopted is None and time.monotonic() < deadline:
        now = time.monotonic()
        if first_heartbeat is None and len(api.heartbeats) > seen:
            first_heartbeat = now - started
        if agent.healthy():
            if answering is None:
                answering = time.monotonic() - started
            with agent.client() as client:
                health = client.get("/v1/healthz").json()
            if health["adopting"] == 0 and health["instances"] == len(specs):
                adopted = time.monotonic() - started
        time.sleep(0.02)
    wait_for(lambda: len(api.heartbeats) > seen, timeout=30)
    if first_heartbeat is None:
        first_heartbeat = time.monotonic() - started
    time.sleep(2)
    probe.target(None)
    samples = probe.samples(since=watch_from, url=url)
    failed = [s for s in samples if not s.ok]
    after = {i: h.pid() for i, h in haproxies.items()}
    changed = sum(1 for i in before if before[i] != after[i])
    first = api.heartbeats[seen]
    return [
        ["instances", len(specs), ""],
        ["first heartbeat after start, s", f"{first_heartbeat:.2f}", ""],
        ["instances in the first heartbeat", len(first.instances), len(specs)],
        ["agent API answering after start, s", f"{answering or float('nan'):.2f}", ""],
        ["every instance adopted after start, s", f"{adopted or float('nan'):.2f}", "<= 30"],
        ["probe requests through one LB (stop to adopted + 2 s)", len(samples), ""],
        ["failed requests", len(failed), "0"],
        ["HAProxy processes restarted or reloaded by the adoption", changed, "0"],
    ]


def haproxy_restarts(
    specs: list[InstanceSpec], agent_dir: Path, client: ClientNamespace, samples: int
) -> list[list[object]]:
    """SIGKILL a load balancer's HAProxy; time until a new one answers through its VIP."""
    times = []
    for spec in random.sample(specs, min(samples, len(specs))):
        haproxy = HAProxyInstance(instance_paths(agent_dir, spec.instance_id), spec.namespace)
        url = f"http://{spec.vip_address}/"
        victim = haproxy.pid()
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()

        def back(old: int = victim, h: HAProxyInstance = haproxy, u: str = url) -> bool:
            pid = h.pid()
            return pid is not None and pid != old and answers(client, u)

        wait_for(back, timeout=30, interval=0.01)
        times.append(time.monotonic() - killed)
        time.sleep(0.5)
    return [
        ["samples", len(times)],
        ["SIGKILL -> a new HAProxy serving, p50 ms", f"{percentile(times, 50) * 1000:.0f}"],
        ["max ms", f"{max(times) * 1000:.0f}"],
    ]


def answers(client: ClientNamespace, url: str) -> bool:
    try:
        return client.request(url, timeout=2).status == 200
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100, help="load balancers (default 100)")
    parser.add_argument("--parallel", type=int, default=8, help="PUTs at once while creating")
    parser.add_argument("--idle", type=float, default=10.0, help="idle seconds before measuring")
    parser.add_argument("--kills", type=int, default=5, help="HAProxy SIGKILL samples")
    parser.add_argument(
        "--heartbeat-interval", type=float, help="the agent's (default: the product's)"
    )
    args = parser.parse_args()
    require_root()
    if not 1 <= args.count <= 1015:
        sys.exit("--count must be between 1 and 1015 (a Linux bridge takes 1024 ports)")
    _raise_on_sigterm()
    settings = Settings()
    if args.heartbeat_interval:
        settings.heartbeat_interval = args.heartbeat_interval
    print(f"# density ({machine_line()})\n")
    print(
        f"- {args.count} SINGLE load balancers through the agent API, nbthread "
        f"{settings.haproxy_nbthread}, listener maxconn {settings.haproxy_default_maxconn}, "
        f"agent heartbeat every {settings.heartbeat_interval:g} s\n"
    )
    agent_dir = Path(tempfile.mkdtemp(prefix="ohd-", dir="/tmp"))
    try:
        with Lab(subnet=str(pick_subnet(args.count))) as lab, FakeAPI() as api:
            backends = [
                FastBackend(lab, f"web{i}") for i in range(1 + args.count // LBS_PER_BACKEND)
            ]
            client = ClientNamespace(lab)
            probe = Probe(lab)
            agent = AgentProcess(
                agent_dir,
                api_url=api.url,
                extra_env={
                    "OPENHA_HEARTBEAT_INTERVAL": str(settings.heartbeat_interval),
                    # As in production: the agent raises the neighbour table for its
                    # thousand namespaces (it is left raised afterwards).
                    "OPENHA_AGENT_NEIGHBOUR_TABLE": str(settings.agent_neighbour_table),
                },
            )
            try:
                agent.spawn()
                specs = [
                    instance_spec(lab, agent_dir, lab.allocate_ip(), backends[i % len(backends)])
                    for i in range(args.count)
                ]
                api.wanted = [s.instance_id for s in specs]
                took = create(agent, specs, args.parallel)
                print_table(
                    "Creation through the agent API",
                    ["load balancers", "seconds", "LB/s"],
                    [[args.count, f"{took:.1f}", f"{args.count / took:.1f}"]],
                )
                url = f"http://{specs[0].vip_address}/"
                wait_for(lambda: answers(client, url), timeout=60)
                time.sleep(args.idle)
                print_table("Memory and processes, idle", ["figure", "value", "target"],
                            memory(specs, agent))  # fmt: skip
                print_table("CPU, idle", ["what", "CPU"], idle_cpu(specs, agent, args.idle))
                print_table(
                    "Agent restart (SIGTERM, start) with a probe through one load balancer",
                    ["figure", "value", "target"],
                    restart_agent(agent, api, probe, specs, url),
                )
                print_table(
                    "HAProxy SIGKILLed: until a new one serves",
                    ["figure", "value"],
                    haproxy_restarts(specs, agent_dir, client, args.kills),
                )
            finally:
                agent.stop()
                purge(agent_dir)
    finally:
        shutil.rmtree(agent_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
