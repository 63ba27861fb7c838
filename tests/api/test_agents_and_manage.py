"""Agent registration and heartbeats, host views, amphorae and the failover circuit breaker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openha import hosts
from openha.controller import hostmonitor
from openha.db import transaction
from openha.models import Event, Host, Instance, LoadBalancer, Service, utcnow, utcnow_precise
from openha.settings import Settings
from tests.conftest import Client


def enroll(session_factory: sessionmaker[Session], name: str) -> str:
    with transaction(session_factory) as s:
        return hosts.enroll(s, name, "az1")


def register(http: Any, secret: str, name: str) -> str:
    resp = http.post(
        "/v2/agent/register",
        headers={"Authorization": f"Bearer {secret}"},
        json={
            "name": name,
            "availability_zone": "az1",
            "capacity": 50,
            "management_url": "http://127.0.0.1:1",
            "agent_secret": "s3cret",
        },
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["host_id"])


def test_register_and_heartbeat(
    http: Any, admin: Client, session_factory: sessionmaker[Session]
) -> None:
    secret = enroll(session_factory, "lb-host-1")
    assert (
        http.post(
            "/v2/agent/register",
            headers={"Authorization": "Bearer nope"},
            json={"name": "x", "management_url": "u", "agent_secret": "s"},
        ).status_code
        == 401
    )
    wrong = http.post(
        "/v2/agent/register",
        headers={"Authorization": f"Bearer {secret}"},
        json={"name": "other", "management_url": "u", "agent_secret": "s"},
    )
    assert wrong.status_code == 403
    host_id = register(http, secret, "lb-host-1")
    beat = http.post(
        "/v2/agent/heartbeat",
        headers={"Authorization": f"Bearer {secret}"},
        json={"host_id": host_id, "name": "lb-host-1", "instances": []},
    )
    assert beat.status_code == 200
    assert beat.json()["wanted_instance_ids"] == []
    listed = admin.get("/v2/manage/hosts").json()["hosts"]
    assert [(h["name"], h["status"], h["capacity"]) for h in listed] == [("lb-host-1", "UP", 50)]


def test_manage_routes_need_admin(alice: Client) -> None:
    for path in (
        "/v2/manage/hosts",
        "/v2/manage/instances",
        "/v2/manage/events",
        "/v2/octavia/amphorae",
    ):
        assert alice.get(path).status_code == 403, path


def test_heartbeat_reports_instances_and_orphans(
    http: Any,
    alice: Client,
    admin: Client,
    subnet_id: str,
    session_factory: sessionmaker[Session],
) -> None:
    secret = enroll(session_factory, "lb-host-2")
    host_id = register(http, secret, "lb-host-2")
    lb = alice.post(
        "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id}}
    ).json()["loadbalancer"]
    with transaction(session_factory) as s:
        inst = Instance(load_balancer_id=lb["id"], host_id=host_id, applied_generation=1)
        s.add(inst)
        s.flush()
        inst_id = inst.id
    auth = {"Authorization": f"Bearer {secret}"}
    beat = http.post(
        "/v2/agent/heartbeat",
        headers=auth,
        json={
            "host_id": host_id,
            "name": "lb-host-2",
            "instances": [
                {
                    "instance_id": inst_id,
                    "applied_generation": 1,
                    "haproxy_running": True,
                    "members": {"m": "UP"},
                },
                {"instance_id": "not-ours", "applied_generation": 3},
                # Its LB runs (applied) on this host: another instance took over.
                {"instance_id": "replaced", "load_balancer_id": lb["id"], "applied_generation": 1},
            ],
        },
    )
    assert beat.json()["wanted_instance_ids"] == [inst_id]
    assert beat.json()["superseded_instance_ids"] == ["replaced"]
    with transaction(session_factory) as s:
        stored = s.get(Instance, inst_id)
        assert stored is not None and stored.health["members"] == {"m": "UP"}
        (found,) = s.scalars(select(Event).where(Event.kind == "host.orphans_found"))
        assert found.host_id == host_id and found.severity == "WARNING"
        assert found.details == {
            "instance_ids": ["not-ours", "replaced"],
            "load_balancer_ids": ["", lb["id"]],
            "superseded": ["replaced"],
        }
    # The operator sees them with the host, since when and for which LB.
    shown = admin.get(f"/v2/manage/hosts/{host_id}").json()["host"]["orphans"]
    assert set(shown) == {"not-ours", "replaced"}
    assert shown["replaced"]["load_balancer_id"] == lb["id"] and shown["replaced"]["since"]
    # The same orphans again: nothing new is written, no second event.
    again = http.post(
        "/v2/agent/heartbeat",
        headers=auth,
        json={
            "host_id": host_id,
            "name": "lb-host-2",
            "full": False,
            "instances": [{"instance_id": "not-ours", "applied_generation": 3}],
        },
    )
    assert again.json()["superseded_instance_ids"] == ["replaced"]
    with transaction(session_factory) as s:
        assert len(list(s.scalars(select(Event).where(Event.kind.like("host.orphans%"))))) == 1
    # The agent lost the instance: the controller must see it lagging and push again.
    # (And the orphans are gone: removed.)
    http.post(
        "/v2/agent/heartbeat",
        headers=auth,
        json={"host_id": host_id, "name": "lb-host-2", "instances": []},
    )
    with transaction(session_factory) as s:
        stored = s.get(Instance, inst_id)
        assert stored is not None and stored.applied_generation == 0
        (removed,) = s.scalars(select(Event).where(Event.kind == "host.orphans_removed"))
        assert removed.details == {"instance_ids": ["not-ours", "replaced"]}
    assert admin.get(f"/v2/manage/hosts/{host_id}").json()["host"]["orphans"] == {}


def test_heartbeat_reports_strays_and_their_removal(
    http: Any, admin: Client, session_factory: sessionmaker[Session]
) -> None:
    secret = enroll(session_factory, "lb-host-s")
    host_id = register(http, secret, "lb-host-s")
    auth = {"Authorization": f"Bearer {secret}"}
    stray = {
        "kind": "namespace",
        "name": "ohi-0123",
        "reason": "its instance directory /x is gone",
        "pids": [42],
        "since": "2026-12-01T10:00:00Z",
    }

    def beat(strays: dict[str, Any] | None) -> None:
        body = {"host_id": host_id, "name": "lb-host-s", "full": False, "strays": strays}
        assert http.post("/v2/agent/heartbeat", headers=auth, json=body).status_code == 200

    def kinds() -> list[str]:
        with transaction(session_factory) as s:
            return [e.kind for e in s.scalars(select(Event).where(Event.host_id == host_id))]

    beat({"current": [stray], "reaped": []})
    assert admin.get(f"/v2/manage/hosts/{host_id}").json()["host"]["strays"] == [stray]
    assert kinds().count("host.strays_found") == 1
    beat(None)  # nothing changed: nothing said, nothing forgotten
    beat({"current": [stray], "reaped": []})  # the same stray: no second event
    assert kinds().count("host.strays_found") == 1
    assert admin.get(f"/v2/manage/hosts/{host_id}").json()["host"]["strays"] == [stray]
    beat({"current": [], "reaped": [stray | {"problems": []}]})
    with transaction(session_factory) as s:
        (removed,) = s.scalars(select(Event).where(Event.kind == "host.strays_removed"))
        assert removed.severity == "INFO" and removed.details["strays"][0]["name"] == "ohi-0123"
    assert admin.get(f"/v2/manage/hosts/{host_id}").json()["host"]["strays"] == []
    # What could not be removed is a warning.
    beat({"current": [], "reaped": [stray | {"problems": ["pid 42 survived SIGKILL"]}]})
    with transaction(session_factory) as s:
        last = s.scalars(
            select(Event).where(Event.kind == "host.strays_removed").order_by(Event.id.desc())
        ).first()
        assert last is not None and last.severity == "WARNING"


def api_listening_since(session_factory: sessionmaker[Session], seconds_ago: float) -> None:
    """An API up for `seconds_ago` seconds and beating (what `openha api` records)."""
    with transaction(session_factory) as s:
        s.add(
            Service(
                id=f"api-test-{seconds_ago}",
                kind="api",
                started_at=utcnow() - timedelta(seconds=seconds_ago),
                last_seen_at=utcnow_precise(),
            )
        )


def test_silent_host_goes_down_and_breaker_opens(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    api_listening_since(session_factory, 600)
    with transaction(session_factory) as s:
        for i in range(3):
            s.add(
                Host(name=f"h{i}", credential_hash=f"x{i}", status="UP", last_heartbeat_at=utcnow())
            )
    with transaction(session_factory) as s:
        assert hostmonitor.look(settings, s).paused(settings) is None
        for host in s.scalars(select(Host).where(Host.name != "h0")):
            host.last_heartbeat_at = utcnow() - timedelta(seconds=60)
    down = hostmonitor.mark_silent_hosts_down(settings, session_factory)
    assert len(down) == 2
    with transaction(session_factory) as s:
        reason = hostmonitor.look(settings, s).paused(settings)
        assert reason and "2 of 3 hosts" in reason
        assert s.scalar(select(Event).where(Event.kind == "host.down")) is not None


def test_breaker_does_not_count_a_late_host_whose_agent_answers(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Heartbeats late behind a busy host's work are no outage: the probe says so."""
    api_listening_since(session_factory, 600)
    late = utcnow_precise() - timedelta(seconds=settings.host_down_after * 0.75)
    with transaction(session_factory) as s:
        s.add(Host(name="h0", credential_hash="x0", status="UP", last_heartbeat_at=utcnow()))
        for i in (1, 2):
            s.add(Host(name=f"h{i}", credential_hash=f"x{i}", status="UP", last_heartbeat_at=late))
    probed: list[str] = []

    def probe(host: hostmonitor.SilentHost) -> bool:
        probed.append(host.name)
        return host.name == "h1"

    monitor = hostmonitor.HostMonitor(settings, session_factory, probe)
    assert monitor.check() == []  # suspects, not silent long enough to go down
    assert sorted(probed) == ["h1", "h2"]
    with transaction(session_factory) as s:
        # From the tables alone both late hosts count: 2 of 3, paused.
        assert "2 of 3 hosts" in (hostmonitor.look(settings, s).paused(settings) or "")
        # h1's agent answered: only h2 counts, 1 of 3 is under the threshold.
        assert monitor.pause_reason(s) is None
        assert s.scalar(select(Event).where(Event.kind == "host.down")) is None


