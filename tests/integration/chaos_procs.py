"""The chaos run's processes and lab: API, controller and agents as separate processes.

`world()` builds a lab (bridge, three backends, a client namespace) and a `ProcStack`:
`openha api`, `openha controller` and N `openha agent` processes on one SQLite file,
plus a network, a subnet and (for pairs) an ACTIVE_STANDBY flavor; everything is removed
afterwards, even on failure, and any process still naming the run's directory is killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from stack import PROJECT, Agent, free_port, processes_naming, wait_for

from openha.credentials import create_token
from openha.db import make_engine, make_session_factory, transaction, upgrade
from openha.lab import BackendServer, ClientNamespace, Lab

HOST_DOWN_AFTER = 3.0


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


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
def world(agents: int, pairs: bool) -> Iterator[World]:
    """Lab, backends, client and the process stack; all removed afterwards, even on failure."""
    root = Path(tempfile.mkdtemp(prefix="ohchaos-", dir="/tmp"))
    # Traversable (not listable) for keepalived's unprivileged script user.
    root.chmod(0o711)
    with Lab() as lab:
        stack = ProcStack(lab, root)
        try:
            backends = [BackendServer(lab, f"web{i}") for i in (1, 2, 3)]
            client = ClientNamespace(lab, "c1")
            stack.start(agents)
            flavor = pair_flavor(stack) if pairs and agents >= 2 else None
            yield World(lab, stack, client, backends, network(stack, lab), flavor)
        finally:
            stack.close()
            leftovers = processes_naming(root)
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(root, ignore_errors=True)
