"""Events and webhooks on the real stack: a member whose server dies is an event and a
signed webhook POSTed to a real receiver within 2 s of HAProxy noticing; a receiver
that is down gets it once back, across a control-plane restart; a webhook that keeps
failing is disabled; the event stream follows; projects see only their own.

One Stack (API, controller, one real agent), lab and set of backends serve the
module; each test builds its own load balancer, deleted afterwards even on failure.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from lbhelpers import delete_lb, http_lb
from stack import Agent, Stack, wait_for
from tests.webhook_receiver import SECRET, Receiver

from openha.agent.haproxy import cli_command
from openha.credentials import create_token
from openha.db import transaction
from openha.lab import BackendServer, Lab

pytestmark = pytest.mark.integration


@dataclass
class World:
    lab: Lab
    stack: Stack
    agent: Agent
    web: list[BackendServer]
    receiver: Receiver


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with Lab() as lab:
        stack = Stack(lab)
        receiver = Receiver()
        try:
            # Quick retries, so that a receiver coming back is not kept waiting.
            stack.settings.webhook_retry_base = 0.3
            stack.settings.webhook_retry_max = 1.0
            agent = stack.add_agent()
            web = [BackendServer(lab, f"web{i}") for i in (1, 2)]
            yield World(lab, stack, agent, web, receiver)
        finally:
            receiver.stop()
            stack.close()


@pytest.fixture(autouse=True)
def _clean(world: World) -> Iterator[None]:
    yield
    stack = world.stack
    for server in world.web:
        server.start()
    if not world.receiver.running:
        world.receiver.start()
    world.receiver.status = 204
    for hook in stack.admin.get("/v2/manage/webhooks").json()["webhooks"]:
        stack.admin.delete(f"/v2/manage/webhooks/{hook['id']}")
    for lb in stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]:
        delete_lb(stack, lb["id"])


def subscribe(stack: Stack, receiver: Receiver, **body: Any) -> str:
    answer = stack.tenant.post(
        "/v2/lbaas/webhooks", json={"webhook": {"url": receiver.url, "secret": SECRET, **body}}
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["webhook"]["id"])


def server_down_at(agent: Agent, member_id: str, timeout: float = 15.0) -> float:
    """When HAProxy's own check declared the member's server DOWN (polled `show stat`)."""
    (instance,) = agent.instance_dirs()

    def down() -> float | None:
        text = cli_command(instance / "stats.sock", "show stat")
        header = text.splitlines()[0].lstrip("# ").split(",")
        status = header.index("status")
        for line in text.splitlines()[1:]:
            row = line.split(",")
            if len(row) > status and member_id in row[1] and row[status].startswith("DOWN"):
                return time.time()
        return None

    return float(wait_for(down, timeout, 0.02, f"HAProxy sees member {member_id} DOWN"))


def member_events(receiver: Receiver, member_id: str, to: str) -> list[Any]:
    return [
        r
        for r in receiver.events("member.operating_status")
        if r.event["resource_id"] == member_id and r.event["details"]["to"] == to
    ]


def serving(world: World) -> dict[str, Any]:
    made = http_lb(world.stack, world.web)
    members = made["members"]
    # Settled: both members ONLINE (their first checks are events of their own).
    wait_for(
        lambda: all(
            m["operating_status"] == "ONLINE"
            for m in world.stack.tenant.get(f"/v2/lbaas/pools/{made['pool']['id']}/members").json()[
                "members"
            ]
        ),
        30,
        what="members ONLINE",
    )
    return {"lb": made["lb"], "pool": made["pool"], "members": members}


def test_a_member_going_down_is_a_signed_webhook_within_2s(world: World) -> None:
    stack, receiver = world.stack, world.receiver
    subscribe(stack, receiver, kinds=["member.*", "pool.*"], min_severity="WARNING")
    made = serving(world)
    lb_id, web2 = made["lb"]["id"], made["members"][1]["id"]

    world.web[1].stop()
    noticed = server_down_at(world.agent, web2)
    (got,) = wait_for(lambda: member_events(receiver, web2, "ERROR"), 10, 0.02, "webhook")
    assert got.at - noticed <= 2.0, f"delivered {got.at - noticed:.2f}s after HAProxy noticed"
    assert got.signed and got.event["load_balancer_id"] == lb_id
    assert got.event["severity"] == "ERROR" and got.event["details"]["from"] == "ONLINE"
    # The pool went DEGRADED: an event too, heard (WARNING); INFO ones were filtered out.
    wait_for(lambda: receiver.events("pool.operating_status"), 10, what="pool event")
    assert all(r.event["severity"] != "INFO" for r in receiver.events())
    # The same events in the log, for the project and for operators.
    listed = stack.tenant.get(
        "/v2/lbaas/events", params={"load_balancer_id": lb_id, "resource_id": web2}
    ).json()["events"]
    assert [e["details"]["to"] for e in listed][-1] == "ERROR"
    assert stack.admin.get("/v2/manage/events", params={"resource_id": web2}).json()["events"]

    world.web[1].start()
    wait_for(
        lambda: (
            stack.tenant.get(
                "/v2/lbaas/events", params={"resource_id": web2, "kind": "member.operating_status"}
            ).json()["events"][-1]["details"]["to"]
            == "ONLINE"
        ),
        15,
        what="member back ONLINE event",
    )


def test_a_receiver_down_across_a_control_plane_restart_loses_nothing(world: World) -> None:
    stack, receiver = world.stack, world.receiver
    hook = subscribe(stack, receiver, kinds=["member.operating_status"], min_severity="ERROR")
    made = serving(world)
    web1 = made["members"][0]["id"]
    receiver.stop()
    world.web[0].stop()
    server_down_at(world.agent, web1)

    def log() -> list[dict[str, Any]]:
        answer = stack.tenant.get(f"/v2/lbaas/webhooks/{hook}/deliveries")
        return list(answer.json()["deliveries"])

    (failing,) = wait_for(lambda: [d for d in log() if d["attempts"] >= 1], 10, what="an attempt")
    assert failing["status"] == "PENDING" and "ConnectError" in failing["last_error"]
    stack.stop_control_plane()
    try:
        receiver.start()  # back while no controller runs: nothing is sent yet
        time.sleep(1)
        assert not member_events(receiver, web1, "ERROR")
    finally:
        stack.start_control_plane()
    (got,) = wait_for(lambda: member_events(receiver, web1, "ERROR"), 15, what="delivered")
    assert got.signed and got.headers["X-OpenHA-Delivery"] == str(failing["id"])
    (done,) = log()
    assert done["status"] == "DELIVERED" and done["attempts"] >= 2


def test_a_webhook_that_keeps_failing_is_disabled(world: World) -> None:
    stack, receiver = world.stack, world.receiver
    stack.settings.webhook_disable_after = 3
    try:
        hook = subscribe(stack, receiver)
        receiver.status = 503
        made = serving(world)  # its creation's events fail to deliver, again and again
        wait_for(
            lambda: not stack.tenant.get(f"/v2/lbaas/webhooks/{hook}").json()["webhook"]["enabled"],
            20,
            what="webhook disabled",
        )
        shown = stack.tenant.get(f"/v2/lbaas/webhooks/{hook}").json()["webhook"]
        assert "HTTP 503" in shown["disabled_reason"]
        (event,) = stack.tenant.get("/v2/lbaas/events", params={"kind": "webhook.disabled"}).json()[
            "events"
        ]
        assert event["resource_id"] == hook and event["severity"] == "WARNING"
        # Nothing is sent to it any more.
        tried = len(receiver.received)
        world.web[0].stop()
        server_down_at(world.agent, made["members"][0]["id"])
        time.sleep(2)
        assert len(receiver.received) == tried
    finally:
        stack.settings.webhook_disable_after = 20


def test_follow_streams_new_events_and_projects_see_their_own(world: World) -> None:
    stack = world.stack
    made = serving(world)
    web1 = made["members"][0]["id"]
    with transaction(stack.sessions) as s:
        other = create_token(s, "4444444444444444444444444444444b", ["member"])
    streamed: list[dict[str, Any]] = []
    opened = threading.Event()

    def follow() -> None:
        with stack.tenant.stream(
            "GET",
            "/v2/lbaas/events",
            params={"follow": "true", "follow_seconds": "20", "kind": "member.operating_status"},
            timeout=30,
        ) as stream:
            opened.set()
            for line in stream.iter_lines():
                if line:
                    streamed.append(json.loads(line))
                    if streamed[-1]["resource_id"] == web1:
                        return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert opened.wait(10)
    world.web[0].stop()
    wait_for(lambda: streamed, 15, what="the event streamed")
    assert streamed[-1]["resource_id"] == web1 and streamed[-1]["details"]["to"] == "ERROR"
    reader.join(timeout=5)
    with httpx.Client(base_url=stack.url, headers={"X-Auth-Token": other}, timeout=10) as bob:
        assert bob.get("/v2/lbaas/events").json()["events"] == []
        assert bob.get("/v2/lbaas/events", params={"resource_id": web1}).json()["events"] == []
        assert bob.get("/v2/manage/events").status_code == 403
        assert bob.get("/v2/lbaas/webhooks").json()["webhooks"] == []
        hook = subscribe(stack, world.receiver)
        assert bob.get(f"/v2/lbaas/webhooks/{hook}").status_code == 404
        assert bob.get(f"/v2/lbaas/webhooks/{hook}/deliveries").status_code == 404
