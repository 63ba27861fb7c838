"""Helpers shared by the full-stack traffic tests: build LBs through the API, drive clients.

Everything here talks to a `stack.Stack` through its tenant API and to the data
plane from lab namespaces, so a test reads as "declare, then look at the wire".
`TrafficLoop` is the steady client of the resilience tests: a thread inside a
client namespace that keeps sending requests through a VIP and records every
failure, so "no request was lost" is something a test can assert.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import netns
from stack import Stack, wait_for

from openha.lab import BackendServer, ClientNamespace


def http_lb(
    stack: Stack,
    backends: list[BackendServer],
    *,
    hm: bool = True,
    pool: dict[str, Any] | None = None,
    listener: dict[str, Any] | None = None,
    lb: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An LB with one HTTP listener on port 80, a pool of `backends` and (by default) an HM."""
    lb = stack.create(
        "loadbalancers", "loadbalancer", {"vip_subnet_id": stack.subnet_id, **(lb or {})}
    )
    li = stack.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80, **(listener or {})},
    )
    po = stack.create(
        "pools",
        "pool",
        {
            "listener_id": li["id"],
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
            **(pool or {}),
        },
    )
    members = [
        stack.create(
            f"pools/{po['id']}/members",
            "member",
            {"address": b.ip, "protocol_port": b.port, "name": b.name},
        )
        for b in backends
    ]
    if hm:
        stack.create(
            "healthmonitors",
            "healthmonitor",
            {
                "pool_id": po["id"],
                "type": "HTTP",
                "delay": 1,
                "timeout": 1,
                "max_retries": 1,
                "max_retries_down": 1,
                "url_path": "/",
            },
        )
    stack.wait_active(lb["id"])
    return {"lb": lb, "listener": li, "pool": po, "members": members}


def served_by(client: ClientNamespace, url: str, n: int, **kwargs: Any) -> Counter[str]:
    """Which backend answered each of `n` requests (all must be 200)."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        resp = client.request(url, timeout=5, **kwargs)
        assert resp.status == 200, resp.text
        seen[resp.json()["server"]] += 1
    return seen


# --- API shortcuts ----------------------------------------------------------------------


def flavor(stack: Stack, name: str, data: dict[str, Any]) -> str:
    """An enabled haproxy flavor whose profile holds `data`; returns its id."""
    profile = stack.admin.post(
        "/v2/lbaas/flavorprofiles",
        json={
            "flavorprofile": {
                "name": name,
                "provider_name": "haproxy",
                "flavor_data": json.dumps(data),
            }
        },
    )
    assert profile.status_code == 201, profile.text
    made = stack.admin.post(
        "/v2/lbaas/flavors",
        json={"flavor": {"name": name, "flavor_profile_id": profile.json()["flavorprofile"]["id"]}},
    )
    assert made.status_code == 201, made.text
    return str(made.json()["flavor"]["id"])


def update(stack: Stack, path: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    """PUT a tenant object (200 expected) and return it."""
    resp = stack.tenant.put(f"/v2/lbaas/{path}", json={key: body})
    assert resp.status_code == 200, resp.text
    return dict(resp.json()[key])


def remove(stack: Stack, path: str) -> None:
    """DELETE a tenant object (204 expected)."""
    resp = stack.tenant.delete(f"/v2/lbaas/{path}")
    assert resp.status_code == 204, resp.text


def delete_lb(stack: Stack, lb_id: str, timeout: float = 30.0) -> None:
    """Cascade-delete an LB and wait until the API no longer knows it."""
    resp = stack.tenant.delete(f"/v2/lbaas/loadbalancers/{lb_id}", params={"cascade": "true"})
    assert resp.status_code in (204, 404), resp.text
    wait_for(
        lambda: stack.tenant.get(f"/v2/lbaas/loadbalancers/{lb_id}").status_code == 404,
        timeout,
        what=f"LB {lb_id} deleted",
    )


# --- the wire ---------------------------------------------------------------------------


def answers(client: ClientNamespace, url: str, **kwargs: Any) -> bool:
    """True when `url` answers 200 now (a refused or reset connection is just False)."""
    try:
        return client.request(url, timeout=2, **kwargs).status == 200
    except OSError:
        return False


def wait_answers(client: ClientNamespace, url: str, timeout: float = 20.0) -> None:
    wait_for(lambda: answers(client, url), timeout, 0.1, f"{url} answers")


def refused(client: ClientNamespace, url: str, **kwargs: Any) -> bool:
    """True when the connection fails before any HTTP answer (closed port, rejected)."""
    try:
        client.request(url, timeout=3, **kwargs)
    except OSError:
        return True
    return False


def connect(client: ClientNamespace, host: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection opened from inside the client's namespace (usable from any thread)."""
    sock: socket.socket = client.run(socket.create_connection, (host, port), timeout)
    return sock


def http_on(sock: socket.socket, path: str = "/", timeout: float = 5.0) -> dict[str, Any]:
    """Send one keep-alive HTTP/1.1 request on `sock` and return the backend's JSON."""
    sock.settimeout(timeout)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: lab\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response headers")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the body")
        body += chunk
    return dict(json.loads(body[:length]))


@dataclass
class TrafficLoop:
    """Requests through `url` from inside `client`'s namespace, one fresh connection each.

    A fresh connection per request is the demanding case for reloads: every
    request needs a listening socket that is there. `failures` keeps what went
    wrong (time since start, error) so an assertion message can say when.
    """

    client: ClientNamespace
    url: str
    pause: float = 0.005  # leave CPU to the system under test (2 cores, shared)
    timeout: float = 5.0
    ok: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    served: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def start(self) -> TrafficLoop:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="traffic-loop", daemon=True)
        self._thread.start()
        # Only the first request tells whether the loop runs at all.
        wait_for(lambda: self.ok or self.failures, 10, what="first request of the loop")
        return self

    def _run(self) -> None:
        netns.setns(self.client.namespace, flags=0)  # this thread only
        host, _, rest = self.url.removeprefix("http://").partition("/")
        addr, _, port = host.partition(":")
        path = "/" + rest
        while not self._stop.is_set():
            conn = http.client.HTTPConnection(addr, int(port or 80), timeout=self.timeout)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status == 200:
                    self.ok += 1
                    with contextlib.suppress(ValueError, KeyError):
                        self.served[json.loads(body)["server"]] += 1
                else:
                    self._fail(f"HTTP {resp.status}: {body[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self._fail(f"{type(exc).__name__}: {exc}")
            finally:
                conn.close()
            self._stop.wait(self.pause)

    def _fail(self, what: str) -> None:
        self.failures.append((round(time.monotonic() - self._started, 2), what))

    def mark(self) -> tuple[int, int]:
        """(successes, failures) so far, to compare with a later mark."""
        return self.ok, len(self.failures)

    def wait_requests(self, n: int, timeout: float = 30.0) -> None:
        """Let at least `n` more requests succeed."""
        target = self.ok + n
        wait_for(lambda: self.ok >= target, timeout, 0.02, f"{n} more requests through the loop")

    def stop(self) -> TrafficLoop:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)
        return self

    def __enter__(self) -> TrafficLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
