"""Protection profiles on the wire: floods throttled, slow clients cut, lists enforced,
under-attack mode applied at run time by the same HAProxy process, and an attacker's
counters kept by an ACTIVE_STANDBY pair across a real failover.

Every client is a namespace of the lab (so each has a source address of its own);
every flood is bounded in count and time and goes only to the VIP the test made.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from lbhelpers import flavor, http_lb
from stack import Stack, wait_for
from test_ha import agent_of, instances, master

from openha.agent.haproxy import cli_command
from openha.agent.paths import instance_paths
from openha.agent.toptalkers import parse_show_table
from openha.lab import BackendServer, ClientNamespace, Lab
from openha.models import Instance, LoadBalancer
from openha.render.protection import SOURCE_TABLE

pytestmark = pytest.mark.integration

REQUEST_RATE = 30  # per source per 10 s
MAX_CONNECTIONS = 8
HEAD_TIMEOUT_MS = 1500
FLOOD_REQUESTS = 300
FLOOD_SECONDS = 20.0


@pytest.fixture
def stack(lab: Lab) -> Iterator[Stack]:
    stack = Stack(lab)
    try:
        stack.add_agent()
        yield stack
    finally:
        stack.close()


@pytest.fixture
def pair_stack(lab: Lab) -> Iterator[Stack]:
    """Two hosts, room for one ACTIVE_STANDBY pair."""
    stack = Stack(lab)
    try:
        stack.add_agents(2)
        yield stack
    finally:
        stack.close()


def profile(stack: Stack, name: str, **fields: Any) -> dict[str, Any]:
    resp = stack.admin.post(
        "/v2/manage/protection-profiles", json={"protection_profile": {"name": name, **fields}}
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json()["protection_profile"])


def applied(stack: Stack, lb_id: str) -> None:
    """Wait until every instance applied the LB's newest generation."""

    def done() -> bool:
        with stack.sessions() as s:
            lb = s.get(LoadBalancer, lb_id)
            assert lb is not None
            gens = [
                i.applied_generation
                for i in s.query(Instance).filter(Instance.load_balancer_id == lb_id)
            ]
            return bool(gens) and all(g >= lb.desired_generation for g in gens)

    wait_for(done, 30, what="generation applied")


def haproxy(stack: Stack, lb_id: str) -> dict[str, Any]:
    diag = stack.admin.get(f"/v2/manage/loadbalancers/{lb_id}/diagnostics").json()["diagnostics"]
    live = diag["instances"][0]["live"]
    return {"pid": live["processes"]["haproxy"]["pid"], **live}


def _flood(url_host: str, count: int, deadline: float) -> Counter[str]:
    """`count` requests on fresh connections, as fast as they go, until `deadline`."""
    seen: Counter[str] = Counter()
    for _ in range(count):
        if time.monotonic() > deadline:
            seen["unsent"] += 1
            continue
        try:
            with socket.create_connection((url_host, 80), timeout=3) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
                head = sock.recv(64)
            seen[head.split(b" ")[1].decode() if head.startswith(b"HTTP/") else "closed"] += 1
        except OSError as exc:
            seen[type(exc).__name__] += 1
    return seen


