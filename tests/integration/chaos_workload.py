"""The chaos run's workload: random creates, updates and deletes through the tenant API."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from chaos_procs import ProcStack

from openha.lab import BackendServer

LISTENER_PORTS = range(81, 86)
ALGORITHMS = ("ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP")


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
