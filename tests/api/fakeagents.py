"""Stand-in agents for controller tests: one that applies anything at once, one that hangs.

`FakeAgent` answers the controller's calls as a healthy agent would (every PUT
applied, every DELETE done, /v1/healthz up) and records them; `HungAgent`
accepts connections and never answers, like an agent whose process is stopped.
Both listen on 127.0.0.1 and are closed by the tests that start them.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeAgent:
    """`delay`: seconds each PUT takes; `spans` records (instance id, start, end) of
    every PUT and `most_at_once` the most PUTs under way together."""

    def __init__(self, delay: float = 0.0) -> None:
        self.applied: list[tuple[str, int]] = []
        self.deleted: list[str] = []
        self.retired: list[str] = []
        self.spans: list[tuple[str, float, float]] = []
        self.most_at_once = 0
        self._at_once = 0
        self._lock = threading.Lock()
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _answer(self, code: int, body: dict[str, Any] | None = None) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.startswith("/v1/instances/"):
                    # Serving until retired (a retired one drained at once).
                    inst = self.path.rsplit("/", 1)[-1]
                    running = inst not in agent.retired and inst not in agent.deleted
                    self._answer(200, {"instance_id": inst, "haproxy_running": running})
                    return
                self._answer(200, {"status": "ok"})

            def do_POST(self) -> None:
                inst = self.path.split("/")[3]
                agent.retired.append(inst)
                self._answer(200, {"instance_id": inst, "haproxy_running": False})

            def do_PUT(self) -> None:
                spec = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                start = time.monotonic()
                with agent._lock:
                    agent._at_once += 1
                    agent.most_at_once = max(agent.most_at_once, agent._at_once)
                time.sleep(delay)
                with agent._lock:
                    agent._at_once -= 1
                    agent.spans.append((spec["instance_id"], start, time.monotonic()))
                agent.applied.append((spec["instance_id"], spec["generation"]))
                self._answer(
                    200,
                    {
                        "instance_id": spec["instance_id"],
                        "applied_generation": spec["generation"],
                        "state": "ACTIVE",
                    },
                )

            def do_DELETE(self) -> None:
                agent.deleted.append(self.path.rsplit("/", 1)[-1])
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HungAgent:
    """Connections are accepted by the kernel and never read: every call times out."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()
