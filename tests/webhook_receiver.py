"""A real HTTP server receiving webhook deliveries, for the tests: it checks each
signature as a receiver should (`openha.domain.webhooks.verify`) and records them.

It can answer errors (`status`), be stopped and started again on the same port
(a receiver that is down), and be bound in a lab namespace's reach (127.0.0.1:
the controller runs in the test process).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from openha.domain.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify

SECRET = "a-webhook-secret-for-the-tests-0123456789"


@dataclass
class Received:
    at: float  # time.time() when it arrived
    headers: dict[str, str]
    body: bytes
    signed: bool  # the signature verified with SECRET

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def event(self) -> dict[str, Any]:
        return dict(self.payload["event"])


class Receiver:
    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.received: list[Received] = []
        self.status = 204
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items()}
                signed = verify(receiver.secret, headers.get(SIGNATURE_HEADER, ""), body)
                with receiver.lock:
                    receiver.received.append(Received(time.time(), headers, body, signed))
                    status = receiver.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def running(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self, kind: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.received if kind is None or r.event["kind"] == kind]

    def deliveries(self) -> set[str]:
        with self.lock:
            return {r.headers.get(DELIVERY_HEADER, "") for r in self.received}
