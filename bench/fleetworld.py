"""A whole OpenHA as separate processes on a large lab bridge, for bench/scale.py.

Unlike `harness.bench_stack` (API and controller as threads of the benchmark), the
API, each controller and each agent run here as `openha` processes of their own,
as `openha up` runs them, so that each one's CPU can be read from /proc and any of
them can be killed and started again. The agents are the integration tests'
`stack.Agent` (kill_host, revive, stop, start), heartbeating at the product's
default interval and raising the neighbour table as in production.

Also here: the API calls the scenarios share (a VIP subnet on the lab's /20, a
full LB tree, creating many LBs and waiting until they settle, listing through
pagination), per-process CPU, PSS of the data plane, and a member toggle timed as
bench/member_change.py times it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from harness import FastBackend, Probe, _raise_on_sigterm, decorrelate
from stack import Agent, free_port, wait_for

from openha.agent.netns import namespace_pids
from openha.agent.paths import namespace_name
from openha.credentials import create_token
from openha.db import make_engine, make_session_factory, transaction, upgrade
from openha.lab import Lab
from openha.lab.netlab import _used_networks
from openha.settings import Settings

OPENHA = str(Path(sys.executable).parent / "openha")
TICK = os.sysconf("SC_CLK_TCK")
PROJECT = "4444444444444444444444444444444a"
DEFAULTS = Settings()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, not its children); nan if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICK


THREAD_NAMES = str(Path(__file__).resolve().parent / "threadnames")
# The processes import what the benchmark imports (a PYTHONPATH given to it comes along).
PROCESS_PATH = os.pathsep.join(p for p in (THREAD_NAMES, os.environ.get("PYTHONPATH")) if p)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads by name (bench/threadnames names them; a
    trailing `_<n>` of pool workers is dropped, so a pool counts as one)."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")].rstrip("0123456789").rstrip("_")
            fields = stat.rpartition(")")[2].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def processes_cpu(word: str, needle: str) -> float:
    """CPU seconds (utime + stime) of every process whose argv holds `word` and `needle`."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(word.encode() in a for a in argv) and any(needle.encode() in a for a in argv):
            seconds = cpu_seconds(int(entry.name))
            if seconds == seconds:
                total += seconds
    return total


def softnet_drops() -> int:
    """Packets the kernel dropped from full per-CPU input backlogs, all CPUs, since boot."""
    return sum(
        int(line.split()[1], 16) for line in Path("/proc/net/softnet_stat").read_text().splitlines()
    )


def free_slash20() -> str:
    used = _used_networks()
    for second in range(200, 250):
        for third in range(0, 256, 16):
            net = ipaddress.ip_network(f"10.{second}.{third}.0/20")
            if not any(net.overlaps(u) for u in used):
                return str(net)
    raise RuntimeError("no free 10.x.y.0/20 for the lab")


