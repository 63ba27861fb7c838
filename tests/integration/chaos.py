"""Fault injection: random SIGKILLs of every OpenHA process under a random workload, then proof
that everything converged and that every running HAProxy runs exactly what the database says.

`run_chaos` builds a lab (bridge, backends, a client namespace), then runs the API, the
controller and N agents as separate real processes (`openha api`, `openha controller`,
`openha agent`), restarted by a small supervisor (this module's main thread) after random
delays. A workload thread drives random creates, updates and deletes through the tenant
API while the chaos kills, at random moments, the API, the controller, an agent, an
agent armed with a named crash point (`openha.agent.faults`), one HAProxy or one
keepalived. Then the chaos stops and the checks run:

- every load balancer (and every child object) reaches ACTIVE, none stays PENDING_*;
- the instances the database knows are exactly those the agents' directories hold, each
  in its namespace, with its HAProxy (and, for a pair, keepalived) running;
- for every running HAProxy, its runtime state (`show servers state`, `show stat` over the
  stats socket) equals the desired state read from the API: frontends, backends, servers,
  addresses, ports, weights, MAINT versus READY;
- traffic through each listener from the client namespace answers 200 when its pool has
  a member that may serve, else 503;
- after deleting everything: no instance directory, namespace, veth or process left.

The run prints its seed; `OPENHA_CHAOS_SEED` (or `--seed`) replays the same choices (the
timing of a loaded machine, of course, does not replay). `make soak` runs it for minutes
with ACTIVE_STANDBY pairs; `make test` runs a short version (test_chaos.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pyroute2 import netns
from stack import PROJECT, Agent, free_port, wait_for

from openha.agent import faults
from openha.agent.haproxy import children_of, cli_command, pid_alive
from openha.agent.netns import namespace_exists, namespace_pids, owned_host_links
from openha.agent.paths import instance_paths, namespace_name
from openha.credentials import create_token
from openha.db import make_engine, make_session_factory, transaction, upgrade
from openha.lab import BackendServer, ClientNamespace, Lab

SEED_ENV = "OPENHA_CHAOS_SEED"
HOST_DOWN_AFTER = 3.0
LISTENER_PORTS = range(81, 86)
ALGORITHMS = ("ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP")
# srv_admin_state bits that mean maintenance (HAProxy's SRV_ADMF_MAINT): forced, inherited,
# resolution. Not 0x04 (CMAINT): it only remembers that the config said `disabled`, and
# stays set after `set server … state ready` while the server serves.
MAINT_BITS = 0x01 | 0x02 | 0x20


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Options:
    seed: int
    duration: float  # seconds of chaos
    agents: int = 2
    max_lbs: int = 4
    pairs: bool = True  # ACTIVE_STANDBY load balancers in the workload (needs 2+ agents)
    kill_every: tuple[float, float] = (1.0, 4.0)  # seconds between kills
    converge_timeout: float = 120.0
    api_gap: float = 10.0  # seconds the API serves, at least, before it is killed again


def seed_from_env() -> int:
    value = os.environ.get(SEED_ENV)
    return int(value) if value else random.SystemRandom().randrange(1, 2**31)


# --- processes --------------------------------------------------------------------------


class Service:
    """`openha api` or `openha controller` as its own process, with its own log file."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name, self.env = name, env
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> subprocess.Popen[bytes]:
        openha = Path(sys.executable).parent / "openha"
        self.proc = subprocess.Popen(
            [str(openha), self.name],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.proc

    def close(self) -> None:
        stop_process(self.proc)
        self.proc = None
        self.log.close()


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class ProcStack:
    """API, controller and agents as separate processes on one SQLite file.

    Duck-types what `stack.Agent` needs of a `stack.Stack` (root, sessions, url, lab),
    so the agents are the same as in the other full-stack tests.
    """

    def __init__(self, lab: Lab, root: Path) -> None:
        self.lab, self.root = lab, root
        self.database_url = f"sqlite:///{root / 'openha.db'}"
        upgrade(self.database_url)
        self.engine = make_engine(self.database_url)
        self.sessions = make_session_factory(self.engine)
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "OPENHA_STATE_DIR": str(root / "api"),
            "OPENHA_DATABASE_URL": self.database_url,
            "OPENHA_API_BIND": self.url.removeprefix("http://"),
            "OPENHA_DEFAULT_PROVIDER": "haproxy",
            "OPENHA_CONTROLLER_INTERVAL": "0.1",
            "OPENHA_OBSERVE_INTERVAL": "0.3",
            "OPENHA_HOST_DOWN_AFTER": str(HOST_DOWN_AFTER),
            "OPENHA_HEARTBEAT_INTERVAL": "0.5",
            "OPENHA_PARENT_PID": str(os.getpid()),
        }
        env.pop("OPENHA_CONFIG", None)
        self.api = Service("api", env, root / "api.log")
        self.controller = Service("controller", env, root / "controller.log")
        self.agents: list[Agent] = []
        with transaction(self.sessions) as s:
            admin_token = create_token(s, "admin", ["admin"])
            token = create_token(s, PROJECT, ["member"])
        self.admin = httpx.Client(
            base_url=self.url, headers={"X-Auth-Token": admin_token}, timeout=20
        )
        self.tenant = httpx.Client(base_url=self.url, headers={"X-Auth-Token": token}, timeout=20)

    def start(self, agents: int) -> None:
        """Start everything at once (imports alone take seconds on a loaded machine)."""
        self.api.spawn()
        self.controller.spawn()
        for i in range(agents):
            agent = Agent(self, f"{self.lab.prefix}h{i}")  # type: ignore[arg-type]
            self.agents.append(agent)
            agent.spawn()
        wait_for(self.api_up, 60, 0.2, "API up")
        for agent in self.agents:
            wait_for(lambda a=agent: a.host_status() == "UP", 60, 0.2, f"{agent.name} up")
        log(f"API, controller and {agents} agents up")

    def api_up(self) -> bool:
        try:
            return self.admin.get("/", timeout=2).status_code < 500
        except httpx.TransportError:
            return False

    def close(self) -> None:
        for agent in self.agents:
            with contextlib.suppress(Exception):
                agent.close()
        self.controller.close()
        self.api.close()
        self.admin.close()
        self.tenant.close()
        self.engine.dispose()


