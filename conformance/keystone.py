"""A real Keystone for the tests and `make conformance`, in a temporary directory.

Keystone from PyPI lives in its own virtualenv (`.venv-keystone`, made by
`make keystone-venv`: its pins differ from OpenHA's): a SQLite file of the run's
own (write-ahead log, no fsync: a test database), fernet tokens, its in-memory
cache, `keystone-manage db_sync`, `fernet_setup`, `credential_setup` and
`bootstrap`, then its WSGI application served by wsgiref, one request at a time,
on a free loopback port. `Keystone.stop()` ends the server; the directory goes
with the caller's temp dir.

    with Keystone.started(tmp_path) as ks:
        ks.url            # http://127.0.0.1:<port>/v3
        ks.admin_password
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import sqlite3
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("OPENHA_KEYSTONE_VENV", ROOT / ".venv-keystone"))
ADMIN_PASSWORD = "keystone-admin-secret"

# keystone's WSGI application under the standard library's server: enough for tests,
# and nothing more to install. One request at a time: concurrent writes to SQLite
# fail with "database is locked" (tempest creates and deletes users in parallel);
# with its cache each takes tens of milliseconds.
_SERVE = textwrap.dedent(
    """
    import os
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from keystone.server.wsgi import initialize_public_application

    class Server(WSGIServer):
        request_queue_size = 128

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    app = initialize_public_application()
    make_server("127.0.0.1", int(os.environ["KEYSTONE_PORT"]), app, Server, Quiet).serve_forever()
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def available() -> bool:
    return (VENV / "bin" / "keystone-manage").exists()


class Keystone:
    def __init__(
        self, directory: Path, token_expiration: int = 3600, name: str = "keystone"
    ) -> None:
        self.dir = directory
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/v3"
        self.admin_password = ADMIN_PASSWORD
        self.token_expiration = token_expiration
        self.conf = directory / f"{name}.conf"
        self.db = directory / "keystone.db"
        self.log = directory / f"{name}.log"
        self.server_log = directory / f"{name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextlib.contextmanager
    def started(cls, directory: Path, token_expiration: int = 3600) -> Iterator[Keystone]:
        ks = cls(directory, token_expiration)
        try:
            ks.start()
            yield ks
        finally:
            ks.stop()

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "OPENHA_"))}
        return env | {"OS_KEYSTONE_CONFIG_FILES": str(self.conf)}

    def _manage(self, *commands: list[str]) -> None:
        """`keystone-manage` commands, run in one process (importing keystone is slow)."""
        base = ["keystone-manage", "--config-file", str(self.conf)]
        script = "from keystone.cmd import cli\n" + "".join(
            f"cli.CONF.clear()\ncli.main(argv={[*base, *args]!r})\n" for args in commands
        )
        done = subprocess.run(
            [str(VENV / "bin" / "python"), "-c", script],
            env=self._env(), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"keystone-manage failed:\n{done.stderr[-3000:]}")

    def _keys(self, name: str) -> None:
        """A key repository as `fernet_setup` / `credential_setup` make it: key 0 staged,
        key 1 primary (32 random bytes each, url-safe base64)."""
        repo = self.dir / name
        repo.mkdir(mode=0o700, exist_ok=True)
        for index in (0, 1):
            path = repo / str(index)
            path.write_bytes(base64.urlsafe_b64encode(os.urandom(32)))
            path.chmod(0o600)

    def start(self) -> None:
        if not available():
            raise RuntimeError(f"{VENV} has no keystone: run `make keystone-venv`")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_conf()
        self._keys("fernet-keys")
        self._keys("credential-keys")
        self._manage(
            ["db_sync"],
            [
                "bootstrap",
                "--bootstrap-password", self.admin_password,
                "--bootstrap-admin-url", self.url,
                "--bootstrap-public-url", self.url,
                "--bootstrap-internal-url", self.url,
                "--bootstrap-region-id", "RegionOne",
            ],
        )  # fmt: skip
        # Readers never wait for a writer (the e2e tests' sibling server reads it too);
        # the mode stays with the file.
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            db.execute("PRAGMA journal_mode=WAL")
        self.serve()

    @contextlib.contextmanager
    def sibling(self, token_expiration: int) -> Iterator[Keystone]:
        """A second server of the same Keystone (database, keys) issuing tokens that
        expire after `token_expiration` seconds: the first one validates them."""
        other = Keystone(self.dir, token_expiration, name=f"keystone-{token_expiration}s")
        try:
            other._write_conf()
            other.serve()
            yield other
        finally:
            other.stop()

    def _write_conf(self) -> None:
        self.conf.write_text(
            textwrap.dedent(
                f"""
                [DEFAULT]
                log_file = {self.log}
                [database]
                connection = sqlite:///{self.db}
                # A test database: no fsync per commit.
                sqlite_synchronous = false
                [token]
                provider = fernet
                expiration = {self.token_expiration}
                [fernet_tokens]
                key_repository = {self.dir / "fernet-keys"}
                [fernet_receipts]
                # Keystone 30's bootstrap checks this one too; both default to one
                # repository in a packaged Keystone, so they share it here as well.
                key_repository = {self.dir / "fernet-keys"}
                [credential]
                key_repository = {self.dir / "credential-keys"}
                [cache]
                # As Keystone is deployed (devstack's memcached): without it every token
                # validation reads every role assignment again, hundreds of queries that
                # took seconds once tempest had made its users. One process serves every
                # request (a sibling server only issues tokens), so memory is coherent.
                enabled = true
                backend = dogpile.cache.memory
                [identity]
                # The fewest bcrypt rounds: every password check costs little (tests only).
                password_hash_rounds = 4
                """
            )
        )

    def serve(self) -> None:
        """Start the server (again, after `stop()`: same port, same database)."""
        out = self.server_log.open("wb")
        self.process = subprocess.Popen(
            [str(VENV / "bin" / "python"), "-c", _SERVE],
            env=self._env() | {"KEYSTONE_PORT": str(self.port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = self.server_log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"keystone exited while starting:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"keystone did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