def _polite(url_host: str, seconds: float, interval: float) -> list[tuple[int, float]]:
    """One request per `interval` for `seconds`: (status or 0, latency)."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        status = 0
        try:
            with socket.create_connection((url_host, 80), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
                head = sock.recv(64)
            if head.startswith(b"HTTP/"):
                status = int(head.split(b" ")[1])
        except OSError:
            pass
        out.append((status, time.monotonic() - started))
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return out


def _slowloris(host: str, hold: float) -> tuple[float, bytes]:
    """Send half a request head, then wait: how long until HAProxy closes, and what it said."""
    started = time.monotonic()
    with socket.create_connection((host, 80), timeout=hold) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\nX-Slow: ")
        data = b""
        try:
            while chunk := sock.recv(1024):
                data += chunk
        except OSError:
            pass
    return time.monotonic() - started, data


def _idle_connections(host: str, count: int) -> list[str]:
    """Open `count` connections that send nothing; what became of each within a second."""
    socks, out = [], []
    for _ in range(count):
        try:
            socks.append(socket.create_connection((host, 80), timeout=2))
        except OSError as exc:
            out.append(type(exc).__name__)
    time.sleep(1.0)
    for sock in socks:
        sock.settimeout(0.2)
        try:
            out.append("closed" if sock.recv(1) == b"" else "data")
        except TimeoutError:
            out.append("open")
        except OSError as exc:
            out.append(type(exc).__name__)
        finally:
            sock.close()
    return out


def test_profiles_throttle_floods_cut_slow_clients_and_switch_at_runtime(
    stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    made = http_lb(stack, backends[:2], hm=False)
    lb_id = made["lb"]["id"]
    vip = made["lb"]["vip_address"]
    flood, polite = ClientNamespace(lab, "flood"), ClientNamespace(lab, "polite")
    profile(
        stack,
        "base",
        request_rate=REQUEST_RATE,
        max_connections=MAX_CONNECTIONS,
        timeout_http_request=HEAD_TIMEOUT_MS,
    )
    put = stack.admin.put(f"/v2/manage/loadbalancers/{lb_id}/protection", json={"profile": "base"})
    assert put.status_code == 200, put.text
    applied(stack, lb_id)
    wait_for(lambda: polite.request(f"http://{vip}/", timeout=2).status == 200, 15, what="VIP")
    # The kernel's guards in the instance's namespace, as the agent reports them.
    assert haproxy(stack, lb_id)["kernel"]["ok"] is True

    # A flood from one source next to a polite client from another.
    polite_box: list[list[tuple[int, float]]] = []
    thread = threading.Thread(
        target=lambda: polite_box.append(polite.run(_polite, vip, 8.0, 1.0, timeout=60))
    )
    thread.start()
    seen = flood.run(
        _flood, vip, FLOOD_REQUESTS, time.monotonic() + FLOOD_SECONDS, timeout=FLOOD_SECONDS + 30
    )
    thread.join(60)
    print(f"flood: {dict(seen)}; polite: {polite_box}")
    assert seen["429"] >= FLOOD_REQUESTS - 3 * REQUEST_RATE, seen
    assert 0 < seen["200"] <= 3 * REQUEST_RATE, seen
    statuses = [status for status, _ in polite_box[0]]
    assert statuses.count(200) / len(statuses) >= 0.99, statuses

    talkers = stack.admin.get(f"/v2/manage/loadbalancers/{lb_id}/top-talkers").json()
    top = talkers["sources"][0]
    assert top["source"] == flood.ip and top["limited"] is True, talkers
    assert top["request_rate"] > REQUEST_RATE

    # Slowloris: a head that never ends is cut at the timeout (408), and one source
    # holding idle connections gets no more than its share.
    took, said = polite.run(_slowloris, vip, 10.0, timeout=20)
    assert HEAD_TIMEOUT_MS / 1000 - 0.3 < took < HEAD_TIMEOUT_MS / 1000 + 2.5, took
    assert said.startswith(b"HTTP/1.1 408"), said
    idle = flood.run(_idle_connections, vip, MAX_CONNECTIONS + 6, timeout=30)
    assert idle.count("open") <= MAX_CONNECTIONS, idle
    assert len(idle) - idle.count("open") >= 6, idle
    assert polite.request(f"http://{vip}/", timeout=3).status == 200

    # Under attack: the flood's source denied, the polite one allowed past a tiny limit;
    # the maps change through the runtime API, the serving process stays the same.
    before = haproxy(stack, lb_id)
    profile(stack, "attack", request_rate=2, deny=[f"{flood.ip}/32"], allow=[polite.ip])
    on = stack.admin.post(f"/v2/manage/loadbalancers/{lb_id}/protect", json={"profile": "attack"})
    assert on.status_code == 202, on.text
    applied(stack, lb_id)
    after = haproxy(stack, lb_id)
    assert after["pid"] == before["pid"]
    assert after["processes"]["haproxy"]["reloads"] == before["processes"]["haproxy"]["reloads"]
    assert limits_in_force(stack, lb_id) == [2]  # read back from the process itself
    refused = flood.run(_flood, vip, 5, time.monotonic() + 10, timeout=30)
    assert refused["200"] == refused["429"] == 0, refused
    quick = polite.run(_flood, vip, 20, time.monotonic() + 10, timeout=30)
    assert quick["200"] == 20, quick

    off = stack.admin.delete(f"/v2/manage/loadbalancers/{lb_id}/protect")
    assert off.status_code == 200 and off.json()["protection"]["under_attack"] is False
    applied(stack, lb_id)
    assert haproxy(stack, lb_id)["pid"] == before["pid"]
    assert limits_in_force(stack, lb_id) == [REQUEST_RATE]
    wait_for(
        lambda: flood.run(_flood, vip, 1, time.monotonic() + 5, timeout=20)["200"] == 1,
        30,
        interval=1.0,  # slower than its limit: its rate decays
        what="the flood's source let in again",
    )
    kinds = [
        e["kind"]
        for e in stack.admin.get("/v2/manage/events", params={"load_balancer_id": lb_id}).json()[
            "events"
        ]
    ]
    assert "loadbalancer.under_attack" in kinds and "loadbalancer.under_attack_cleared" in kinds


def limits_in_force(stack: Stack, lb_id: str) -> list[int]:
    """Each instance's request limit as its HAProxy compares with it now (top-talkers)."""
    talkers = stack.admin.get(f"/v2/manage/loadbalancers/{lb_id}/top-talkers").json()
    return [i["limits"]["req_rate"] for i in talkers["instances"]]