# --- the workload ------------------------------------------------------------------------


class Gone(Exception):
    """What the workload was about to change no longer exists."""


class Workload:
    """Random creates, updates and deletes through the tenant API, until stopped.

    It keeps no model of its own: every step reads what exists and picks from it, so a
    request whose answer was lost (the API killed mid-call) costs nothing. A 409 (the
    load balancer is busy) or a transport error (the API is down) is expected under
    chaos; a 5xx is recorded and fails the run.
    """

    def __init__(
        self,
        stack: ProcStack,
        rnd: random.Random,
        backends: list[BackendServer],
        max_lbs: int,
        flavor_id: str | None,
        subnet_id: str,
    ) -> None:
        self.stack, self.rnd, self.backends = stack, rnd, backends
        self.max_lbs, self.flavor_id, self.subnet_id = max_lbs, flavor_id, subnet_id
        self.api = httpx.Client(base_url=stack.url, headers=dict(stack.tenant.headers), timeout=10)
        self.outcomes: Counter[str] = Counter()
        self.server_errors: list[str] = []
        self.refused: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="workload", daemon=True)
        self.error: BaseException | None = None
        self.created = 0

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)
        self.api.close()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self.step()
                except httpx.TransportError as exc:
                    self.outcomes[f"transport error ({type(exc).__name__})"] += 1
                    self.stop.wait(0.3)
                except Gone:
                    # An object vanished between two reads (deleted meanwhile): nothing to do.
                    self.outcomes["vanished"] += 1
                self.stop.wait(self.rnd.uniform(0.05, 0.4))
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    # --- HTTP ---

    def call(self, op: str, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        resp = self.api.request(method, f"/v2/lbaas/{path}", json=body, **kw)
        self.outcomes[f"{op} {resp.status_code}"] += 1
        if resp.status_code >= 500:
            self.server_errors.append(f"{op}: {method} {path} -> {resp.status_code} {resp.text}")
        elif resp.status_code >= 400 and resp.status_code not in (404, 409):
            # The workload only sends valid requests: anything else is its bug or the API's.
            self.refused.append(f"{op}: {method} {path} {body} -> {resp.status_code} {resp.text}")
        return resp.json() if resp.status_code < 300 and resp.content else None

    def get(self, path: str) -> Any:
        resp = self.api.get(f"/v2/lbaas/{path}")
        if resp.status_code == 404:
            raise Gone(path)
        if resp.status_code >= 500:
            self.server_errors.append(f"GET {path} -> {resp.status_code} {resp.text}")
            raise Gone(path)
        resp.raise_for_status()
        return resp.json()

    # --- steps ---

    def step(self) -> None:
        lbs = self.get("loadbalancers")["loadbalancers"]
        roll = self.rnd.random()
        if not lbs or (len(lbs) < self.max_lbs and roll < 0.2):
            self.create_lb()
            return
        lb = self.rnd.choice(lbs)
        if 0.2 <= roll < 0.25:
            self.call(
                "delete lb", "DELETE", f"loadbalancers/{lb['id']}", params={"cascade": "true"}
            )
            return
        tree = self.get(f"loadbalancers/{lb['id']}")["loadbalancer"]
        pools = [p["id"] for p in tree["pools"]]
        listeners = [li["id"] for li in tree["listeners"]]
        choices: list[tuple[float, Callable[[], None]]] = [
            (2, lambda: self.add_listener(lb["id"], listeners)),
            (1, lambda: self.delete_listener(listeners)),
            (1, lambda: self.update_listener(listeners)),
            (1.5, lambda: self.add_pool(lb["id"], listeners)),
            (0.5, lambda: self.delete_pool(pools)),
            (1, lambda: self.update_pool(pools)),
            (1, lambda: self.toggle_monitor(pools)),
            (5, lambda: self.toggle_member(pools)),
            (3, lambda: self.weigh_member(pools)),
            (2, lambda: self.add_member(pools)),
            (2, lambda: self.delete_member(pools)),
            (1, lambda: self.batch_members(pools)),
        ]
        weights = [w for w, _ in choices]
        self.rnd.choices([c for _, c in choices], weights)[0]()

    def member_body(self, backend: BackendServer) -> dict[str, Any]:
        return {
            "address": backend.ip,
            "protocol_port": backend.port,
            "weight": self.rnd.choice([0, 1, 1, 3, 10]),
            "admin_state_up": self.rnd.random() < 0.8,
        }

    def pool_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": "pool",  # a fully populated create wants it named
            "protocol": "HTTP",
            "lb_algorithm": self.rnd.choice(ALGORITHMS),
            "members": [
                self.member_body(b)
                for b in self.rnd.sample(self.backends, self.rnd.randint(1, len(self.backends)))
            ],
        }
        if self.rnd.random() < 0.5:
            body["healthmonitor"] = monitor_body()
        return body

    def create_lb(self) -> None:
        body: dict[str, Any] = {
            "vip_subnet_id": self.subnet_id,
            "name": f"chaos{self.created}",
            "listeners": [
                {"protocol": "HTTP", "protocol_port": 80, "default_pool": self.pool_body()}
            ],
        }
        if self.flavor_id is not None and self.rnd.random() < 0.4:
            body["flavor_id"] = self.flavor_id
        self.created += 1
        self.call("create lb", "POST", "loadbalancers", {"loadbalancer": body})

    def add_listener(self, lb_id: str, listeners: list[str]) -> None:
        used = {self.get(f"listeners/{li}")["listener"]["protocol_port"] for li in listeners}
        free = [p for p in LISTENER_PORTS if p not in used]
        if not free:
            return
        body = {
            "loadbalancer_id": lb_id,
            "protocol": "HTTP",
            "protocol_port": self.rnd.choice(free),
        }
        self.call("add listener", "POST", "listeners", {"listener": body})

    def delete_listener(self, listeners: list[str]) -> None:
        if len(listeners) > 1:  # keep port 80 mostly
            self.call("delete listener", "DELETE", f"listeners/{self.rnd.choice(listeners[1:])}")

    def update_listener(self, listeners: list[str]) -> None:
        if not listeners:
            return
        body: dict[str, Any] = {"connection_limit": self.rnd.choice([-1, 100, 5000])}
        if self.rnd.random() < 0.3:
            body["admin_state_up"] = self.rnd.random() < 0.6
        self.call(
            "update listener", "PUT", f"listeners/{self.rnd.choice(listeners)}", {"listener": body}
        )

    def add_pool(self, lb_id: str, listeners: list[str]) -> None:
        bare = [
            li for li in listeners if not self.get(f"listeners/{li}")["listener"]["default_pool_id"]
        ]
        if not bare:
            return
        body = self.pool_body()
        body.pop("members")
        body.pop("healthmonitor", None)
        body["listener_id"] = self.rnd.choice(bare)
        self.call("add pool", "POST", "pools", {"pool": body})

    def delete_pool(self, pools: list[str]) -> None:
        if pools:
            self.call("delete pool", "DELETE", f"pools/{self.rnd.choice(pools)}")

    def update_pool(self, pools: list[str]) -> None:
        if pools:
            body = {"lb_algorithm": self.rnd.choice(ALGORITHMS)}
            self.call("update pool", "PUT", f"pools/{self.rnd.choice(pools)}", {"pool": body})

    def toggle_monitor(self, pools: list[str]) -> None:
        if not pools:
            return
        pool = self.get(f"pools/{self.rnd.choice(pools)}")["pool"]
        if pool.get("healthmonitor_id"):  # Octavia leaves the key out when there is none
            self.call("delete monitor", "DELETE", f"healthmonitors/{pool['healthmonitor_id']}")
        else:
            body = {"pool_id": pool["id"], **monitor_body()}
            self.call("add monitor", "POST", "healthmonitors", {"healthmonitor": body})

    def members(self, pool_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"pools/{pool_id}/members")["members"])

    def toggle_member(self, pools: list[str]) -> None:
        if not pools:
            return
        pool_id = self.rnd.choice(pools)
        members = self.members(pool_id)
        if members:
            m = self.rnd.choice(members)
            body = {"admin_state_up": not m["admin_state_up"]}
            self.call(
                "toggle member", "PUT", f"pools/{pool_id}/members/{m['id']}", {"member": body}
            )

    def weigh_member(self, pools: list[str]) -> None:
        if not pools:
            return
        pool_id = self.rnd.choice(pools)
        members = self.members(pool_id)
        if members:
            m = self.rnd.choice(members)
            body = {"weight": self.rnd.choice([0, 1, 2, 5, 50])}
            self.call("weigh member", "PUT", f"pools/{pool_id}/members/{m['id']}", {"member": body})

    def add_member(self, pools: list[str]) -> None:
        if not pools:
            return
        pool_id = self.rnd.choice(pools)
        used = {(m["address"], m["protocol_port"]) for m in self.members(pool_id)}
        free = [b for b in self.backends if (b.ip, b.port) not in used]
        if free:
            body = self.member_body(self.rnd.choice(free))
            self.call("add member", "POST", f"pools/{pool_id}/members", {"member": body})

    def delete_member(self, pools: list[str]) -> None:
        if not pools:
            return
        pool_id = self.rnd.choice(pools)
        members = self.members(pool_id)
        if members:
            m = self.rnd.choice(members)
            self.call("delete member", "DELETE", f"pools/{pool_id}/members/{m['id']}")

    def batch_members(self, pools: list[str]) -> None:
        if not pools:
            return
        chosen = self.rnd.sample(self.backends, self.rnd.randint(0, len(self.backends)))
        body = {"members": [self.member_body(b) for b in chosen]}
        self.call("batch members", "PUT", f"pools/{self.rnd.choice(pools)}/members", body)


