"""`openha up` as `make run` starts it: bootstrap, clouds.yaml that the CLI accepts, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from openha import clouds
from tests.e2e.conftest import BIN, _free_port

pytestmark = pytest.mark.e2e


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(x) for x in out.stdout.split()]


def _wait(predicate: object, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout} s\n{log.read_text(errors='replace')}")


def test_openha_up_bootstraps_supervises_and_stops(tmp_path: Path) -> None:
    bind = f"127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENHA_", "OS_"))}
    env.update(OPENHA_STATE_DIR=str(tmp_path / "var"), OPENHA_API_BIND=bind)
    log = tmp_path / "up.log"
    endpoint = clouds.endpoint_for_bind(bind)
    clouds_path = tmp_path / "var" / "clouds.yaml"

    def up() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [str(BIN / "openha"), "up", "--no-agent"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def api_up() -> bool:
        try:
            return httpx.get(endpoint + "/", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    proc = up()
    try:
        _wait(api_up, 30, "API answering", log)
        assert clouds_path.stat().st_mode & 0o777 == 0o600
        first = clouds.read(clouds_path)
        assert first is not None and first[0] == endpoint

        client_env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        client_env["OS_CLIENT_CONFIG_FILE"] = str(clouds_path)
        listed = subprocess.run(
            [str(BIN / "openstack"), "--os-cloud", "openha", "loadbalancer", "list", "-f", "json"],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.strip() == "[]"

        # A child that dies is restarted.
        children = _children_of(proc.pid)
        assert len(children) == 2, children  # api and controller, no agent
        os.kill(children[-1], signal.SIGKILL)
        _wait(
            lambda: (
                "restarting in" in log.read_text(errors="replace")
                and len(_children_of(proc.pid)) == 2
            ),
            10,
            "restart of the killed child",
            log,
        )

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert _children_of(proc.pid) == []
        assert not api_up()
        assert "all services stopped" in log.read_text()

        # A restart reuses the admin token while it still authenticates.
        proc = up()
        _wait(api_up, 30, "API answering after a restart", log)
        assert clouds.read(clouds_path) == first
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