def test_amphora_failover_marks_instance(
    admin: Client, alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    lb = alice.post(
        "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id}}
    ).json()["loadbalancer"]
    with transaction(session_factory) as s:
        inst = Instance(load_balancer_id=lb["id"], role="MASTER", ip_address="198.51.100.99")
        s.add(inst)
        s.flush()
        inst_id = inst.id
    amps = admin.get(f"/v2/octavia/amphorae?loadbalancer_id={lb['id']}").json()["amphorae"]
    assert [a["id"] for a in amps] == [inst_id]
    assert amps[0]["ha_ip"] == lb["vip_address"] and amps[0]["role"] == "MASTER"
    with transaction(session_factory) as s:
        lb_row = s.get(LoadBalancer, lb["id"])
        assert lb_row is not None
        lb_row.provisioning_status, lb_row.applied_generation = "ACTIVE", lb_row.desired_generation
        lb_row.attempts, generation = 3, lb_row.desired_generation
    assert admin.put(f"/v2/octavia/amphorae/{inst_id}/failover", {}).status_code == 202
    with transaction(session_factory) as s:
        lb_row = s.get(LoadBalancer, lb["id"])
        assert lb_row is not None and lb_row.failover_requested
        # A change of the LB like any other, through the one change path (as Octavia does).
        assert lb_row.provisioning_status == "PENDING_UPDATE"
        assert lb_row.desired_generation == generation + 1
        assert lb_row.attempts == 0 and lb_row.next_attempt_at is None
        marked = s.get(Instance, inst_id)
        assert marked is not None and marked.status == "PENDING_FAILOVER"
        assert marked.failover_requested_at is not None
    assert admin.get("/v2/octavia/amphorae/nope").status_code == 404


def test_amphora_config_queues_a_push(
    admin: Client, alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    lb = alice.post(
        "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id}}
    ).json()["loadbalancer"]
    with transaction(session_factory) as s:
        inst = Instance(load_balancer_id=lb["id"], role="SINGLE", ip_address="198.51.100.98")
        inst.applied_generation = 1
        s.add(inst)
        lb_row = s.get(LoadBalancer, lb["id"])
        assert lb_row is not None
        lb_row.reconcile_requested = False
        s.flush()
        inst_id = inst.id
    assert alice.put(f"/v2/octavia/amphorae/{inst_id}/config", {}).status_code == 403
    assert admin.put(f"/v2/octavia/amphorae/{inst_id}/config", {}).status_code == 202
    with transaction(session_factory) as s:
        lb_row = s.get(LoadBalancer, lb["id"])
        assert lb_row is not None and lb_row.reconcile_requested
        pushed = s.get(Instance, inst_id)
        assert pushed is not None and pushed.applied_generation == 0


def test_metrics_exposition(admin: Client, alice: Client, subnet_id: str) -> None:
    alice.post("/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id}})
    resp = admin.get("/metrics")
    assert resp.status_code == 200, resp.text
    body = resp.text
    assert (
        'openha_load_balancers{operating_status="OFFLINE",provider="noop",'
        'provisioning_status="PENDING_CREATE"} 1.0' in body
    )


def test_a_wall_that_cannot_be_raised_is_an_event_and_its_repair_too(
    http: Any, alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    secret = enroll(session_factory, "lb-host-walls")
    auth = {"Authorization": f"Bearer {secret}"}
    sandbox = {"cgroup": {"mode": "v1", "detail": "cgroup v1 controllers cpu"}, "problems": []}
    resp = http.post(
        "/v2/agent/register",
        headers=auth,
        json={
            "name": "lb-host-walls",
            "management_url": "http://127.0.0.1:1",
            "agent_secret": "s3cret",
            "sandbox": sandbox,
        },
    )
    host_id = resp.json()["host_id"]
    lb = alice.post(
        "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet_id}}
    ).json()["loadbalancer"]
    with transaction(session_factory) as s:
        host = s.get(Host, host_id)
        assert host is not None and host.report["sandbox"] == sandbox
        inst = Instance(load_balancer_id=lb["id"], host_id=host_id, applied_generation=1)
        s.add(inst)
        s.flush()
        inst_id = inst.id

    def beat(error: str | None) -> None:
        status = {"instance_id": inst_id, "applied_generation": 1, "sandbox_error": error}
        body = {"host_id": host_id, "name": "lb-host-walls", "instances": [status]}
        assert http.post("/v2/agent/heartbeat", headers=auth, json=body).status_code == 200

    def kinds() -> list[str]:
        with transaction(session_factory) as s:
            rows = s.scalars(select(Event).where(Event.instance_id == inst_id).order_by(Event.id))
            return [e.kind for e in rows]

    beat(None)
    assert kinds() == []
    # A full report says again how the host walls instances in (a cgroup mode may change).
    v2 = {"cgroup": {"mode": "v2", "detail": "cgroup v2 at /sys/fs/cgroup"}, "problems": []}
    full = {"host_id": host_id, "name": "lb-host-walls", "full": True, "sandbox": v2}
    full["instances"] = [{"instance_id": inst_id, "applied_generation": 1}]
    assert http.post("/v2/agent/heartbeat", headers=auth, json=full).status_code == 200
    with transaction(session_factory) as s:
        host = s.get(Host, host_id)
        assert host is not None and host.report["sandbox"] == v2
    problem = (
        "memory max '268435456' not applied (/sys/fs/cgroup/memory/x): Device or resource busy"
    )
    beat(problem)
    beat(problem)  # said once, not at every heartbeat
    assert kinds() == ["instance.sandbox_degraded"]
    with transaction(session_factory) as s:
        (event,) = s.scalars(select(Event).where(Event.kind == "instance.sandbox_degraded"))
        assert event.load_balancer_id == lb["id"] and event.severity == "WARNING"
        assert problem in event.message
    beat(None)
    assert kinds() == ["instance.sandbox_degraded", "instance.sandbox_restored"]
