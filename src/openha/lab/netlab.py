"""A throwaway network for tests and the demo: one bridge, backends and clients in namespaces.

    with Lab() as lab:
        web = BackendServer(lab, "web1")           # real HTTP server in its own namespace
        client = ClientNamespace(lab)               # requests from another namespace
        iface = lab.interface_spec(lab.allocate_ip())   # an instance's leg into the lab
        ...
        client.request(f"http://{vip}/").json()["server"]

Every name carries the lab's unique prefix (bridge `<prefix>br`, veths `<prefix>v<n>`,
namespaces `<prefix>-<name>`), so parallel or aborted runs never collide, and
`close()` (or `cleanup_stale(prefix)` after a crash) removes all of it. The host side
of the bridge holds `host_ip`, usable as the namespaces' gateway.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pyroute2 import IPRoute, netns

from openha.agent.netns import NamespaceExec, ensure_namespace, namespace_pids, ns_iproute
from openha.domain.spec import InterfaceSpec

_T = TypeVar("_T")
MAX_PREFIX = 9  # <prefix>v<3 digits> and <prefix>p<3 digits> must fit IFNAMSIZ (15)


def _new_prefix() -> str:
    return "ol" + os.urandom(3).hex()[:5]


def _used_networks() -> list[ipaddress.IPv4Network]:
    with IPRoute() as ipr:
        return [
            ipaddress.IPv4Interface(f"{a.get('address')}/{a['prefixlen']}").network
            for a in ipr.get_addr(family=socket.AF_INET)
        ]


def _kill_namespace_processes(ns: str) -> None:
    pids = namespace_pids(ns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and namespace_pids(ns):
        time.sleep(0.02)


def cleanup_stale(prefix: str) -> None:
    """Remove namespaces, processes and links named with `prefix` (after a crashed run)."""
    if len(prefix) < 3:
        raise ValueError("refusing a prefix this short")
    for ns in netns.listnetns():
        if ns.startswith(prefix + "-"):
            _kill_namespace_processes(ns)
            with contextlib.suppress(OSError):
                netns.remove(ns)
    with IPRoute() as ipr:
        for link in ipr.get_links():
            if (link.get("ifname") or "").startswith(prefix):
                with contextlib.suppress(Exception):
                    ipr.link("del", index=link["index"])


class Lab:
    """A bridge with a /24, the host at `.1`; hands out addresses and makes namespaces."""

    def __init__(self, prefix: str | None = None, subnet: str | None = None) -> None:
        self.prefix = prefix or _new_prefix()
        if len(self.prefix) > MAX_PREFIX or not self.prefix.isalnum():
            raise ValueError(f"lab prefix must be ≤{MAX_PREFIX} alphanumerics")
        self.bridge = f"{self.prefix}br"
        self.network = ipaddress.ip_network(subnet) if subnet else self._pick_subnet()
        hosts = self.network.hosts()
        self.host_ip = str(next(hosts))
        self._free = (str(ip) for ip in hosts)
        self._links = 0
        self._namespaces: list[str] = []
        self._closers: list[Any] = []
        self._lock = threading.Lock()
        self._open()

    @staticmethod
    def _pick_subnet() -> ipaddress.IPv4Network:
        used = _used_networks()
        for _ in range(100):
            net = ipaddress.ip_network(
                f"10.{random.randint(200, 249)}.{random.randint(0, 255)}.0/24"
            )
            if not any(net.overlaps(u) for u in used):
                return net  # type: ignore[return-value]
        raise RuntimeError("no free 10.x.y.0/24 for the lab")

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    def _open(self) -> None:
        cleanup_stale(self.prefix)
        with IPRoute() as ipr:
            ipr.link("add", ifname=self.bridge, kind="bridge")
            index = ipr.link_lookup(ifname=self.bridge)[0]
            ipr.addr("add", index=index, address=self.host_ip, prefixlen=self.prefixlen)
            ipr.link("set", index=index, state="up")

    def allocate_ip(self) -> str:
        with self._lock:
            return next(self._free)

    def interface_spec(self, address: str | None = None, name: str = "eth0") -> InterfaceSpec:
        """An instance leg into this lab (existing bridge, gateway = the host side)."""
        address = address or self.allocate_ip()
        return InterfaceSpec(
            name=name,
            bridge=self.bridge,
            bridge_managed=False,
            addresses=(f"{address}/{self.prefixlen}",),
            gateway=self.host_ip,
        )

    def add_namespace(self, name: str, ip: str) -> str:
        """A namespace `<prefix>-<name>` with eth0 = `ip` on the lab bridge."""
        ns = f"{self.prefix}-{name}"
        with self._lock:
            n = self._links
            self._links += 1
            self._namespaces.append(ns)
        if not ensure_namespace(ns):
            raise FileExistsError(f"namespace {ns} exists already")
        host_end = f"{self.prefix}v{n}"
        with IPRoute() as ipr:
            ipr.link("add", ifname=host_end, kind="veth", peer={"ifname": "eth0", "net_ns_fd": ns})
            index = ipr.link_lookup(ifname=host_end)[0]
            bridge = ipr.link_lookup(ifname=self.bridge)[0]
            ipr.link("set", index=index, master=bridge, state="up")
        with ns_iproute(ns) as nsr:
            lo = nsr.link_lookup(ifname="lo")[0]
            nsr.link("set", index=lo, state="up")
            eth = nsr.link_lookup(ifname="eth0")[0]
            nsr.addr("add", index=eth, address=ip, prefixlen=self.prefixlen)
            nsr.link("set", index=eth, state="up")
            nsr.route("add", dst="0.0.0.0/0", gateway=self.host_ip)
        return ns

    def on_close(self, closer: Any) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                closer.close()
        self._closers.clear()
        for ns in self._namespaces:
            _kill_namespace_processes(ns)
        cleanup_stale(self.prefix)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BackendServer:
    """A real server (see `openha.lab.backend`) in its own namespace on the lab bridge."""

    def __init__(
        self,
        lab: Lab,
        name: str,
        ip: str | None = None,
        port: int = 8080,
        kind: str = "http",
        proxy_protocol: bool = False,
        set_cookie: str | None = None,
        tls_cert: str | None = None,
        tls_client_ca: str | None = None,
    ) -> None:
        self.lab = lab
        self.name = name
        self.ip = ip or lab.allocate_ip()
        self.port = port
        self.kind = kind
        self.proxy_protocol = proxy_protocol
        self.set_cookie = set_cookie  # http: open a session with this cookie (see backend)
        self.tls_cert = tls_cert  # a PEM file (certificate and key): serve TLS
        self.tls_client_ca = tls_client_ca  # a PEM file: require client certificates
        self.namespace = lab.add_namespace(name, self.ip)
        self.proc: subprocess.Popen[bytes] | None = None
        lab.on_close(self)
        self.start()

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        cmd = [
            sys.executable, "-m", "openha.lab.backend", "--name", self.name,
            "--ip", self.ip, "--port", str(self.port), "--kind", self.kind,
        ]  # fmt: skip
        if self.proxy_protocol:
            cmd.append("--proxy-protocol")
        if self.set_cookie:
            cmd += ["--set-cookie", self.set_cookie]
        if self.tls_cert:
            cmd += ["--tls-cert", self.tls_cert]
        if self.tls_client_ca:
            cmd += ["--tls-client-ca", self.tls_client_ca]
        with NamespaceExec(self.namespace) as nsexec:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, preexec_fn=nsexec
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.stop()
            raise RuntimeError(f"backend {self.name} did not start")

    def stop(self) -> None:
        """Kill the server (simulates a failed member); `start()` brings it back."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def close(self) -> None:
        self.stop()