class ControlPlane:
    """`openha api`, `openha controller`s and agents (`stack.Agent`) as processes.

    Quacks like `stack.Stack` where `stack.Agent` needs it (root, sessions, url).
    """

    def __init__(self, lab: Lab, root: Path, database_url: str) -> None:
        self.lab, self.root, self.database_url = lab, root, database_url
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.agents: list[Agent] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        upgrade(database_url)
        self.sessions = make_session_factory(make_engine(database_url))
        with transaction(self.sessions) as s:
            self.admin_token = create_token(s, "admin", ["admin"])
            self.token = create_token(s, PROJECT, ["member"])
        self.admin = self.client(self.admin_token)
        self.tenant = self.client(self.token)

    def _start(self, name: str, *argv: str, env: dict[str, str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [OPENHA, *argv],
            env={
                **os.environ,
                "OPENHA_DATABASE_URL": self.database_url,
                # Die with the benchmark even if it is killed before its teardown runs.
                "OPENHA_PARENT_PID": str(os.getpid()),
                "PYTHONPATH": PROCESS_PATH,
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()  # the child has its own copy

    def start_api(self) -> None:
        self._start(
            "api",
            "api",
            env={"OPENHA_STATE_DIR": str(self.root / "api"), "OPENHA_API_BIND": self.url[7:]},
        )
        wait_for(lambda: _answers(self.url), 60, what="API up")

    def start_controller(self, name: str = "controller") -> None:
        self._start(name, "controller", env={"OPENHA_STATE_DIR": str(self.root / name)})

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def add_agent(self) -> Agent:
        agent = Agent(
            self,  # type: ignore[arg-type]  # has what Agent uses of a Stack
            f"{self.lab.prefix}h{len(self.agents)}",
            env={
                # The product's defaults, not the integration tests' faster ones.
                "OPENHA_HEARTBEAT_INTERVAL": str(DEFAULTS.heartbeat_interval),
                "OPENHA_AGENT_NEIGHBOUR_TABLE": str(DEFAULTS.agent_neighbour_table),
                "PYTHONPATH": PROCESS_PATH,
            },
        )
        self.agents.append(agent)
        agent.start()
        return agent

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-Auth-Token": token}, timeout=120)

    def pids(self, names: list[str]) -> dict[str, int]:
        pids = {n: p.pid for n, p in self.procs.items()}
        for agent in self.agents:
            if agent.proc is not None:
                pids[agent.name] = agent.proc.pid
        return {n: pids[n] for n in names if n in pids}

    def cpu(self, names: list[str]) -> dict[str, float]:
        return {n: cpu_seconds(pid) for n, pid in self.pids(names).items()}

    def close(self) -> None:
        # Controllers first: an agent stopping under a running controller would be failed over.
        for name in [n for n in self.procs if n.startswith("controller")]:
            self.stop(name)
        for agent in self.agents:
            with contextlib.suppress(Exception):
                agent.close()
        self.stop("api")
        self.admin.close()
        self.tenant.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def fleet_world(
    database_url: str | None,
    agents: int = 1,
    controllers: int = 1,
    keep_logs: Path | None = None,
) -> Iterator[tuple[Lab, ControlPlane]]:
    """A /20 lab bridge, the API, `controllers` controllers and `agents` agents; all
    removed on exit (also on failure, Ctrl-C or SIGTERM), but the processes' logs are
    copied to `keep_logs` first when given."""
    _raise_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="ohscale-", dir="/tmp"))
    try:
        with Lab(subnet=free_slash20()) as lab:
            plane = ControlPlane(lab, root, database_url or f"sqlite:///{root / 'openha.db'}")
            try:
                plane.start_api()
                for _ in range(agents):
                    plane.add_agent()
                for n in range(controllers):
                    plane.start_controller("controller" if n == 0 else f"controller{n}")
                yield lab, plane
            finally:
                plane.close()
    finally:
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for log in root.glob("*.log"):
                shutil.copy(log, keep_logs / log.name)
        shutil.rmtree(root, ignore_errors=True)


# --- API ---------------------------------------------------------------------------


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
                # The lab hands out the low addresses to the backends and clients.
                "allocation_pools": [{"start": str(hosts_[256]), "end": str(hosts_[-1])}],
            }
        },
    )
    assert sub.status_code == 201, sub.text
    return str(sub.json()["subnet"]["id"])


def flavor(admin: httpx.Client, name: str, data: str) -> str:
    profile = admin.post(
        "/v2/lbaas/flavorprofiles",
        json={"flavorprofile": {"name": name, "provider_name": "haproxy", "flavor_data": data}},
    )
    assert profile.status_code == 201, profile.text
    made = admin.post(
        "/v2/lbaas/flavors",
        json={"flavor": {"name": name, "flavor_profile_id": profile.json()["flavorprofile"]["id"]}},
    )
    assert made.status_code == 201, made.text
    return str(made.json()["flavor"]["id"])


def tree(
    subnet_id: str, backends: list[FastBackend], members: int, flavor_id: str | None = None
) -> dict[str, Any]:
    """One POST of a whole LB: HTTP listener, pool, `members` members, HTTP monitor."""
    lb: dict[str, Any] = {
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
                            "name": backends[i % len(backends)].name,
                            "address": backends[i % len(backends)].ip,
                            "protocol_port": backends[i % len(backends)].port,
                        }
                        for i in range(members)
                    ],
                    "healthmonitor": {"type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3},
                },
            }
        ],
    }
    if flavor_id:
        lb["flavor_id"] = flavor_id
    return {"loadbalancer": lb}


