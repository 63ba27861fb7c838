"""`openha demo`: a load balancer you can curl from this machine, in one command.

Against a running OpenHA (`openha up`), as root, `run_demo` builds:

* a demo bridge with a free 10.x.y.0/24, the host holding `.1` on it (so the host
  itself reaches every address on it), registered as an admin network + subnet;
* three small web servers (`openha.lab.backend`), each in its own namespace on
  the bridge, started as detached processes so they outlive the command;
* a load balancer on that subnet: HTTP listener on port 80, ROUND_ROBIN pool of
  the three servers, HTTP health monitor;

waits for ACTIVE/ONLINE, checks from the host that the VIP answers from every
server, and prints the `curl` command and the status tree. Everything made is
recorded in `<state_dir>/demo.json` step by step (so even a demo that failed half
way can be cleaned), and `clean_demo` (`openha demo --clean`) removes exactly that:
the LB (cascade delete through the API, waiting until it is gone), the network and
subnet, the server processes, namespaces and the bridge. A second `openha demo`
finds the record and says the demo exists instead of building another.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.tree import Tree

from openha.agent.netns import NamespaceExec
from openha.domain import constants as c
from openha.lab import Lab, cleanup_stale

DEMO_FILE = "demo.json"
LOG_DIR = "demo-logs"
DEFAULT_PREFIX = "ohdemo"  # bridge ohdemobr, namespaces ohdemo-web1.., veths ohdemov0..
SERVERS = ("web1", "web2", "web3")
SERVER_PORT = 8080
BACKEND_MODULE = "openha.lab.backend"
READY_TIMEOUT = 120.0  # LB creation to ACTIVE/ONLINE; the first HAProxy start is the slow part
DELETE_TIMEOUT = 60.0


class DemoError(Exception):
    """The demo cannot be made or removed; the message says why and what to do."""


@dataclass
class DemoServer:
    name: str
    namespace: str
    ip: str
    port: int
    pid: int | None = None


@dataclass
class DemoRecord:
    """What the demo made, saved to `demo.json` after every step."""

    prefix: str
    api_url: str
    created_at: float = field(default_factory=time.time)
    bridge: str | None = None
    cidr: str | None = None
    host_ip: str | None = None
    servers: list[DemoServer] = field(default_factory=list)
    network_id: str | None = None
    subnet_id: str | None = None
    lb_id: str | None = None
    vip: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.vip}/"

    @property
    def curl(self) -> str:
        return f"curl {self.url}"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> DemoRecord:
        try:
            raw = json.loads(path.read_text())
            servers = [DemoServer(**s) for s in raw.pop("servers", [])]
            return cls(**raw, servers=servers)
        except (OSError, ValueError, TypeError) as exc:
            raise DemoError(f"{path} is not a demo record ({exc}); remove it by hand") from None


# --- the API ---------------------------------------------------------------------------------


class Api:
    """The few calls the demo makes, with errors turned into DemoError."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        # trust_env=False: a proxy from the environment must not see a local admin token.
        self.http = httpx.Client(
            base_url=self.url, headers={"X-Auth-Token": token}, timeout=30, trust_env=False
        )

    def call(self, method: str, path: str, ok: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise DemoError(
                f"the API at {self.url} is unreachable ({exc}): is `openha up` running?"
            ) from None
        if resp.status_code not in ok:
            raise DemoError(f"{method} {path} answered {resp.status_code}: {resp.text[:500]}")
        return resp

    def post(self, path: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", path, (201,), json={key: body}).json()[key])

    def lb(self, lb_id: str) -> dict[str, Any] | None:
        resp = self.call("GET", f"/v2/lbaas/loadbalancers/{lb_id}", (200, 404))
        return None if resp.status_code == 404 else dict(resp.json()["loadbalancer"])

    def status_tree(self, lb_id: str) -> dict[str, Any]:
        resp = self.call("GET", f"/v2/lbaas/loadbalancers/{lb_id}/status", (200,))
        return dict(resp.json()["statuses"]["loadbalancer"])

    def close(self) -> None:
        self.http.close()


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(interval)


# --- local pieces ----------------------------------------------------------------------------


def _start_server(server: DemoServer, log: Path) -> int:
    """Start a web server in its namespace, detached: its own session, no pipe to us."""
    cmd = [
        sys.executable, "-m", BACKEND_MODULE, "--name", server.name,
        "--ip", server.ip, "--port", str(server.port),
    ]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with NamespaceExec(server.namespace) as nsexec, open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=nsexec,
            start_new_session=True,
        )
    return proc.pid


def _get(url: str, timeout: float = 2.0) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return None


def _is_demo_server(pid: int) -> bool:
    """True when `pid` still is one of our servers (pids get reused)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return BACKEND_MODULE.encode() in argv


def _stop_server(pid: int) -> None:
    if not _is_demo_server(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _is_demo_server(pid):
        time.sleep(0.05)
    if _is_demo_server(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- printing --------------------------------------------------------------------------------


def _label(kind: str, obj: dict[str, Any], extra: str = "") -> str:
    status = f"{obj.get('provisioning_status')}/{obj.get('operating_status')}"
    colour = "green" if obj.get("operating_status") in (c.ONLINE, c.NO_MONITOR) else "yellow"
    name = obj.get("name") or obj.get("id")
    return f"[bold]{kind}[/bold] {name}{extra} [{colour}]{status}[/{colour}]"


def status_tree(tree: dict[str, Any], vip: str | None = None) -> Tree:
    """Octavia's status tree of a load balancer as a rich Tree."""
    root = Tree(_label("loadbalancer", tree, f" {vip}" if vip else ""))
    for listener in tree.get("listeners", []):
        branch = root.add(_label("listener", listener))
        for pool in listener.get("pools", []):
            pool_branch = branch.add(_label("pool", pool))
            hm = pool.get("health_monitor")
            if hm:
                pool_branch.add(_label("healthmonitor", hm, f" ({hm.get('type')})"))
            for member in pool.get("members", []):
                where = f" {member.get('address')}:{member.get('protocol_port')}"
                pool_branch.add(_label("member", member, where))
    return root


def show(record: DemoRecord, api: Api, console: Console) -> None:
    if record.lb_id is None or api.lb(record.lb_id) is None:
        console.print(
            "[yellow]Its load balancer does not exist (any more).[/yellow] "
            "`openha demo --clean` then `openha demo` make a new one."
        )
        return
    console.print("Reach the load balancer from this machine with:")
    console.print(f"  [green]{record.curl}[/green]", soft_wrap=True, highlight=False)
    console.print(status_tree(api.status_tree(record.lb_id), record.vip))
    console.print("Remove it all with: [green]openha demo --clean[/green]", highlight=False)


# --- create ------------------------------------------------------------------------------------


def _preflight(api: Api) -> None:
    if os.geteuid() != 0:
        raise DemoError("the demo needs root: it creates a bridge and network namespaces")
    hosts = api.call("GET", "/v2/manage/hosts", (200,)).json()["hosts"]
    if not any(h["status"] == c.HOST_UP for h in hosts):
        raise DemoError("no agent host is UP: start OpenHA with `openha up` as root")


def run_demo(
    state_dir: Path,
    api_url: str,
    token: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    console: Console | None = None,
) -> tuple[DemoRecord, bool]:
    """Build the demo (see the module docstring); (record, True) when it already existed."""
    console = console or Console()
    path = state_dir / DEMO_FILE
    api = Api(api_url, token)
    try:
        if path.exists():
            record = DemoRecord.load(path)
            console.print(f"[yellow]The demo exists already[/yellow] (recorded in {path}).")
            show(record, api, console)
            return record, True
        _preflight(api)
        record = DemoRecord(prefix=prefix, api_url=api_url)
        record.save(path)
        try:
            _build(record, path, state_dir, api, console)
        except BaseException:
            console.print(
                "[red]The demo is incomplete.[/red] `openha demo --clean` removes what was made."
            )
            raise
        show(record, api, console)
        return record, False
    finally:
        api.close()


def _build(record: DemoRecord, path: Path, state_dir: Path, api: Api, console: Console) -> None:
    with console.status("Creating the demo bridge and web servers…"):
        lab = Lab(prefix=record.prefix)  # a fresh bridge, the host at .1 of a free /24
        record.bridge, record.cidr, record.host_ip = lab.bridge, str(lab.network), lab.host_ip
        record.save(path)
        for name in SERVERS:
            server = DemoServer(name, f"{record.prefix}-{name}", lab.allocate_ip(), SERVER_PORT)
            record.servers.append(server)
            record.save(path)
            lab.add_namespace(name, server.ip)
            server.pid = _start_server(server, state_dir / LOG_DIR / f"{name}.log")
            record.save(path)
        # The host is on the bridge: it can ask each server directly.
        for server in record.servers:
            url = f"http://{server.ip}:{server.port}/"
            _wait(lambda u=url: _get(u) is not None, 15, f"web server {server.name} answering", 0.1)
    console.print(f"Bridge {record.bridge} ({record.cidr}), servers " + ", ".join(
        f"{s.name} {s.ip}:{s.port}" for s in record.servers
    ), highlight=False)  # fmt: skip

    with console.status("Registering the demo network and subnet…"):
        network = api.post(
            "/v2.0/networks",
            "network",
            {
                "name": f"{record.prefix}-net",
                "shared": True,
                "provider:network_type": "flat",
                "provider:physical_network": record.bridge,
                # The demo made the bridge (with the host's address): agents only plug into it.
                "openha:bridge_managed": False,
            },
        )
        record.network_id = network["id"]
        record.save(path)
        hosts = list(ipaddress.ip_network(record.cidr).hosts())
        subnet = api.post(
            "/v2.0/subnets",
            "subnet",
            {
                "name": f"{record.prefix}-subnet",
                "network_id": network["id"],
                "cidr": record.cidr,
                "ip_version": 4,
                "gateway_ip": record.host_ip,
                # The low addresses are the demo servers'.
                "allocation_pools": [{"start": str(hosts[99]), "end": str(hosts[199])}],
            },
        )
        record.subnet_id = subnet["id"]
        record.save(path)

    with console.status("Creating the load balancer (HTTP :80, 3 members, health monitor)…"):
        lb = api.post(
            "/v2/lbaas/loadbalancers",
            "loadbalancer",
            {
                "name": "demo",
                "description": "openha demo",
                "vip_subnet_id": record.subnet_id,
                "listeners": [
                    {
                        "name": "demo-http",
                        "protocol": "HTTP",
                        "protocol_port": 80,
                        "default_pool": {
                            "name": "demo-web",
                            "protocol": "HTTP",
                            "lb_algorithm": "ROUND_ROBIN",
                            "members": [
                                {"name": s.name, "address": s.ip, "protocol_port": s.port}
                                for s in record.servers
                            ],
                            "healthmonitor": {
                                "name": "demo-check",
                                "type": "HTTP",
                                "delay": 2,
                                "timeout": 1,
                                "max_retries": 2,
                                "max_retries_down": 2,
                                "url_path": "/",
                            },
                        },
                    }
                ],
            },
        )
        record.lb_id, record.vip = lb["id"], lb["vip_address"]
        record.save(path)
        lb_id = lb["id"]

        def ready() -> bool:
            current = api.lb(lb_id)
            if current is None or current["provisioning_status"] == c.ERROR:
                raise DemoError(f"the load balancer failed: {current}")
            return bool(
                current["provisioning_status"] == c.ACTIVE
                and current["operating_status"] == c.ONLINE
            )

        _wait(ready, READY_TIMEOUT, "load balancer ACTIVE/ONLINE")

    with console.status(f"Checking {record.url} from this host…"):
        seen: set[str] = set()

        def every_server_answers() -> bool:
            resp = _get(record.url)
            if resp is not None and resp.status_code == 200:
                seen.add(str(resp.json().get("server")))
            return seen == set(SERVERS)

        _wait(every_server_answers, 30, "every server answering through the VIP", 0.05)
    console.print(f"[green]The demo is ready:[/green] {record.url} is served by " + ", ".join(
        sorted(seen)
    ), highlight=False)  # fmt: skip


# --- clean -------------------------------------------------------------------------------------


def clean_demo(state_dir: Path, api_url: str, token: str, console: Console | None = None) -> bool:
    """Remove what `demo.json` records; False when there is no demo."""
    console = console or Console()
    path = state_dir / DEMO_FILE
    if not path.exists():
        console.print("No demo to clean (no demo.json).")
        return False
    record = DemoRecord.load(path)
    api = Api(api_url, token)
    try:
        # The API first: the agent removes the instance's legs from the bridge.
        if record.lb_id:
            with console.status(f"Deleting load balancer {record.lb_id}…"):
                api.call(
                    "DELETE",
                    f"/v2/lbaas/loadbalancers/{record.lb_id}",
                    (204, 404, 409),  # 409: already being deleted
                    params={"cascade": "true"},
                )
                lb_id = record.lb_id
                _wait(lambda: api.lb(lb_id) is None, DELETE_TIMEOUT, "load balancer deletion")
            record.lb_id = None
            record.save(path)
        if record.network_id:
            network_id = record.network_id
            # Deleting the network takes its subnet along; a port being released is a 409.
            _wait(
                lambda: (
                    api.call("DELETE", f"/v2.0/networks/{network_id}", (204, 404, 409)).status_code
                    != 409
                ),
                DELETE_TIMEOUT,
                "network deletion",
            )
            record.network_id = record.subnet_id = None
            record.save(path)
    finally:
        api.close()
    for server in record.servers:
        if server.pid:
            _stop_server(server.pid)
    # Namespaces (and anything left running in them), veths and the bridge.
    cleanup_stale(record.prefix)
    with contextlib.suppress(FileNotFoundError):
        for log in (state_dir / LOG_DIR).glob("*.log"):
            log.unlink()
        (state_dir / LOG_DIR).rmdir()
    path.unlink()
    console.print("[green]The demo is gone[/green] (load balancer, network, servers, bridge).")
    return True
