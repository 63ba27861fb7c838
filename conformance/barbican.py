"""A real Barbican for the tests, behind a real Keystone (`conformance.keystone`).

Barbican from PyPI lives in its own virtualenv (`.venv-barbican`, made by
`make barbican-venv`: its pins differ from OpenHA's and from Keystone's). Its
`simple_crypto` plugin (a random key-encryption key of the run's own) on a SQLite
file of the run's own (`db_auto_create`), keystonemiddleware in front (its own
service user, `barbican`, admin of the `service` project), the stock paste
pipeline, its WSGI application served by wsgiref on a free loopback port, one
request at a time. Registered in the Keystone catalogue as the `key-manager`
service. Barbican reads its configuration from the default places only (its
plugins parse their own copy), so the run's file is `$HOME/.barbican/barbican.conf`
with HOME set to the run's directory.

    with Barbican.started(tmp_path, ks) as bb:
        bb.url            # http://127.0.0.1:<port>
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from conformance.keystone import Keystone, free_port
from openha.keystone_register import Keystone as KeystoneClient

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("OPENHA_BARBICAN_VENV", ROOT / ".venv-barbican"))
SERVICE_USER = "barbican"
SERVICE_PASSWORD = "barbican-service-secret"

_SERVE = textwrap.dedent(
    """
    import os, sys
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
    from paste import deploy

    class Server(WSGIServer):
        request_queue_size = 128

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    app = deploy.loadapp("config:" + sys.argv[1])
    make_server("127.0.0.1", int(os.environ["BARBICAN_PORT"]), app, Server, Quiet).serve_forever()
    """
)


def available() -> bool:
    return (VENV / "bin" / "python").exists() and (VENV / "etc" / "barbican").is_dir()


class Barbican:
    def __init__(self, directory: Path, ks: Keystone) -> None:
        self.dir = directory
        self.ks = ks
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = directory / ".barbican" / "barbican.conf"
        self.log = directory / "barbican.log"
        self.server_log = directory / "barbican-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextlib.contextmanager
    def started(cls, directory: Path, ks: Keystone) -> Iterator[Barbican]:
        bb = cls(directory, ks)
        try:
            bb.start()
            yield bb
        finally:
            bb.stop()

    def _register(self) -> None:
        """Barbican's service user (keystonemiddleware's) and its catalogue entry."""
        admin = KeystoneClient(self.ks.url, "admin", self.ks.admin_password, "admin", "Default")
        try:
            domain = admin.domain_id("Default")
            service_project = admin.project("service", domain)
            user = admin.user(SERVICE_USER, SERVICE_PASSWORD, domain, service_project)
            admin.grant(service_project, user, admin.role("admin"))
            service = admin.ensure(
                "services",
                "service",
                {"name": "barbican", "type": "key-manager", "enabled": True},
                name="barbican",
            )
            for interface in ("public", "internal", "admin"):
                admin.ensure(
                    "endpoints",
                    "endpoint",
                    {
                        "service_id": service,
                        "interface": interface,
                        "url": self.url,
                        "region_id": "RegionOne",
                    },
                    service_id=service,
                    interface=interface,
                )
        finally:
            admin.close()

    def start(self) -> None:
        if not available():
            raise RuntimeError(f"{VENV} has no barbican: run `make barbican-venv`")
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        kek = base64.b64encode(os.urandom(32)).decode()
        self.conf.write_text(
            textwrap.dedent(
                f"""
                [DEFAULT]
                host_href = {self.url}
                log_file = {self.log}
                db_auto_create = True
                [database]
                connection = sqlite:///{self.dir / "barbican.db"}
                [secretstore]
                enabled_secretstore_plugins = store_crypto
                [crypto]
                enabled_crypto_plugins = simple_crypto
                [simple_crypto_plugin]
                kek = {kek}
                [keystone_authtoken]
                www_authenticate_uri = {self.ks.url}
                auth_url = {self.ks.url}
                auth_type = password
                username = {SERVICE_USER}
                password = {SERVICE_PASSWORD}
                project_name = service
                user_domain_name = Default
                project_domain_name = Default
                """
            )
        )
        self.conf.chmod(0o600)
        self._register()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "OPENHA_"))}
        env |= {"HOME": str(self.dir), "BARBICAN_PORT": str(self.port)}
        paste = VENV / "etc" / "barbican" / "barbican-api-paste.ini"
        with self.server_log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(VENV / "bin" / "python"), "-c", _SERVE, str(paste)],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"barbican exited:\n{self.server_log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/", timeout=2).status_code in (200, 300):
                    return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("barbican did not answer within 120 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