def monitor_body() -> dict[str, Any]:
    return {
        "type": "HTTP",
        "delay": 1,
        "timeout": 1,
        "max_retries": 1,
        "max_retries_down": 1,
        "url_path": "/",
    }


# --- the chaos ---------------------------------------------------------------------------


@dataclass
class Pending:
    """A killed process waiting for its supervisor's restart."""

    at: float
    start: Callable[[], None]


@dataclass
class Chaos:
    """Kills processes at random moments; restarts them as a supervisor would."""

    stack: ProcStack
    rnd: random.Random
    opts: Options
    kills: Counter[str] = field(default_factory=Counter)
    pending: dict[str, Pending] = field(default_factory=dict)
    armed: dict[str, str] = field(default_factory=dict)  # agent name -> crash point
    api_serving_since: float | None = None

    def supervise(self) -> None:
        """Restart what died (after a random delay, as `openha up` or systemd would)."""
        now = time.monotonic()
        for name, svc in (("api", self.stack.api), ("controller", self.stack.controller)):
            if svc.proc is not None and svc.proc.poll() is not None and name not in self.pending:
                self.pending[name] = Pending(now + self.delay(), svc.spawn)
        for agent in self.stack.agents:
            proc = agent.proc
            if proc is not None and proc.poll() is not None and agent.name not in self.pending:
                if agent.name in self.armed:
                    self.kills[f"crash point {self.armed.pop(agent.name)} (reached)"] += 1
                self.pending[agent.name] = Pending(now + self.delay(), agent.spawn)
        for name, todo in list(self.pending.items()):
            if now >= todo.at:
                del self.pending[name]
                todo.start()

    def delay(self) -> float:
        # Mostly quick restarts; sometimes longer than host_down_after (a host "dies").
        if self.rnd.random() < 0.1:
            return self.rnd.uniform(HOST_DOWN_AFTER + 0.5, HOST_DOWN_AFTER + 3)
        return self.rnd.uniform(0.1, 1.5)

    # What the chaos kills, and how often relative to each other.
    VICTIMS = (
        ("api", 2.0),
        ("controller", 2.0),
        ("agent", 2.0),
        ("crash point", 2.0),
        ("haproxy", 2.0),
        ("keepalived", 1.0),
        ("host reboot", 0.5),
    )

    def strike(self) -> None:
        kind = self.rnd.choices([k for k, _ in self.VICTIMS], [w for _, w in self.VICTIMS])[0]
        now = time.monotonic()
        if self.api_serving_since is None and self.stack.api_up():
            self.api_serving_since = now
        if kind == "api":
            # Only an API that has served a while: a restart takes seconds on a loaded
            # machine, and a workload that never reaches the API would test nothing else.
            since = self.api_serving_since
            if since is not None and now - since > self.opts.api_gap and kill(self.stack.api.proc):
                self.kills[kind] += 1
                self.api_serving_since = None
        elif kind == "controller":
            if kill(self.stack.controller.proc):
                self.kills[kind] += 1
        elif kind == "agent":
            if kill(self.rnd.choice(self.stack.agents).proc):
                self.kills[kind] += 1
        elif kind == "crash point":
            self.arm(self.rnd.choice(self.stack.agents))
        elif kind == "host reboot":
            self.reboot(self.rnd.choice(self.stack.agents))
        else:
            self.kill_data_plane(kind)

    def reboot(self, agent: Agent) -> None:
        """The host dies (agent, HAProxy, keepalived at once, links down) and boots again
        later: namespaces are gone, the agent's directory is not."""
        if agent.name in self.pending or agent.proc is None or agent.proc.poll() is not None:
            return
        self.armed.pop(agent.name, None)
        agent.kill_host()
        self.kills["host reboot"] += 1

        def boot() -> None:
            for d in agent.instance_dirs():
                with contextlib.suppress(Exception):
                    netns.remove(namespace_name(d.name))
            agent.spawn()

        self.pending[agent.name] = Pending(time.monotonic() + self.delay(), boot)

    def arm(self, agent: Agent) -> None:
        """Kill the agent and restart it at once with a crash point armed."""
        if agent.name in self.pending or agent.name in self.armed:
            return
        if not kill(agent.proc):
            return
        point = self.rnd.choice(sorted(faults.POINTS))
        self.armed[agent.name] = point
        self.kills[f"crash point {point} (armed)"] += 1
        agent.spawn(crash_at=point)

    def disarm(self) -> None:
        """The chaos is over: agents still armed restart without their crash point."""
        for agent in self.stack.agents:
            if self.armed.pop(agent.name, None) is not None and kill(agent.proc):
                agent.spawn()

    def kill_data_plane(self, kind: str) -> None:
        pid_file = "haproxy.pid" if kind == "haproxy" else "keepalived.pid"
        candidates = [
            d / pid_file
            for agent in self.stack.agents
            for d in agent.instance_dirs()
            if (d / pid_file).exists()
        ]
        if not candidates:
            return
        try:
            pid = int(self.rnd.choice(candidates).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        if not pid_alive(pid):
            return
        for victim in [pid, *children_of(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        self.kills[kind] += 1

    def all_running(self) -> bool:
        procs = [self.stack.api.proc, self.stack.controller.proc] + [
            a.proc for a in self.stack.agents
        ]
        return all(p is not None and p.poll() is None for p in procs)


def kill(proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is None or proc.poll() is not None:
        return False
    proc.kill()
    proc.wait(5)
    return True


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


# --- the run ------------------------------------------------------------------------------


@dataclass
class World:
    lab: Lab
    stack: ProcStack
    client: ClientNamespace
    backends: list[BackendServer]
    subnet_id: str
    flavor_id: str | None
    seen_instances: set[str] = field(default_factory=set)


def network(stack: ProcStack, lab: Lab) -> str:
    net = stack.admin.post(
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
    sub = stack.admin.post(
        "/v2.0/subnets",
        json={
            "subnet": {
                "network_id": net.json()["network"]["id"],
                "cidr": str(lab.network),
                "ip_version": 4,
                "gateway_ip": lab.host_ip,
                "allocation_pools": [{"start": str(hosts_[100]), "end": str(hosts_[200])}],
            }
        },
    )
    assert sub.status_code == 201, sub.text
    return str(sub.json()["subnet"]["id"])


def pair_flavor(stack: ProcStack) -> str:
    profile = stack.admin.post(
        "/v2/lbaas/flavorprofiles",
        json={
            "flavorprofile": {
                "name": "pair",
                "provider_name": "haproxy",
                "flavor_data": '{"loadbalancer_topology": "ACTIVE_STANDBY"}',
            }
        },
    )
    assert profile.status_code == 201, profile.text
    flavor = stack.admin.post(
        "/v2/lbaas/flavors",
        json={
            "flavor": {"name": "pair", "flavor_profile_id": profile.json()["flavorprofile"]["id"]}
        },
    )
    assert flavor.status_code == 201, flavor.text
    return str(flavor.json()["flavor"]["id"])


@contextlib.contextmanager
def world(opts: Options) -> Iterator[World]:
    """Lab, backends, client and the process stack; all removed afterwards, even on failure."""
    root = Path(tempfile.mkdtemp(prefix="ohchaos-", dir="/tmp"))
    with Lab() as lab:
        stack = ProcStack(lab, root)
        try:
            backends = [BackendServer(lab, f"web{i}") for i in (1, 2, 3)]
            client = ClientNamespace(lab, "c1")
            stack.start(opts.agents)
            flavor = pair_flavor(stack) if opts.pairs and opts.agents >= 2 else None
            yield World(lab, stack, client, backends, network(stack, lab), flavor)
        finally:
            stack.close()
            leftovers = our_processes(root)
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(root, ignore_errors=True)


def our_processes(root: Path) -> list[int]:
    """Processes whose command line names a path under `root` (HAProxy, keepalived, agents)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in cmd:
            pids.append(int(entry.name))
    return pids


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
    agent_pids = {a.proc.pid for a in w.stack.agents if a.proc is not None}
    for pid in our_processes(w.stack.root):
        if pid not in agent_pids:
            problems.append(f"process {pid} left: {Path(f'/proc/{pid}/cmdline').read_bytes()!r}")
    return problems


def run_chaos(opts: Options) -> dict[str, Any]:
    """The whole run; raises AssertionError on any failed check. Returns what happened."""
    log(
        f"seed {opts.seed} ({SEED_ENV}={opts.seed} replays it), {opts.duration:.0f}s of chaos, "
        f"{opts.agents} agents, up to {opts.max_lbs} LBs, pairs={opts.pairs}"
    )
    rnd = random.Random(opts.seed)
    with world(opts) as w:
        log(f"stack up in {w.stack.root}")
        workload = Workload(
            w.stack, random.Random(rnd.random()), w.backends, opts.max_lbs, w.flavor_id, w.subnet_id
        )
        chaos = Chaos(w.stack, random.Random(rnd.random()), opts)
        for _ in range(max(1, opts.max_lbs // 2)):  # something to change and kill from the start
            workload.create_lb()
        workload.start()
        started = time.monotonic()
        next_kill = started + rnd.uniform(*opts.kill_every)
        next_report = started + 60
        try:
            while time.monotonic() - started < opts.duration:
                chaos.supervise()
                if time.monotonic() >= next_kill:
                    w.seen_instances |= {d.name for a in w.stack.agents for d in a.instance_dirs()}
                    chaos.strike()
                    next_kill = time.monotonic() + rnd.uniform(*opts.kill_every)
                if workload.error is not None:
                    break
                if time.monotonic() >= next_report:
                    n = sum(workload.outcomes.values())
                    elapsed = time.monotonic() - started
                    log(f"{elapsed:.0f}s: {n} requests, kills {dict(chaos.kills)}")
                    next_report += 60
                time.sleep(0.05)
        finally:
            workload.finish()
        log(f"chaos over: kills {dict(chaos.kills)}")
        log(f"workload: {dict(sorted(workload.outcomes.items()))}")
        chaos.disarm()
        wait_for(
            lambda: (chaos.supervise(), chaos.all_running() and w.stack.api_up())[1],
            60,
            0.1,
            "every process running again",
        )
        assert workload.server_errors == [], "5xx answers:\n" + "\n".join(workload.server_errors)
        assert workload.refused == [], "valid requests refused:\n" + "\n".join(workload.refused)
        t0 = time.monotonic()
        eventually(lambda: settled(w), opts.converge_timeout, "convergence")
        eventually(lambda: pairs_whole(w), 30, "whole pairs")
        log(f"converged {time.monotonic() - t0:.1f}s after the chaos")
        events = w.stack.admin.get("/v2/manage/events", params={"limit": 1000}).json()["events"]
        log(f"events: {dict(Counter(e['kind'] for e in events))}")
        # At once: a load balancer reads ACTIVE only once what it wants is applied.
        eventually(lambda: check_loaded(w), 0, "loaded state = desired state")
        if not checker_sees_a_difference(w):
            log("no server ready anywhere: the comparison's self-check was skipped")
        eventually(lambda: check_traffic(w), 20, "traffic as desired")
        eventually(lambda: check_member_status(w), 20, "member statuses from HAProxy")
        n_lbs = len(w.stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"])
        n_insts = len(instances(w))
        log(f"{n_lbs} LBs, {n_insts} instances: loaded state, traffic and statuses as desired")
        for lb in w.stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]:
            resp = w.stack.tenant.delete(
                f"/v2/lbaas/loadbalancers/{lb['id']}", params={"cascade": "true"}
            )
            assert resp.status_code in (204, 404), resp.text
        eventually(
            lambda: [
                lb["id"]
                for lb in w.stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]
            ],
            60,
            "every LB deleted",
        )
        eventually(lambda: check_nothing_left(w), 30, "nothing left")
        log(f"all deleted, nothing left ({len(w.seen_instances)} instances seen)")
        return {"kills": chaos.kills, "outcomes": workload.outcomes, "lbs": n_lbs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of chaos")
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--max-lbs", type=int, default=6)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else seed_from_env()

    main_pid = os.getpid()

    def interrupted(signum: int, _frame: object) -> None:
        if os.getpid() != main_pid:
            # A fork without exec (pyroute2's netns helper) inherits this handler: it must
            # die as SIGTERM would have it, never run our cleanup (it removed the run's
            # directory under our feet).
            os._exit(128 + signum)
        raise KeyboardInterrupt(signal.Signals(signum).name)  # clean up as after a failure

    # A background job ignores SIGINT: SIGTERM must clean up too.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    run_chaos(Options(seed=seed, duration=args.duration, agents=args.agents, max_lbs=args.max_lbs))


if __name__ == "__main__":
    main()