@dataclass
class ClientResponse:
    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def _enter_namespace(ns: str) -> None:
    netns.setns(ns, flags=0)  # only this worker thread moves


class ClientNamespace:
    """A namespace on the lab bridge whose helper threads make requests from inside it."""

    def __init__(self, lab: Lab, name: str = "client", ip: str | None = None, workers: int = 4):
        self.lab = lab
        self.ip = ip or lab.allocate_ip()
        self.namespace = lab.add_namespace(name, self.ip)
        self._pool = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix=f"client-{self.namespace}",
            initializer=_enter_namespace,
            initargs=(self.namespace,),
        )
        lab.on_close(self)

    def run(self, fn: Any, *args: Any, timeout: float | None = 60.0) -> Any:
        """Run `fn(*args)` in a thread inside the namespace and return its result."""
        return self._pool.submit(fn, *args).result(timeout=timeout)

    def request(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 5.0,
    ) -> ClientResponse:
        """One HTTP request on a fresh connection (raises OSError on failure)."""
        response: ClientResponse = self.run(
            _http, url, method, headers or {}, body, timeout, timeout=timeout + 5
        )
        return response

    def tcp(self, host: str, port: int, data: bytes = b"", timeout: float = 5.0) -> bytes:
        """Connect, send `data`, half-close, return all that comes back."""
        answer: bytes = self.run(_tcp, host, port, data, timeout, timeout=timeout + 5)
        return answer

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _http(
    url: str, method: str, headers: dict[str, str], body: bytes | None, timeout: float
) -> ClientResponse:
    parts = urlsplit(url)
    host = parts.hostname or ""
    conn = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        # HAProxy lowercases header names; so do we, so lookups need not care.
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return ClientResponse(resp.status, headers, resp.read())
    finally:
        conn.close()


def _tcp(host: str, port: int, data: bytes, timeout: float) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        if data:
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
