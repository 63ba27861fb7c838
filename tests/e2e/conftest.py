"""End-to-end fixtures: real `openha api` and `openha controller` processes, real clients.

One OpenHA per test session: the two services run as separate processes (in
their own process groups, killed at teardown whatever happens) against a
SQLite database in a temporary state directory, with the noop provider. A
shared network and subnet are created through the API as an admin, and a
clouds.yaml is written exactly as `openha up` writes it, so openstacksdk and
the `openstack` CLI are driven with their stock configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from openha import allinone, clouds, db

BIN = Path(sys.executable).parent
SUBNET_NAME = "e2e-vip"
SUBNET_CIDR = "198.51.100.0/24"
START_TIMEOUT = 30.0
CLI_TIMEOUT = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@dataclass
class OpenHA:
    """A running OpenHA: where it listens, how to reach it, where its logs are."""

    state_dir: Path
    endpoint: str
    admin_token: str
    clouds_path: Path
    env: dict[str, str]
    logs: dict[str, Path] = field(default_factory=dict)
    network_id: str = ""
    subnet_id: str = ""

    def client_env(self) -> dict[str, str]:
        """The environment for OpenStack clients: only our clouds.yaml, no stray OS_*."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env["OS_CLIENT_CONFIG_FILE"] = str(self.clouds_path)
        env["OS_CLOUD"] = clouds.CLOUD_NAME
        return env

    def log_tails(self) -> str:
        return "\n".join(f"--- {name} ({path})\n{_tail(path)}" for name, path in self.logs.items())

    def admin_request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(
            method,
            self.endpoint + path,
            json=body,
            headers={"X-Auth-Token": self.admin_token},
            timeout=10,
        )

    def openstack(self, *args: str, expect_json: bool = True) -> Any:
        """Run the real `openstack` CLI; fail with its output (and our logs) when it fails."""
        argv = [str(BIN / "openstack"), *args]
        if expect_json:
            argv += ["-f", "json"]
        try:
            proc = subprocess.run(
                argv,
                env=self.client_env(),
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"`openstack {' '.join(args)}` timed out after {CLI_TIMEOUT:.0f} s\n"
                f"{self.log_tails()}"
            ) from exc
        if proc.returncode != 0:
            raise AssertionError(
                f"`openstack {' '.join(args)}` failed ({proc.returncode}):\n"
                f"{proc.stderr.strip()}\n{proc.stdout.strip()}"
            )
        if not expect_json:
            return proc.stdout
        return json.loads(proc.stdout) if proc.stdout.strip() else None


def _start(
    name: str, argv: list[str], env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    log_file = log_path.open("wb")
    try:
        return subprocess.Popen(
            argv,
            # Die with the test run even if it is killed before its teardown runs.
            env={**env, "OPENHA_PARENT_PID": str(os.getpid())},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log_file.close()


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Anything the service started in its group goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_ready(openha: OpenHA, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{proc.args!r} exited with {proc.returncode}\n{openha.log_tails()}"
                )
        try:
            if httpx.get(openha.endpoint + "/", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the API did not answer in {START_TIMEOUT:.0f} s\n{openha.log_tails()}")


def _create_vip_subnet(openha: OpenHA) -> None:
    resp = openha.admin_request(
        "POST",
        "/v2.0/networks",
        {
            "network": {
                "name": "e2e-public",
                "shared": True,
                "provider:network_type": "flat",
                "provider:physical_network": "ohe2e-br",
            }
        },
    )
    assert resp.status_code == 201, resp.text
    openha.network_id = resp.json()["network"]["id"]
    resp = openha.admin_request(
        "POST",
        "/v2.0/subnets",
        {
            "subnet": {
                "name": SUBNET_NAME,
                "network_id": openha.network_id,
                "cidr": SUBNET_CIDR,
                "ip_version": 4,
            }
        },
    )
    assert resp.status_code == 201, resp.text
    openha.subnet_id = resp.json()["subnet"]["id"]


@pytest.fixture(scope="session")
def openha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenHA]:
    executable = BIN / "openha"
    if not executable.exists():
        pytest.skip(f"{executable} is not installed (run `make setup`)")
    state_dir = tmp_path_factory.mktemp("openha-e2e")
    database_url = f"sqlite:///{state_dir / 'openha.db'}"
    bind = f"127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENHA_", "OS_"))}
    env.update(
        OPENHA_STATE_DIR=str(state_dir),
        OPENHA_DATABASE_URL=database_url,
        OPENHA_API_BIND=bind,
        OPENHA_DEFAULT_PROVIDER="noop",
        OPENHA_CONTROLLER_INTERVAL="0.2",
        OPENHA_AUTH="token",
    )
    # Migrate once before both services start, as `openha up` does, so that they
    # never race to create the schema.
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    try:
        endpoint = clouds.endpoint_for_bind(bind)
        clouds_path = state_dir / clouds.FILE_NAME
        token, _ = allinone.ensure_clouds_yaml(
            db.make_session_factory(engine), clouds_path, endpoint
        )
    finally:
        engine.dispose()

    openha = OpenHA(state_dir, endpoint, token, clouds_path, env)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("api", "controller"):
            openha.logs[name] = state_dir / f"{name}.log"
            procs.append(_start(name, [str(executable), name], env, openha.logs[name]))
        _wait_ready(openha, procs)
        _create_vip_subnet(openha)
        yield openha
    finally:
        _stop(procs)
