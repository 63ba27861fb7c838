"""Diagnostics through the whole system: real agents, real HAProxy, real traffic.

One stack for the module (API, controller, one agent process; a host is declared
down only after 30 s, so a silenced agent moves nothing while the test looks), and
per test a load balancer over backends of its own:
- a healthy LB: every part of the answer says so (processes, generations, HAProxy's
  frontends and checks, the config, the namespace's plumbing, the GARP), the probe
  reaches every member with the monitor's request, the agent gathers it in under a
  second; the tenant gets its subset only, other projects nothing, `openha diagnose`
  renders it;
- a broken LB: a member killed shows DOWN in HAProxy's checks and refused in the
  probe;
- a config that passes `haproxy -c` but cannot run (a listener whose port is taken in
  the namespace): the last good config serves a steady client loop on, and the answer
  and the events give the error and the diff of the refused config against the last
  good one;
- an agent that does not answer: the answer says so and falls back to the last
  heartbeat.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from lbhelpers import TrafficLoop, flavor, http_lb, remove, wait_answers
from stack import Stack, wait_for
from typer.testing import CliRunner

from openha.agent.netns import run_in_namespace
from openha.agent.paths import namespace_name
from openha.cli import app
from openha.credentials import create_token
from openha.db import transaction
from openha.lab import BackendServer, ClientNamespace, Lab

pytestmark = pytest.mark.integration

SQUATTED_PORT = 8082


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Stack, Lab, ClientNamespace]]:
    with Lab() as lab:
        stack = Stack(lab, host_down_after=30.0)
        try:
            stack.add_agents(2)
            yield stack, lab, ClientNamespace(lab)
        finally:
            stack.stop_controller.set()
            stack.close()


def diagnostics(http: httpx.Client, path: str, probe: bool = False) -> dict[str, Any]:
    resp = http.get(path, params={"probe": "members"} if probe else {})
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["diagnostics"])


def live_of(stack: Stack, lb_id: str, probe: bool = False) -> dict[str, Any]:
    diag = diagnostics(stack.admin, f"/v2/manage/loadbalancers/{lb_id}/diagnostics", probe)
    (inst,) = diag["instances"]
    assert inst["reachable"], inst.get("error")
    return dict(inst["live"])


def test_a_healthy_lb(world: tuple[Stack, Lab, ClientNamespace]) -> None:
    stack, lab, client = world
    web = [BackendServer(lab, f"dh{i}") for i in (1, 2)]
    made = http_lb(stack, web)
    lb, listener, pool = made["lb"], made["listener"], made["pool"]
    members = {m["id"]: m for m in made["members"]}
    url = f"http://{lb['vip_address']}/"
    wait_answers(client, url)
    for _ in range(4):
        assert client.request(url).status == 200
    path = f"/v2/manage/loadbalancers/{lb['id']}/diagnostics"

    def checked() -> dict[str, Any] | None:
        live = live_of(stack, lb["id"])
        servers = live["runtime"]["servers"]
        return live if [s["check_status"] for s in servers] == ["L7OK", "L7OK"] else None

    live = wait_for(checked, 15, 0.2, "both members checked L7OK")
    diag = diagnostics(stack.admin, path)
    assert diag["loadbalancer"]["provisioning_status"] == "ACTIVE"
    (inst,) = diag["instances"]
    assert inst["host"]["name"] in {a.name for a in stack.agents}
    assert inst["role"] == "STANDALONE"
    assert live["state"] == "ACTIVE" and live["last_error"] is None
    assert live["desired_generation"] == live["applied_generation"] > 0
    assert (
        live["last_apply"]["ok"] and live["last_apply"]["generation"] == live["applied_generation"]
    )
    haproxy = live["processes"]["haproxy"]
    assert haproxy["running"] and haproxy["pid"] == live["runtime"]["info"]["Pid"]
    assert haproxy["starts"] >= 1 and haproxy["failed_reloads"] == 0
    assert haproxy["uptime_seconds"] is not None and haproxy["uptime_seconds"] >= 0
    assert "keepalived" not in live["processes"]  # SINGLE
    runtime = live["runtime"]
    assert runtime["info"]["Version"].startswith("2.")
    frontend = runtime["frontends"][listener["id"]]
    assert frontend["status"] == "OPEN" and frontend["stot"] >= 4 and frontend["slim"] > 0
    assert runtime["backends"][pool["id"]]["status"] == "UP"
    assert runtime["backends"][pool["id"]]["act"] == 2
    assert {s["id"] for s in runtime["servers"]} == set(members)
    for server in runtime["servers"]:
        assert server["status"] == "UP" and server["check_code"] == 200
        assert server["addr"] == f"{members[server['id']]['address']}:8080"
    assert runtime["errors"]["total"] == 0 and runtime["stick_tables"] == []
    config = live["config"]
    assert f"frontend {listener['id']}" in config["haproxy"]
    assert config["rejected"] is None and config["diff"] == ""
    plumbing = live["plumbing"]
    assert plumbing["exists"]
    assert any(a["vip"] and a["address"].startswith(lb["vip_address"] + "/")
               for a in plumbing["addresses"])  # fmt: skip
    assert any(r["dst"] == "default" and r["gateway"] == lab.host_ip for r in plumbing["routes"])
    seen = {n["address"] for n in plumbing["neighbours"]}
    assert {b.ip for b in web} <= seen, plumbing["neighbours"]
    assert plumbing["garp"]["address"] == lb["vip_address"]
    assert plumbing["handoff"] == {"to": None, "table": False}  # no migration under way
    assert live["gathered_ms"] < 1000

    probed = live_of(stack, lb["id"], probe=True)
    assert probed["gathered_ms"] < 1000, probed["gathered_ms"]
    assert {p["member_id"] for p in probed["probe"]} == set(members)
    for result in probed["probe"]:
        assert result["ok"] and result["tcp"]["ok"] and result["check"] == "http", result
        assert result["health_check"]["status"] == 200
        assert result["health_check"]["request"] == "GET / HTTP/1.0"

    # The tenant: its members' checks and the probe, nothing about hosts or configs.
    tenant_path = f"/v2/lbaas/loadbalancers/{lb['id']}/diagnostics"
    mine = diagnostics(stack.tenant, tenant_path, probe=True)
    (view,) = mine["instances"]
    assert set(view) == {"role", "reachable", "pools", "members", "probe"}
    assert {m["member_id"] for m in view["members"]} == set(members)
    assert all(m["check_status"] == "L7OK" for m in view["members"])
    assert all(p["ok"] for p in view["probe"])
    assert inst["host"]["name"] not in str(mine) and "haproxy" not in str(mine).lower()
    assert stack.tenant.get(path).status_code == 403
    with transaction(stack.sessions) as s:
        other = create_token(s, "another-project", ["member"])
    with httpx.Client(base_url=stack.url, headers={"X-Auth-Token": other}) as stranger:
        assert stranger.get(tenant_path).status_code == 403  # another project's (Octavia's)
        assert stranger.get(path).status_code == 403

    # The command line renders it for a person.
    token = stack.admin.headers["X-Auth-Token"]
    result = CliRunner().invoke(
        app, ["diagnose", lb["id"], "--probe", "--api-url", stack.url, "--token", token],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for text in ("STANDALONE instance", "Probe", "L7OK", listener["id"], "OPEN"):
        assert text in result.output, (text, result.output)


def test_a_broken_lb(world: tuple[Stack, Lab, ClientNamespace]) -> None:
    stack, lab, client = world
    web = [BackendServer(lab, f"db{i}") for i in (1, 2)]
    made = http_lb(stack, web)
    lb_id, vip = made["lb"]["id"], made["lb"]["vip_address"]
    url = f"http://{vip}/"
    wait_answers(client, url)
    dead = next(m for m in made["members"] if m["address"] == web[1].ip)
    web[1].stop()

    def down() -> dict[str, Any] | None:
        live = live_of(stack, lb_id)
        row = next(s for s in live["runtime"]["servers"] if s["id"] == dead["id"])
        return row if row["status"] == "DOWN" else None

    row = wait_for(down, 15, 0.2, "the dead member DOWN in HAProxy")
    assert row["check_status"] == "L4CON", row
    live = live_of(stack, lb_id, probe=True)
    results = {p["member_id"]: p for p in live["probe"]}
    assert not results[dead["id"]]["ok"]
    assert results[dead["id"]]["tcp"]["error"] == "Connection refused", results[dead["id"]]
    assert results[dead["id"]]["health_check"]["ok"] is False
    alive = next(p for p in results.values() if p["member_id"] != dead["id"])
    assert alive["ok"] and alive["health_check"]["status"] == 200
    tenant = diagnostics(stack.tenant, f"/v2/lbaas/loadbalancers/{lb_id}/diagnostics")
    (view,) = tenant["instances"]
    assert {m["member_id"]: m["status"] for m in view["members"]}[dead["id"]] == "DOWN"


def test_a_config_that_passes_the_check_but_cannot_bind(
    world: tuple[Stack, Lab, ClientNamespace],
) -> None:
    """`haproxy -c` passes (it binds nothing), yet the new config cannot run: something
    else holds the port of a new listener in the namespace. The agent's bind probe,
    after the check and before any process starts, refuses it: the serving HAProxy is
    never touched, the last good config serves on (every request of a steady loop
    answered, before, during and after), and the answer and the events say what was
    refused and why."""
    stack, lab, client = world
    web = [BackendServer(lab, f"dr{i}") for i in (1, 2)]
    made = http_lb(stack, web)
    lb_id, vip = made["lb"]["id"], made["lb"]["vip_address"]
    url = f"http://{vip}/"
    wait_answers(client, url)
    before = live_of(stack, lb_id)["processes"]["haproxy"]
    (inst,) = stack.admin.get("/v2/manage/instances", params={"load_balancer_id": lb_id}).json()[
        "instances"
    ]
    squatter = run_in_namespace(
        namespace_name(inst["id"]), lambda: socket.create_server((vip, SQUATTED_PORT))
    )
    try:
        with TrafficLoop(client, url) as loop:
            loop.wait_requests(30)
            listener = stack.create(
                "listeners",
                "listener",
                {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": SQUATTED_PORT},
            )
            wait_for(lambda: stack.lb(lb_id)["provisioning_status"] == "ERROR", 30, what="ERROR")
            live = live_of(stack, lb_id)
            loop.wait_requests(50)  # the last good config serves on while it is refused
            assert live["state"] == "ERROR" and str(SQUATTED_PORT) in live["last_error"]
            assert live["desired_generation"] > live["applied_generation"]
            last = live["last_apply"]
            assert last["ok"] is False and str(SQUATTED_PORT) in last["error"], last
            assert last["generation"] == live["desired_generation"]
            haproxy = live["processes"]["haproxy"]
            # Refused before any process started: the serving one was not even reloaded.
            assert haproxy["running"] and haproxy["pid"] == before["pid"], (before, haproxy)
            assert haproxy["reloads"] == before["reloads"], (before, haproxy)
            assert haproxy["failed_reloads"] == before["failed_reloads"], (before, haproxy)
            config = live["config"]
            assert f"frontend {listener['id']}" not in config["haproxy"]  # the last good one
            assert f"frontend {listener['id']}" in config["rejected"]
            assert f"+frontend {listener['id']}" in config["diff"], config["diff"]
            assert f"+    bind {vip}:{SQUATTED_PORT}" in config["diff"], config["diff"]
            failed = stack.admin.get(
                "/v2/manage/events",
                params={"load_balancer_id": lb_id, "kind": "loadbalancer.apply_failed"},
            ).json()["events"]
            assert failed and failed[0]["severity"] == "ERROR", failed
            assert str(SQUATTED_PORT) in json.dumps(failed[0]), failed[0]
            remove(stack, f"listeners/{listener['id']}")
            stack.wait_active(lb_id)
            loop.wait_requests(30)
    finally:
        squatter.close()
    assert loop.failures == [], f"{len(loop.failures)} of {loop.ok} failed: {loop.failures[:5]}"
    live = live_of(stack, lb_id)
    assert live["last_apply"]["ok"] and live["last_error"] is None
    assert live["config"]["rejected"] is None and live["config"]["diff"] == ""
    recovered = stack.admin.get(
        "/v2/manage/events", params={"load_balancer_id": lb_id, "kind": "loadbalancer.recovered"}
    ).json()["events"]
    assert recovered, "the recovery must be an event too"


def test_an_unreachable_agent_falls_back_to_the_last_heartbeat(
    world: tuple[Stack, Lab, ClientNamespace],
) -> None:
    stack, lab, client = world
    web = [BackendServer(lab, "du1")]
    made = http_lb(stack, web)
    lb_id = made["lb"]["id"]
    wait_answers(client, f"http://{made['lb']['vip_address']}/")
    member_id = made["members"][0]["id"]

    def heard() -> bool:
        diag = diagnostics(stack.admin, f"/v2/manage/loadbalancers/{lb_id}/diagnostics")
        return diag["instances"][0]["live"]["runtime"]["servers"][0]["status"] == "UP"

    wait_for(heard, 15, 0.2, "member UP")
    (placed,) = stack.admin.get("/v2/manage/instances", params={"load_balancer_id": lb_id}).json()[
        "instances"
    ]

    def reported() -> dict[str, Any] | None:
        shown = stack.admin.get(f"/v2/manage/instances/{placed['id']}").json()["instance"]
        health = shown["health"] or {}
        good = health.get("state") == "ACTIVE" and health.get("members") == {member_id: "UP"}
        return health if good else None

    # What the fallback will show: the agent's last report, once it told the API.
    wait_for(reported, 40, 0.2, "the heartbeat reporting the instance ACTIVE, member UP")
    agent = next(a for a in stack.agents if a.host_id == placed["host_id"])
    agent.kill_agent()
    try:
        diag = diagnostics(stack.admin, f"/v2/manage/loadbalancers/{lb_id}/diagnostics")
        (inst,) = diag["instances"]
        assert inst["reachable"] is False and "unreachable" in inst["error"], inst
        assert "live" not in inst
        fallback = inst["fallback"]
        assert fallback["source"] == "last heartbeat" and fallback["heartbeat_at"]
        assert fallback["status"]["state"] == "ACTIVE"
        assert fallback["status"]["members"] == {member_id: "UP"}
        tenant = diagnostics(stack.tenant, f"/v2/lbaas/loadbalancers/{lb_id}/diagnostics")
        (view,) = tenant["instances"]
        assert view["reachable"] is False and view["fallback"]["members"] == {member_id: "UP"}
        token = stack.admin.headers["X-Auth-Token"]
        shown = CliRunner().invoke(
            app, ["diagnose", lb_id, "--api-url", stack.url, "--token", token]
        )
        assert shown.exit_code == 0 and "agent not reachable" in shown.output, shown.output
        # The data plane does not need its agent: the LB still answers.
        assert client.request(f"http://{made['lb']['vip_address']}/").status == 200
    finally:
        agent.start()

    def answering() -> bool:
        diag = diagnostics(stack.admin, f"/v2/manage/loadbalancers/{lb_id}/diagnostics")
        return bool(diag["instances"][0]["reachable"])

    # The agent heartbeats before its HTTP server listens: it answers a moment later.
    wait_for(answering, 15, 0.2, "the agent answering again")
    assert live_of(stack, lb_id)["state"] == "ACTIVE"


def test_a_pair(world: tuple[Stack, Lab, ClientNamespace]) -> None:
    stack, lab, client = world
    pair = flavor(stack, "diag-pair", {"loadbalancer_topology": "ACTIVE_STANDBY"})
    made = http_lb(stack, [BackendServer(lab, "dp1")], lb={"flavor_id": pair})
    lb = made["lb"]
    wait_answers(client, f"http://{lb['vip_address']}/")
    path = f"/v2/manage/loadbalancers/{lb['id']}/diagnostics"

    def settled() -> dict[str, dict[str, Any]] | None:
        insts = diagnostics(stack.admin, path)["instances"]
        if len(insts) != 2 or not all(i["reachable"] for i in insts):
            return None
        by_state = {i["live"]["processes"]["keepalived"]["vrrp_state"]: i for i in insts}
        return by_state if set(by_state) == {"MASTER", "BACKUP"} else None

    by_state = wait_for(settled, 30, 0.3, "one MASTER and one BACKUP")
    assert by_state["MASTER"]["host"]["id"] != by_state["BACKUP"]["host"]["id"]
    for state, inst in by_state.items():
        live = inst["live"]
        keepalived = live["processes"]["keepalived"]
        assert keepalived["running"] and keepalived["initial_state"] == "BACKUP"
        assert keepalived["nopreempt"] and keepalived["priority"] > 0
        assert keepalived["last_transition_at"] is not None
        assert keepalived["haproxy_down_flag"] is False
        assert "vrrp_instance" in live["config"]["keepalived"]
        assert "auth_pass" not in live["config"]["keepalived"] or (
            "<redacted>" in live["config"]["keepalived"]
        )
        vip_here = any(a["vip"] for a in live["plumbing"]["addresses"])
        assert vip_here is (state == "MASTER"), (state, live["plumbing"]["addresses"])
        garp = live["plumbing"]["garp"]
        if state == "MASTER":
            assert garp["by"] == "keepalived" and garp["address"] == lb["vip_address"]
        else:
            assert garp is None
