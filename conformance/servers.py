"""Start the two servers the conformance check compares, and stop them again.

* Octavia: `conformance/octavia_server.py` under Octavia's own virtualenv
  (`.venv-octavia`, made by `make conformance`), noauth, the amphora provider on
  no-op compute/network/amphora drivers, its worker in the same process.
* OpenHA: `openha up --no-agent` (API and controller) with `OPENHA_AUTH=noauth` and
  the `noop` provider, on SQLite in the same temporary directory, its observer idle
  (Octavia runs no health manager here).

Both listen on free loopback ports; their output goes to log files next to the
databases, which `--keep` leaves in place for a look after a failed run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
OCTAVIA_PYTHON = ROOT / ".venv-octavia" / "bin" / "python"
OPENHA_BIN = Path(sys.executable).parent / "openha"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One API under test: its base URL and the process serving it."""

    name: str
    base: str
    # The name this deployment gives its default provider (normalised in comparisons).
    provider: str
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> id
    load_balancers: list[str] = field(default_factory=list)  # aliases of live ones

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    # A new session: terminate() reaches this process alone, never the caller's group.
    return subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
    )


def start_octavia(state: Path) -> Server:
    if not OCTAVIA_PYTHON.exists():
        raise SystemExit(
            f"{OCTAVIA_PYTHON} is missing: `make conformance` installs Octavia 19 there"
        )
    port = free_port()
    directory = state / "octavia"
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "stdout.log"
    cmd = [str(OCTAVIA_PYTHON), str(ROOT / "conformance" / "octavia_server.py"), str(directory)]
    proc = _start([*cmd, str(port)], log)
    return Server("octavia", f"http://127.0.0.1:{port}", "amphora", proc, log)


def start_openha(state: Path, auth: dict[str, str] | None = None) -> Server:
    """`auth`: OPENHA_* settings replacing noauth (Keystone mode for the tempest run)."""
    port = free_port()
    directory = state / "openha"
    directory.mkdir(parents=True, exist_ok=True)
    env = (
        {key: value for key, value in os.environ.items() if not key.startswith("OPENHA_")}
        | {
            "OPENHA_AUTH": "noauth",
            "OPENHA_DEFAULT_PROVIDER": "noop",
            "OPENHA_STATE_DIR": str(directory),
            "OPENHA_API_BIND": f"127.0.0.1:{port}",
            "OPENHA_LOG_LEVEL": "warning",
            # No health manager runs beside Octavia here, so nothing ever observes its
            # objects: OpenHA's observer stays idle too, and both answer with the operating
            # statuses their API and controller write (compared as they are).
            "OPENHA_OBSERVE_INTERVAL": "86400",
        }
        | (auth or {})
    )
    log = directory / "stdout.log"
    proc = _start([str(OPENHA_BIN), "up", "--no-agent"], log, env)
    return Server("openha", f"http://127.0.0.1:{port}", "noop", proc, log)


def wait_ready(server: Server, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            tail = server.log.read_text(errors="replace")[-3000:] if server.log else ""
            raise SystemExit(f"{server.name} exited while starting:\n{tail}")
        try:
            if httpx.get(f"{server.base}/", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{server.name} did not answer within {timeout:.0f} s (log: {server.log})")
