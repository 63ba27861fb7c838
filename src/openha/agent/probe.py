"""The active probe of diagnostics: can this load balancer reach its members, right now?

From inside the instance's namespace (so through the same routes, addresses and
neighbours HAProxy uses), every member of every backend gets a TCP connect and, where
its pool has an HTTP(S) health monitor, the monitor's own request (method, URI,
version, Host) judged by the monitor's expectation. Targets come from the config
HAProxy runs (`probe_targets`), not from the database: the probe checks what the data
plane does. Sockets are made in the namespace by one thread (a socket keeps the
namespace it was born in) and used from a pool, so every member is probed at once
and the whole answer takes one timeout at worst.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from openha.agent.netns import run_in_namespace

PROBE_TIMEOUT = 0.6  # per member, connect and answer together
MAX_PARALLEL = 64
MAX_TARGETS = 1000
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})|\\(.)")


def words(line: str) -> list[str]:
    """A config line split as HAProxy reads it: '…' and "…" quotes, \\xNN and \\c escapes."""
    out: list[str] = []
    word: list[str] = []
    in_word = False
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch in " \t":
            if in_word:
                out.append("".join(word))
                word, in_word = [], False
            i += 1
            continue
        in_word = True
        if ch == "'":
            end = line.find("'", i + 1)
            end = n if end < 0 else end
            word.append(line[i + 1 : end])
            i = end + 1
        elif ch == '"':
            i += 1
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n:
                    i += 1
                word.append(line[i])
                i += 1
            i += 1
        elif ch == "\\" and i + 1 < n:
            m = _ESCAPE.match(line, i)
            if m and m.group(1):
                word.append(chr(int(m.group(1), 16)))
                i = m.end()
            else:
                word.append(line[i + 1])
                i += 2
        else:
            word.append(ch)
            i += 1
    if in_word:
        out.append("".join(word))
    return out


@dataclass
class Check:
    kind: str = "tcp"  # tcp | http | https | tls-hello
    method: str = "GET"
    uri: str = "/"
    version: str = "HTTP/1.0"
    host: str | None = None
    expect: str = "status"  # status | rstatus
    expect_value: str = "200"


@dataclass
class Target:
    pool_id: str
    member_id: str
    address: str
    port: int
    check_address: str
    check_port: int
    check: Check | None  # None: the pool has no health monitor (a TCP connect still runs)
    tls: bool = False  # traffic to the member is TLS


def _split_address(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def probe_targets(config: str) -> list[Target]:
    """Every server of every backend in `config` (as OpenHA renders it), with its check."""
    targets: list[Target] = []
    backend: str | None = None
    check: Check | None = None
    httpchk = tlshello = False
    for raw in config.splitlines():
        tokens = words(raw.strip())
        if not tokens or tokens[0].startswith("#"):
            continue
        head = tokens[0]
        if not raw[:1].isspace():  # a section starts
            backend = tokens[1] if head == "backend" and len(tokens) > 1 else None
            check, httpchk, tlshello = Check(), False, False
            continue
        if backend is None or check is None:
            continue
        if tokens[:2] == ["option", "httpchk"]:
            httpchk = True
        elif tokens[:2] == ["option", "ssl-hello-chk"]:
            tlshello = True
        elif tokens[:2] == ["http-check", "send"]:
            _http_send(check, tokens[2:])
        elif tokens[:2] == ["http-check", "expect"] and len(tokens) >= 4:
            check.expect, check.expect_value = tokens[2], tokens[3]
        elif head == "server" and len(tokens) >= 3 and len(targets) < MAX_TARGETS:
            target = _server(backend, tokens, check, httpchk, tlshello)
            if target is not None:
                targets.append(target)
    return targets


def _http_send(check: Check, args: list[str]) -> None:
    pairs = iter(range(len(args)))
    for i in pairs:
        key = args[i]
        value = args[i + 1] if i + 1 < len(args) else ""
        if key == "meth":
            check.method = value
        elif key == "uri":
            check.uri = value
        elif key == "ver":
            check.version = value
        elif key == "hdr" and value.lower() == "host" and i + 2 < len(args):
            check.host = args[i + 2]
            next(pairs, None)
        next(pairs, None)


def _server(
    backend: str, tokens: list[str], check: Check, httpchk: bool, tlshello: bool
) -> Target | None:
    where = _split_address(tokens[2])
    if where is None:
        return None
    params = tokens[3:]
    checked = "check" in params
    address, port = where
    check_address, check_port = address, port
    if "addr" in params and params.index("addr") + 1 < len(params):
        check_address = params[params.index("addr") + 1]
    if "port" in params and params.index("port") + 1 < len(params):
        value = params[params.index("port") + 1]
        check_port = int(value) if value.isdigit() else port
    mine: Check | None = None
    if checked:
        kind = "tcp"
        if httpchk:
            kind = "https" if "check-ssl" in params else "http"
        elif tlshello:
            kind = "tls-hello"
        mine = Check(
            kind, check.method, check.uri, check.version, check.host, check.expect,
            check.expect_value,
        )  # fmt: skip
    return Target(
        backend, tokens[1], address, port, check_address, check_port, mine, "ssl" in params
    )


# --- running it --------------------------------------------------------------------------


def _expected(check: Check, code: int) -> bool:
    if check.expect == "rstatus":
        return re.search(check.expect_value, str(code)) is not None
    return str(code) == check.expect_value


def _tls(sock: socket.socket) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(sock)


def _connect(sock: socket.socket, host: str, port: int, deadline: float) -> dict[str, Any]:
    started = time.monotonic()
    sock.settimeout(max(0.01, deadline - started))
    try:
        sock.connect((host, port))
    except OSError as exc:
        return {"ok": False, "ms": _ms(started), "error": _reason(exc)}
    return {"ok": True, "ms": _ms(started), "error": None}


def _http(sock: socket.socket, check: Check, deadline: float) -> dict[str, Any]:
    started = time.monotonic()
    result: dict[str, Any] = {
        "request": f"{check.method} {check.uri} {check.version}",
        "expect": f"{check.expect} {check.expect_value}",
        "ok": False,
        "status": None,
        "ms": None,
        "error": None,
    }
    try:
        sock.settimeout(max(0.01, deadline - started))
        conn: socket.socket = _tls(sock) if check.kind == "https" else sock
        head = f"{check.method} {check.uri} {check.version}\r\n"
        if check.host:
            head += f"Host: {check.host}\r\n"
        conn.sendall((head + "Connection: close\r\n\r\n").encode("latin-1", "replace"))
        data = b""
        while b"\r\n" not in data and len(data) < 4096:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        line = data.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            result["error"] = f"not an HTTP answer: {line[:80]!r}" if line else "no answer"
        else:
            result["status"] = int(parts[1])
            result["ok"] = _expected(check, result["status"])
            if not result["ok"]:
                result["error"] = f"answered {line[:80]}"
    except (OSError, ssl.SSLError) as exc:
        result["error"] = _reason(exc)
    result["ms"] = _ms(started)
    return result


def _tls_hello(sock: socket.socket, deadline: float) -> dict[str, Any]:
    started = time.monotonic()
    sock.settimeout(max(0.01, deadline - started))
    try:
        _tls(sock)
    except (OSError, ssl.SSLError) as exc:
        return {"ok": False, "ms": _ms(started), "error": _reason(exc)}
    return {"ok": True, "ms": _ms(started), "error": None}


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 2)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)


def _probe_one(target: Target, socks: list[socket.socket], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    out: dict[str, Any] = {
        "pool_id": target.pool_id,
        "member_id": target.member_id,
        "address": target.address,
        "port": target.port,
        "check": target.check.kind if target.check else None,
    }
    try:
        out["tcp"] = _connect(socks[0], target.address, target.port, deadline)
        check = target.check
        if check is not None and check.kind != "tcp":
            same = (target.check_address, target.check_port) == (target.address, target.port)
            sock = socks[0] if same else socks[1]
            reached = out["tcp"] if same else _connect(
                sock, target.check_address, target.check_port, deadline
            )  # fmt: skip
            if not reached["ok"]:
                out["health_check"] = {"ok": False, "ms": reached["ms"], "error": reached["error"]}
            elif check.kind == "tls-hello":
                out["health_check"] = _tls_hello(sock, deadline)
            else:
                out["health_check"] = _http(sock, check, deadline)
        out["ok"] = out["tcp"]["ok"] and out.get("health_check", {"ok": True})["ok"]
    finally:
        for sock in socks:
            sock.close()
    return out


def run_probe(
    namespace: str, targets: list[Target], timeout: float = PROBE_TIMEOUT
) -> list[dict[str, Any]]:
    """Probe every target from inside `namespace`, all at once; one result per target."""
    if not targets:
        return []

    def family(address: str) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in address else socket.AF_INET

    def make() -> list[list[socket.socket]]:
        # Two sockets a target: traffic port, and health check port (may differ).
        return [
            [
                socket.socket(family(t.address), socket.SOCK_STREAM),
                socket.socket(family(t.check_address), socket.SOCK_STREAM),
            ]
            for t in targets
        ]

    sockets = run_in_namespace(namespace, make)
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(targets))) as pool:
        futures = [
            pool.submit(_probe_one, t, s, timeout) for t, s in zip(targets, sockets, strict=True)
        ]
        return [f.result() for f in futures]
