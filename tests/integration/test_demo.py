"""`openha demo` and `openha demo --clean`, run as real commands against a Stack's API.

The demo must leave a load balancer that answers `curl http://<vip>/` from the
host itself, served by three web servers that outlive the command; running it
again must not build a second one; `--clean` must leave nothing behind: no
namespaces, links, processes or API objects.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pyroute2 import IPRoute, netns
from stack import Stack

from openha import clouds
from openha.demo import DEMO_FILE, clean_demo
from openha.lab import Lab, cleanup_stale

pytestmark = pytest.mark.integration

OPENHA = str(Path(sys.executable).parent / "openha")


@pytest.fixture
def stack(lab: Lab) -> Iterator[Stack]:
    stack = Stack(lab)
    try:
        stack.add_agent()
        yield stack
    finally:
        stack.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """Names for this run's bridge and namespaces: never the user's own demo ("ohdemo")."""
    prefix = "ohd" + os.urandom(2).hex()
    try:
        yield prefix
    finally:
        cleanup_stale(prefix)  # after a failure: anything still carrying the names


@pytest.fixture
def state_dir(stack: Stack, prefix: str) -> Iterator[Path]:
    """An `openha up`-like state directory whose clouds.yaml points at the Stack."""
    path = Path(tempfile.mkdtemp(prefix="ohd-", dir="/tmp"))
    # Traversable (not listable) for keepalived's unprivileged script user.
    path.chmod(0o711)
    clouds.write(path / clouds.FILE_NAME, stack.url, stack.admin.headers["X-Auth-Token"])
    try:
        yield path
    finally:
        # After a failure: remove what the demo recorded (API objects, processes too).
        if (path / DEMO_FILE).exists():
            clean_demo(path, stack.url, stack.admin.headers["X-Auth-Token"])
        shutil.rmtree(path, ignore_errors=True)


def demo(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENHA_STATE_DIR": str(state_dir), "COLUMNS": "200"}
    return subprocess.run(
        [OPENHA, "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )


def alive(pid: int) -> bool:
    try:
        return b"openha.lab.backend" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def local_names(prefix: str) -> list[str]:
    with IPRoute() as ipr:
        links = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    return [n for n in [*links, *netns.listnetns()] if n.startswith(prefix)]


def test_demo_then_clean(stack: Stack, state_dir: Path, prefix: str) -> None:
    made = demo(state_dir, "--prefix", prefix)
    assert made.returncode == 0, made.stdout + made.stderr
    record = json.loads((state_dir / DEMO_FILE).read_text())
    vip = record["vip"]
    assert f"curl http://{vip}/" in made.stdout
    for word in ("loadbalancer", "listener", "pool", "healthmonitor", "member", "ONLINE"):
        assert word in made.stdout, made.stdout

    # The servers outlived `openha demo`, and the host reaches the VIP like curl would.
    pids = [s["pid"] for s in record["servers"]]
    assert len(pids) == 3 and all(alive(pid) for pid in pids)
    seen = {
        httpx.get(f"http://{vip}/", timeout=5, trust_env=False).json()["server"] for _ in range(9)
    }
    assert seen == {"web1", "web2", "web3"}
    if shutil.which("curl"):
        out = subprocess.run(
            ["curl", "-sS", "--noproxy", "*", "-m", "5", f"http://{vip}/"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert out.returncode == 0 and json.loads(out.stdout)["server"] in seen, out.stderr

    again = demo(state_dir, "--prefix", prefix)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "exists" in again.stdout and f"curl http://{vip}/" in again.stdout
    lbs = stack.admin.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]
    assert [lb["id"] for lb in lbs] == [record["lb_id"]]

    gone = demo(state_dir, "--clean")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not (state_dir / DEMO_FILE).exists()
    assert stack.admin.get("/v2/lbaas/loadbalancers").json()["loadbalancers"] == []
    nets = stack.admin.get("/v2.0/networks").json()["networks"]
    assert record["network_id"] not in {n["id"] for n in nets} and len(nets) == 1
    subnets = stack.admin.get("/v2.0/subnets").json()["subnets"]
    assert [s["id"] for s in subnets] == [stack.subnet_id]
    assert stack.admin.get("/v2.0/ports").json()["ports"] == []
    assert not any(alive(pid) for pid in pids)
    assert local_names(prefix) == []
    agent = stack.agents[0]
    assert agent.instance_dirs() == [] and agent.data_plane_pids() == []

    again = demo(state_dir, "--clean")
    assert again.returncode == 0 and "No demo" in again.stdout
