"""Operators' repairs on a real data plane, under a steady client loop: sync after a hand
edit or a deleted namespace, force-recover of an LB in ERROR whose HAProxy was killed,
dry runs that change nothing, and export → delete → import serving the same traffic.

One Stack (API, controller, one real agent), lab and set of backends serve the
module; an autouse fixture deletes every LB afterwards, even on failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lbhelpers import TrafficLoop, delete_lb, http_lb, served_by, wait_answers
from stack import PROJECT, Agent, Stack, wait_for
from typer.testing import CliRunner

from openha import cli
from openha.agent.netns import namespace_exists
from openha.agent.paths import instance_paths, namespace_name
from openha.agent.sandbox import RECORD
from openha.db import transaction
from openha.lab import BackendServer, ClientNamespace, Lab
from openha.models import Instance, LoadBalancer
from openha.render.haproxy import SANDBOX_GID_ENV, SANDBOX_UID_ENV

pytestmark = pytest.mark.integration


@dataclass
class World:
    lab: Lab
    stack: Stack
    agent: Agent
    client: ClientNamespace
    web: list[BackendServer]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with Lab() as lab:
        stack = Stack(lab)
        try:
            agent = stack.add_agent()
            web = [BackendServer(lab, f"web{i}") for i in (1, 2, 3)]
            yield World(lab, stack, agent, ClientNamespace(lab, "c1"), web)
        finally:
            stack.close()


@pytest.fixture(autouse=True)
def _delete_lbs(world: World) -> Iterator[None]:
    yield
    stack = world.stack
    for lb in stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]:
        delete_lb(stack, lb["id"])


def serving_lb(world: World, **lb: Any) -> tuple[dict[str, Any], str]:
    made = http_lb(world.stack, world.web, lb=lb or None)
    url = f"http://{made['lb']['vip_address']}/"
    wait_answers(world.client, url)
    return made, url


def instance_dir(agent: Agent) -> Path:
    (found,) = agent.instance_dirs()
    return found


def servers(loop: TrafficLoop, n: int = 30) -> set[str]:
    """The backends that served the loop's next `n` requests."""
    before = loop.served.copy()
    loop.wait_requests(n)
    return {name for name, count in (loop.served - before).items() if count}


def action(stack: Stack, lb_id: str, name: str) -> dict[str, Any]:
    """Start the repair and wait for its operation to end: the operation."""
    resp = stack.admin.post(f"/v2/manage/loadbalancers/{lb_id}/{name}")
    assert resp.status_code == 202, resp.text
    location = resp.headers["Location"]

    def over() -> dict[str, Any] | None:
        op = stack.admin.get(location).json()["operation"]
        return dict(op) if op["state"] in ("SUCCEEDED", "FAILED") else None

    return dict(wait_for(over, 60, what=f"{name} of {lb_id} over"))


def repaired(op: dict[str, Any]) -> list[dict[str, Any]]:
    """What the repair did, step by step (the operation's bookkeeping aside)."""
    return [s for s in op["steps"] if "ok" in s]


