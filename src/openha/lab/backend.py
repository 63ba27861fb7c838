"""A small real backend server for the lab: `python -m openha.lab.backend --name web1 ...`.

Started by `BackendServer` inside its namespace. Kinds:
- `http`: answers every request with 200 and a JSON body naming the server and echoing
  the method, path, request headers, peer address and (if enabled) the PROXY protocol
  source; keep-alive aware, so HAProxy may reuse connections.
- `tcp`: sends one JSON line with the same facts, then closes.
- `echo`: echoes whatever it receives.
With `--proxy-protocol`, a PROXY v1 or v2 header is accepted (optional) on each
connection. With `--set-cookie NAME` (http), a response to a request that carries
no NAME cookie sets one, `NAME=<server>-<random>`, like an application opening a
session (for APP_COOKIE persistence). Never resolves names (an isolated namespace has
no DNS: getfqdn would hang). With `--tls-cert PEM` (certificate and key in one file)
it speaks TLS, and with `--tls-client-ca PEM` it also requires a client certificate
signed by that CA (for re-encryption tests); the http JSON then names the client
certificate's subject as `tls_client`. Prints `ready` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import ssl
import struct
import sys
from typing import Any

PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_HEADER = 64 * 1024


class Stream:
    """A StreamReader with push-back, so a PROXY header can be looked for and put back."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buf = bytearray()

    async def _fill(self) -> None:
        data = await self.reader.read(65536)
        if not data:
            raise asyncio.IncompleteReadError(bytes(self.buf), None)
        self.buf += data

    def unread(self, data: bytes) -> None:
        self.buf[:0] = data

    async def readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def readuntil(self, sep: bytes) -> bytes:
        while (idx := self.buf.find(sep)) < 0:
            if len(self.buf) > MAX_HEADER:
                raise ValueError("header too long")
            await self._fill()
        return await self.readexactly(idx + len(sep))

    async def read(self, n: int) -> bytes:
        if not self.buf:
            try:
                await self._fill()
            except asyncio.IncompleteReadError:
                return b""
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


async def read_proxy_header(reader: Stream) -> dict[str, Any] | None:
    """Consume a PROXY v1/v2 header if one starts the stream."""
    try:
        head = await reader.readexactly(5)
    except asyncio.IncompleteReadError as exc:
        reader.unread(exc.partial)
        return None
    if head == b"PROXY":
        line = head + await reader.readuntil(b"\r\n")
        parts = line.decode().split()
        if len(parts) >= 6 and parts[1] in ("TCP4", "TCP6"):
            return {
                "version": 1,
                "src": parts[2],
                "dst": parts[3],
                "src_port": int(parts[4]),
                "dst_port": int(parts[5]),
            }
        return {"version": 1, "src": None}
    if head == PROXY_V2_SIG[:5]:
        rest = await reader.readexactly(len(PROXY_V2_SIG) - 5 + 4)
        if head + rest[:7] != PROXY_V2_SIG:
            raise ValueError("bad PROXY v2 signature")
        fam = rest[8]
        (length,) = struct.unpack("!H", rest[9:11])
        body = await reader.readexactly(length)
        if fam >> 4 == 1 and length >= 12:
            src, dst = body[0:4], body[4:8]
            sport, dport = struct.unpack("!HH", body[8:12])
            return {
                "version": 2,
                "src": str(ipaddress.IPv4Address(src)),
                "dst": str(ipaddress.IPv4Address(dst)),
                "src_port": sport,
                "dst_port": dport,
            }
        if fam >> 4 == 2 and length >= 36:
            sport, dport = struct.unpack("!HH", body[32:36])
            return {
                "version": 2,
                "src": str(ipaddress.IPv6Address(body[0:16])),
                "dst": str(ipaddress.IPv6Address(body[16:32])),
                "src_port": sport,
                "dst_port": dport,
            }
        return {"version": 2, "src": None}  # LOCAL command (health checks)
    reader.unread(head)  # not a PROXY header
    return None


class Backend:
    def __init__(
        self, name: str, kind: str, proxy_protocol: bool, set_cookie: str | None = None
    ) -> None:
        self.name = name
        self.kind = kind
        self.proxy_protocol = proxy_protocol
        self.set_cookie = set_cookie
        self.requests = 0

    def _session_cookie(self, lower: dict[str, str]) -> bytes:
        """A Set-Cookie header opening a session, unless the request already has one."""
        if not self.set_cookie:
            return b""
        sent = [c.strip().partition("=")[0] for c in lower.get("cookie", "").split(";")]
        if self.set_cookie in sent:
            return b""
        value = f"{self.name}-{os.urandom(4).hex()}"
        return f"Set-Cookie: {self.set_cookie}={value}; Path=/\r\n".encode()

    async def handle(self, raw: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reader = Stream(raw)
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if peer else None
        tls_client = _subject(writer.get_extra_info("peercert"))
        try:
            proxy = await read_proxy_header(reader) if self.proxy_protocol else None
            if self.kind == "echo":
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            elif self.kind == "tcp":
                facts = {"server": self.name, "client": client, "proxy": proxy}
                writer.write(json.dumps(facts).encode() + b"\n")
                await writer.drain()
            else:
                await self.http(reader, writer, client, proxy, tls_client)
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            ValueError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()

    async def http(
        self,
        reader: Stream,
        writer: asyncio.StreamWriter,
        client: str | None,
        proxy: dict[str, Any] | None,
        tls_client: str | None = None,
    ) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # peer closed between requests (or a bare TCP health check)
            lines = head.decode("latin-1").split("\r\n")
            method, path, version = [*lines[0].split(" "), "", "", ""][:3]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    key, _, value = line.partition(":")
                    headers[key.strip()] = value.strip()
            lower = {k.lower(): v for k, v in headers.items()}
            length = int(lower.get("content-length", "0") or 0)
            body = await reader.readexactly(length) if length else b""
            self.requests += 1
            payload = json.dumps(
                {
                    "server": self.name,
                    "method": method,
                    "path": path,
                    "headers": headers,
                    "client": client,
                    "proxy": proxy,
                    "body_length": len(body),
                    "tls_client": tls_client,
                    "requests": self.requests,
                }
            ).encode()
            close = lower.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\nX-Backend: {self.name}\r\n".encode()
                + (b"Connection: close\r\n" if close else b"")
                + self._session_cookie(lower)
                + b"\r\n"
                + (payload if method != "HEAD" else b"")
            )
            await writer.drain()
            if close:
                return


def _subject(cert: Any) -> str | None:
    if not cert:
        return None
    return ",".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls_cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert)
    if args.tls_client_ca:
        context.load_verify_locations(args.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def serve(args: argparse.Namespace) -> None:
    backend = Backend(args.name, args.kind, args.proxy_protocol, args.set_cookie)
    server = await asyncio.start_server(
        backend.handle,
        host=args.ip,
        port=args.port,
        reuse_address=True,
        limit=MAX_HEADER,
        ssl=_tls_context(args),
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--ip", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=("http", "tcp", "echo"), default="http")
    parser.add_argument("--proxy-protocol", action="store_true")
    parser.add_argument("--set-cookie", metavar="NAME", help="open sessions with this cookie")
    parser.add_argument("--tls-cert", metavar="PEM", help="serve TLS: certificate and key")
    parser.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