def list_all(client: httpx.Client, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a collection, following the pagination markers (1,000 a page)."""
    items: list[dict[str, Any]] = []
    marker = None
    while True:
        query = {**params, "limit": 1000, **({"marker": marker} if marker else {})}
        resp = client.get(path, params=query)
        assert resp.status_code == 200, resp.text
        page = resp.json()[key]
        items.extend(page)
        if len(page) < 1000:
            return items
        marker = page[-1]["id"]


def lb_states(tenant: httpx.Client) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for lb in list_all(
        tenant,
        "/v2/lbaas/loadbalancers",
        "loadbalancers",
        fields=["id", "provisioning_status", "operating_status"],
    ):
        state = (lb["provisioning_status"], lb["operating_status"])
        counts[state] = counts.get(state, 0) + 1
    return counts


def wait_settled(
    tenant: httpx.Client,
    timeout: float,
    since: float,
    interval: float = 2.0,
    quiet: bool = False,
) -> float:
    """Wait until every LB is ACTIVE and ONLINE; seconds since `since`."""
    last = [""]

    def settled() -> bool:
        counts = lb_states(tenant)
        line = ", ".join(f"{p}/{o} {n}" for (p, o), n in sorted(counts.items()))
        if not quiet and line != last[0]:
            print(f"  {time.monotonic() - since:6.1f}s {line}", flush=True)
            last[0] = line
        return set(counts) == {("ACTIVE", "ONLINE")}

    wait_for(settled, timeout, interval=interval, what="every LB ACTIVE and ONLINE")
    return time.monotonic() - since


def create_many(
    tenant: httpx.Client,
    body: dict[str, Any] | Callable[[int], dict[str, Any]],
    count: int,
    parallel: int,
    progress: Callable[[int, float], None] | None = None,
) -> list[str]:
    """POST `count` LBs (`body`, or `body(i)` for the i-th), `parallel` at a time; their
    ids in order."""
    start = time.monotonic()

    def one(i: int) -> str:
        for attempt in range(5):
            resp = tenant.post("/v2/lbaas/loadbalancers", json=body(i) if callable(body) else body)
            if resp.status_code == 201:
                return str(resp.json()["loadbalancer"]["id"])
            if resp.status_code < 500 or attempt == 4:
                raise AssertionError(f"create: {resp.status_code} {resp.text[:300]}")
            time.sleep(1)
        raise AssertionError("unreachable")

    ids = []
    with ThreadPoolExecutor(parallel) as pool:
        for n, lb_id in enumerate(pool.map(one, range(count)), start=1):
            ids.append(lb_id)
            if progress is not None:
                progress(n, time.monotonic() - start)
    return ids


def pool_and_members(tenant: httpx.Client, lb_id: str) -> tuple[str, dict[str, str]]:
    lb = tenant.get(f"/v2/lbaas/loadbalancers/{lb_id}").json()["loadbalancer"]
    pool_id = lb["pools"][0]["id"]
    members = tenant.get(f"/v2/lbaas/pools/{pool_id}/members").json()["members"]
    return pool_id, {m["name"]: m["id"] for m in members}


# --- the data plane ---------------------------------------------------------------------


def data_plane_memory(agent: Agent) -> dict[str, float]:
    """PSS and RSS per instance (MB), summed over the processes of its namespace."""

    def rollup(pid: int) -> dict[str, int]:
        out: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
                key, _, rest = line.partition(":")
                out[key] = int(rest.split()[0])
        return out

    pss, rss, procs = [], [], []
    for d in agent.instance_dirs():
        pids = namespace_pids(namespace_name(d.name))
        figures = [rollup(p) for p in pids]
        pss.append(sum(f.get("Pss", 0) for f in figures) / 1024)
        rss.append(sum(f.get("Rss", 0) for f in figures) / 1024)
        procs.append(len(pids))
    if not pss:
        return {}
    agent_pss = rollup(agent.proc.pid).get("Pss", 0) / 1024 if agent.proc else float("nan")
    return {
        "instances": len(pss),
        "pss_mean": statistics.fmean(pss),
        "pss_max": max(pss),
        "rss_mean": statistics.fmean(rss),
        "procs_mean": statistics.fmean(procs),
        "agent_pss": agent_pss,
    }


# --- a member change, timed as bench/member_change.py times it ------------------------


def toggle_visible(
    tenant: httpx.Client,
    probe: Probe,
    url: str,
    lb_id: str,
    pool_id: str,
    member_id: str,
    member_name: str,
    up: bool,
    interval: float,
) -> float:
    """`admin_state_up` of one member → the probe sees it (the member stops answering,
    or answers again); seconds from just before the API call."""
    decorrelate(interval)
    t0 = time.monotonic()
    resp = tenant.put(
        f"/v2/lbaas/pools/{pool_id}/members/{member_id}", json={"member": {"admin_state_up": up}}
    )
    assert resp.status_code == 200, resp.text

    def active() -> bool:
        lb = tenant.get(f"/v2/lbaas/loadbalancers/{lb_id}").json()["loadbalancer"]
        assert lb["provisioning_status"] != "ERROR", lb
        return lb["provisioning_status"] == "ACTIVE"

    wait_for(active, 60, 0.02, what=f"LB {lb_id} ACTIVE")
    if up:
        wait_for(
            lambda: any(s.ok and s.backend == member_name for s in probe.samples(t0, url)),
            30,
            0.01,
            what=f"{member_name} answering",
        )
    time.sleep(0.4)  # a removed member must have stopped answering by now
    oks = [s for s in probe.samples(t0, url) if s.ok]
    if up:
        return min(s.end for s in oks if s.backend == member_name) - t0
    last = max((s.end for s in oks if s.backend == member_name), default=None)
    after = [s.end for s in oks if s.backend != member_name and (last is None or s.start > last)]
    assert after, "no answers after the change"
    return min(after) - t0


def member_change_times(
    tenant: httpx.Client, probe: Probe, url: str, lb_id: str, member_name: str, pairs: int
) -> list[float]:
    """`pairs` disable + enable toggles of one member of `lb_id`, each timed."""
    pool_id, members = pool_and_members(tenant, lb_id)
    member_id = members[member_name]
    times = []
    for _ in range(pairs):
        for up in (False, True):
            times.append(
                toggle_visible(
                    tenant,
                    probe,
                    url,
                    lb_id,
                    pool_id,
                    member_id,
                    member_name,
                    up,
                    DEFAULTS.controller_interval,
                )
            )
    return times


# --- many load balancers probed at once --------------------------------------------------


class MultiProbe:
    """bench/multiprobe.py in a client namespace: a loop per URL, all at once.

    `gaps(since, until)` gives each URL's longest time between two successful
    answers in that window (its client-visible gap, to within the loop interval).
    The probe runs at a real-time priority (SCHED_RR) and writes its records to a
    file this object reads when asked: neither the machine's load nor this
    process's reading can stall it. `lag` and `cpu` say how well it kept up.
    """

    PRIORITY = 20  # SCHED_RR; the kernel keeps 5 % of each second for the rest

    def __init__(
        self, lab: Lab, urls: list[str], interval: float = 0.2, timeout: float = 0.3
    ) -> None:
        import threading

        from harness import tune_client_namespace

        from openha.agent.netns import NamespaceExec

        self.urls = urls
        self.interval = interval
        self.namespace = lab.add_namespace("mprobe", lab.allocate_ip())
        tune_client_namespace(self.namespace)
        self._dir = Path(tempfile.mkdtemp(prefix="ohmp-"))
        urls_file = self._dir / "urls.txt"
        urls_file.write_text("\n".join(urls) + "\n")
        self._out = self._dir / "records.txt"
        self._out.touch()
        self._offset = 0
        self._partial = ""
        self._ok: list[list[float]] = [[] for _ in urls]
        self._failed: list[list[float]] = [[] for _ in urls]
        self._lags: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        script = Path(__file__).resolve().parent / "multiprobe.py"
        cmd = [sys.executable, str(script), str(urls_file), "--out", str(self._out),
               "--interval", str(interval), "--timeout", str(timeout)]  # fmt: skip
        with NamespaceExec(self.namespace) as nsexec:

            def preexec() -> None:
                nsexec()
                os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(self.PRIORITY))

            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, preexec_fn=preexec)
        lab.on_close(self)

    def _read(self) -> None:
        """Take in what the probe wrote since the last read (whole lines only)."""
        with self._lock:
            with self._out.open() as f:
                f.seek(self._offset)
                chunk = f.read()
                self._offset = f.tell()
            text = self._partial + chunk
            lines = text.split("\n")
            self._partial = lines.pop()
            for line in lines:
                with contextlib.suppress(ValueError, IndexError):
                    fields = line.split()
                    if fields[0] == "lag":
                        self._lags.append((float(fields[1]), float(fields[2])))
                        continue
                    i, ok, _start, end = fields
                    (self._ok if ok == "1" else self._failed)[int(i)].append(float(end))

    def answering(self, since: float) -> int:
        """How many URLs answered successfully after `since`."""
        self._read()
        with self._lock:
            return sum(1 for oks in self._ok if oks and oks[-1] > since)

    def lag(self, since: float, until: float) -> float:
        """The longest the probe's own event loop overslept in [since, until]."""
        self._read()
        with self._lock:
            return max((lag for t, lag in self._lags if since <= t <= until), default=0.0)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def gaps(self, since: float, until: float) -> tuple[list[float], int]:
        """Each URL's longest gap between successes in [since, until]; failed requests."""
        time.sleep(1.0)  # the probe flushes every 0.25 s
        self._read()
        out, failed = [], 0
        with self._lock:
            for oks, fails in zip(self._ok, self._failed, strict=True):
                window = [t for t in oks if since <= t <= until]
                failed += sum(1 for t in fails if since <= t <= until)
                if not window:
                    out.append(until - since)
                    continue
                points = [since, *window, until]
                out.append(max(b - a for a, b in itertools.pairwise(points)))
        return out, failed

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        with contextlib.suppress(Exception):
            self.proc.stdin.close()  # type: ignore[union-attr]
        shutil.rmtree(self._dir, ignore_errors=True)