def diff(stack: Stack, lb_id: str) -> dict[str, Any]:
    resp = stack.admin.get(f"/v2/manage/loadbalancers/{lb_id}/diff")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_sync_repairs_a_hand_edited_config_under_a_client_loop(world: World) -> None:
    stack = world.stack
    made, url = serving_lb(world)
    lb_id = made["lb"]["id"]
    assert diff(stack, lb_id) == {
        "load_balancer_id": lb_id,
        "in_sync": True,
        "unreachable": [],
        "diff": "",
    }
    directory = instance_dir(world.agent)
    config = directory / "haproxy.cfg"
    with TrafficLoop(world.client, url) as loop:
        assert servers(loop) == {"web1", "web2", "web3"}
        # An operator's hand edit: two servers commented out, then a reload by hand.
        text = config.read_text()
        # (The members' servers, not the log ring's.)
        lines = [m.start() for m in re.finditer(r"^    server (?!syslog )", text, re.M)]
        assert len(lines) == 3
        edited = text[: lines[1]] + "#" + text[lines[1] : lines[2]] + "#" + text[lines[2] :]
        config.write_text(edited)
        ns = namespace_name(directory.name)
        old = int((directory / "haproxy.pid").read_text())
        # As the agent starts it: the config's uid and gid lines read the instance's uid.
        uid = str(json.loads((directory / RECORD).read_text())["uid"])
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "haproxy",
                "-D",
                "-p",
                str(directory / "haproxy.pid"),
                "-f",
                str(config),
                "-x",
                str(directory / "stats.sock"),
                "-sf",
                str(old),
            ],
            check=True,
            cwd=directory,
            env={**os.environ, SANDBOX_UID_ENV: uid, SANDBOX_GID_ENV: uid},
        )
        wait_for(lambda: len(servers(loop)) == 1, 20, what="the hand-edited config serving")
        drift = diff(stack, lb_id)
        assert drift["in_sync"] is False
        assert re.search(r"^-#    server ", drift["diff"], re.M), drift["diff"]
        assert re.search(r"^\+    server ", drift["diff"], re.M), drift["diff"]
        shown = cli_run(stack, "diff", made["lb"]["name"] or lb_id)
        assert shown.exit_code == 1 and drift["diff"] in shown.stdout, shown.output

        report = action(stack, lb_id, "sync")
        assert report["state"] == "SUCCEEDED", report
        assert [s["step"] for s in repaired(report)] == ["render", "push"]
        wait_for(lambda: servers(loop) == {"web1", "web2", "web3"}, 20, what="all three serving")
        assert config.read_text() == text
        assert diff(stack, lb_id)["in_sync"] is True
        assert cli_run(stack, "diff", lb_id).exit_code == 0
        # A reload of every instance, hitless too.
        reloaded = cli_run(stack, "reload", lb_id)
        assert reloaded.exit_code == 0 and " reload " in reloaded.stdout, reloaded.output
        assert "FAIL" not in reloaded.stdout, reloaded.output
        loop.wait_requests(30)
    assert loop.failures == [], loop.failures[:5]
    assert loop.ok > 100
    # Both actions are in the audit trail, with the admin's roles.
    trail = stack.admin.get("/v2/manage/audit", params={"object_id": lb_id}).json()
    done = [
        (r["path"].rsplit("/", 1)[-1], r["status_code"], r["roles"])
        for r in trail["audit_records"]
        if r["roles"] == ["admin"]
    ]
    assert ("sync", 202, ["admin"]) in done and ("reload", 202, ["admin"]) in done
    listed = cli_run(stack, "audit", "--object", lb_id, "--method", "POST")
    assert listed.exit_code == 0 and f"/{lb_id}/sync by admin/" in listed.stdout, listed.output


def test_sync_rebuilds_a_deleted_namespace(world: World) -> None:
    stack = world.stack
    made, url = serving_lb(world)
    lb_id = made["lb"]["id"]
    ns = namespace_name(instance_dir(world.agent).name)
    with TrafficLoop(world.client, url) as loop:
        loop.wait_requests(20)
        subprocess.run(["ip", "netns", "delete", ns], check=True)
        report = action(stack, lb_id, "sync")
        assert report["state"] == "SUCCEEDED", report["steps"]
        assert namespace_exists(ns)
        # Serving again from the rebuilt namespace: every request after the sync lands.
        wait_answers(world.client, url)
        _, failed = loop.mark()
        loop.wait_requests(50)
        assert len(loop.failures) == failed, loop.failures[-5:]
    assert diff(stack, lb_id)["in_sync"] is True
    assert set(served_by(world.client, url, 9)) == {"web1", "web2", "web3"}


def test_force_recover_heals_an_lb_in_error_whose_haproxy_was_killed(world: World) -> None:
    stack = world.stack
    made, url = serving_lb(world)
    lb_id = made["lb"]["id"]
    directory = instance_dir(world.agent)
    with transaction(stack.sessions) as s:
        lb = s.get(LoadBalancer, lb_id)
        assert lb is not None
        lb.provisioning_status, lb.last_error = "ERROR", "operator test: broken"
        generation = lb.desired_generation
    os.kill(int((directory / "haproxy.pid").read_text()), signal.SIGKILL)
    assert stack.lb(lb_id)["provisioning_status"] == "ERROR"

    report = action(stack, lb_id, "force-recover")
    assert report["state"] == "SUCCEEDED", report
    steps = [s["step"] for s in repaired(report)]
    assert steps == ["clear_error", "render", "push", "reconcile"], steps
    assert "operator test: broken" in repaired(report)[0]["detail"]
    stack.wait_active(lb_id)
    wait_answers(world.client, url)
    assert set(served_by(world.client, url, 9)) == {"web1", "web2", "web3"}
    with transaction(stack.sessions) as s:
        lb = s.get(LoadBalancer, lb_id)
        assert lb is not None and lb.last_error is None
        assert lb.applied_generation == lb.desired_generation == generation + 1
        (inst,) = s.query(Instance).filter_by(load_balancer_id=lb_id).all()
        assert inst.applied_generation == generation + 1
    events = stack.admin.get("/v2/manage/events", params={"load_balancer_id": lb_id}).json()
    assert "loadbalancer.force_recovered" in {e["kind"] for e in events["events"]}


def desired_members(stack: Stack, pool_id: str) -> list[tuple[Any, ...]]:
    """The pool's members as stored (their operating status follows health checks)."""
    listed = stack.tenant.get(f"/v2/lbaas/pools/{pool_id}/members").json()["members"]
    keys = ("id", "address", "protocol_port", "weight", "admin_state_up", "provisioning_status")
    return sorted(tuple(m[k] for k in keys) for m in listed)