def _runtime(stack: Stack, instance: dict[str, Any], command: str) -> str:
    """A runtime API command on `instance`'s HAProxy ('' if it does not answer)."""
    agent = agent_of(stack, instance["host_id"])
    try:
        return cli_command(instance_paths(agent.dir, instance["id"]).stats_socket, command)
    except OSError:
        return ""


def _entry(stack: Stack, instance: dict[str, Any], source: str) -> dict[str, Any] | None:
    rows = parse_show_table(_runtime(stack, instance, f"show table {SOURCE_TABLE}"))
    return next((row for row in rows if row["source"] == source), None)


def _first_answer(host: str, deadline: float) -> tuple[str, float]:
    """Ask the VIP until something answers: (the status, seconds waited)."""
    started = time.monotonic()
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, 80), timeout=0.3) as sock:
                sock.settimeout(2)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
                head = sock.recv(64)
            if head.startswith(b"HTTP/"):
                return head.split(b" ")[1].decode(), time.monotonic() - started
        except OSError:
            time.sleep(0.05)
    return "none", time.monotonic() - started


def test_an_attackers_counters_survive_a_failover_of_the_pair(
    pair_stack: Stack, lab: Lab, backends: list[BackendServer]
) -> None:
    """A source limited through the MASTER is still limited by the BACKUP that takes the
    VIP when the MASTER's host dies: its first answer there is a 429, and the survivor's
    top talkers show its counters (the pair shares the table through HAProxy peers)."""
    stack = pair_stack
    profile(stack, "pair-base", request_rate=REQUEST_RATE)
    made = http_lb(
        stack,
        backends[:2],
        hm=False,
        lb={"flavor_id": flavor(stack, "pair", {"loadbalancer_topology": "ACTIVE_STANDBY"})},
    )
    lb_id, vip = made["lb"]["id"], made["lb"]["vip_address"]
    put = stack.admin.put(
        f"/v2/manage/loadbalancers/{lb_id}/protection", json={"profile": "pair-base"}
    )
    assert put.status_code == 200, put.text
    applied(stack, lb_id)
    probe = ClientNamespace(lab, "probe")
    wait_for(lambda: probe.request(f"http://{vip}/", timeout=2).status == 200, 20, what="VIP")
    before = master(stack, lb_id)
    (backup,) = [i for i in instances(stack, lb_id) if i["id"] != before["id"]]
    # Peers reconnect every few seconds: until both ends are connected, what the MASTER
    # counts reaches nobody (and an older entry could be taught back to it).
    wait_for(
        lambda: all(
            "last_status=ESTA" in _runtime(stack, i, "show peers") for i in (before, backup)
        ),
        20,
        what="the pair's peers connected",
    )

    attacker = ClientNamespace(lab, "attacker")
    seen = attacker.run(_flood, vip, 120, time.monotonic() + 15, timeout=45)
    assert seen["429"] >= 120 - 3 * REQUEST_RATE, seen
    # What the MASTER counted reaches the BACKUP within moments (peers push updates).
    wait_for(
        lambda: (
            (e := _entry(stack, backup, attacker.ip)) is not None
            and e["request_rate"] > REQUEST_RATE
        ),
        5,
        what="the BACKUP holding the attacker's counters (shared through the pair's peers)",
    )

    agent_of(stack, before["host_id"]).kill_host()
    status, waited = attacker.run(_first_answer, vip, time.monotonic() + 20, timeout=40)
    assert status == "429", f"first answer after the failover: {status} after {waited:.1f} s"
    wait_for(
        lambda: any(
            i["id"] == backup["id"] and i["vrrp_state"] == "MASTER" for i in instances(stack, lb_id)
        ),
        20,
        what="the BACKUP reported MASTER",
    )
    # Not only the attacker's: a polite source still gets through the new MASTER.
    assert probe.request(f"http://{vip}/", timeout=3).status == 200

    talkers = stack.admin.get(f"/v2/manage/loadbalancers/{lb_id}/top-talkers").json()
    assert [i["instance_id"] for i in talkers["instances"]] == [backup["id"]], talkers
    top = talkers["sources"][0]
    assert top["source"] == attacker.ip and top["limited"] is True, talkers
    assert top["request_rate"] > REQUEST_RATE, talkers