def test_a_dry_run_shows_the_diff_and_changes_nothing(world: World) -> None:
    stack = world.stack
    made, url = serving_lb(world)
    lb_id, pool_id = made["lb"]["id"], made["pool"]["id"]
    directory = instance_dir(world.agent)
    files = {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir() if p.is_file()
    }
    members = desired_members(stack, pool_id)
    with transaction(stack.sessions) as s:
        lb = s.get(LoadBalancer, lb_id)
        assert lb is not None
        generations = (lb.desired_generation, lb.applied_generation)

    added = stack.tenant.post(
        f"/v2/lbaas/pools/{pool_id}/members?dry_run=true",
        json={"member": {"address": "10.99.0.7", "protocol_port": 8080, "weight": 5}},
    )
    assert added.status_code == 201, added.text
    assert added.json()["member"]["provisioning_status"] == "PENDING_CREATE"
    plus = re.findall(r"^\+    server .*", added.json()["dry_run"]["diff"], re.M)
    assert len(plus) == 1 and "10.99.0.7:8080" in plus[0] and "weight 5" in plus[0], plus
    changed = stack.tenant.put(
        f"/v2/lbaas/pools/{pool_id}?dry_run=true",
        json={"pool": {"lb_algorithm": "LEAST_CONNECTIONS"}},
    )
    assert changed.status_code == 200, changed.text
    text = changed.json()["dry_run"]["diff"]
    assert "-    balance roundrobin" in text and "+    balance leastconn" in text, text
    member_id = made["members"][0]["id"]
    gone = stack.tenant.delete(f"/v2/lbaas/pools/{pool_id}/members/{member_id}?dry_run=true")
    assert gone.status_code == 200, gone.text
    assert len(re.findall(r"^-    server ", gone.json()["dry_run"]["diff"], re.M)) == 1
    whole = stack.tenant.delete(f"/v2/lbaas/loadbalancers/{lb_id}?cascade=true&dry_run=true")
    assert whole.status_code == 200 and "-frontend" in whole.json()["dry_run"]["diff"]

    # Nothing changed: rows, generations, the instance's files, the traffic.
    assert desired_members(stack, pool_id) == members
    assert stack.lb(lb_id)["provisioning_status"] == "ACTIVE"
    with transaction(stack.sessions) as s:
        lb = s.get(LoadBalancer, lb_id)
        assert lb is not None
        assert (lb.desired_generation, lb.applied_generation) == generations
    assert {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in directory.iterdir()
        if p.is_file() and p.name in files
    } == files
    assert set(served_by(world.client, url, 9)) == {"web1", "web2", "web3"}


def cli_run(stack: Stack, *args: str) -> Any:
    token = stack.admin.headers["X-Auth-Token"]
    result = CliRunner().invoke(cli.app, [*args, "--api-url", stack.url, "--token", token])
    return result


def test_export_delete_import_brings_back_a_tree_serving_the_same_traffic(
    world: World, tmp_path: Path
) -> None:
    stack = world.stack
    made, url = serving_lb(world, name="backup-me")
    lb_id = made["lb"]["id"]
    before = stack.admin.get(f"/v2/manage/loadbalancers/{lb_id}/export").json()

    exported = cli_run(stack, "export", "--project", PROJECT)
    assert exported.exit_code == 0, exported.output
    fleet = tmp_path / "fleet.json"
    fleet.write_text(exported.stdout)
    assert json.loads(exported.stdout)["loadbalancers"] == [before["loadbalancer"]]
    # Already there: skipped, nothing made twice.
    again = cli_run(stack, "import", str(fleet))
    assert again.exit_code == 0 and "skip" in again.stdout, again.output

    delete_lb(stack, lb_id)
    wait_for(lambda: not world.agent.instance_dirs(), 30, what="the instance removed")
    dry = cli_run(stack, "import", str(fleet), "--dry-run")
    assert dry.exit_code == 0 and "valid" in dry.stdout, dry.output
    assert stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"] == []

    restored = cli_run(stack, "import", str(fleet))
    assert restored.exit_code == 0 and "created" in restored.stdout, restored.output
    (lb,) = stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]
    assert lb["name"] == "backup-me" and lb["vip_address"] == made["lb"]["vip_address"]
    stack.wait_active(lb["id"])
    wait_answers(world.client, url)
    assert set(served_by(world.client, url, 9)) == {"web1", "web2", "web3"}
    assert stack.admin.get(f"/v2/manage/loadbalancers/{lb['id']}/export").json() == before
    assert instance_paths(world.agent.dir, instance_dir(world.agent).name).config.exists()
