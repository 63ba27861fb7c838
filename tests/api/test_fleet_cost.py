"""An idle fleet costs what changed, not what it holds: counted, not timed.

A scaled-down fleet (tens of load balancers, one host whose agent runs in this
process with stand-in HAProxy processes) settles; then idle passes of the
controller, idle heartbeats of the agent and the API's handling of them are
counted: database statements, rows written, snapshot builds, stats reads. The
counts must not grow with the fleet, and a member that goes down in HAProxy must
still be read, reported and derived at once.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from openha import hosts
from openha.agent.haproxy import StatSummary
from openha.agent.hostlimits import raise_inotify_instances
from openha.agent.logstore import QUIET_AFTER, LogStore
from openha.agent.paths import instance_paths
from openha.agent.sandbox import InstanceSandbox
from openha.agent.service import FULL_PASS_INTERVAL, AgentService, _Instance
from openha.controller import snapshot
from openha.controller.reconciler import Reconciler
from openha.db import transaction
from openha.domain.observed import ListenerCounters
from openha.domain.spec import InstanceSpec
from openha.models import Instance, LoadBalancer, Member, Service, utcnow, utcnow_precise
from openha.settings import Settings
from tests.api.factories import create_hm, create_lb, create_listener, create_member, create_pool
from tests.conftest import Client, wait_for

HOST = "cost-host"
# An idle controller pass: the work queue, the observation queue, and the housekeeping's
# look at services and hosts, each in its own transaction (BEGIN + query) at most.
IDLE_PASS_QUERIES = 8


class Counter:
    """Statements sent to the database, and how many of them write."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.engine = sessions.kw["bind"]
        self.statements: list[str] = []
        self._rows: list[tuple[str, int]] = []  # (statement, rows it writes at most)

    def __enter__(self) -> Counter:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(
        self, _conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, many: bool
    ) -> None:
        self.statements.append(statement)
        self._rows.append((statement, len(params) if many else 1))

    @property
    def queries(self) -> int:
        return len(self.statements)

    def writes(self, table: str = "") -> int:
        """Rows written (an executemany counts each of its rows)."""
        return sum(
            rows
            for s, rows in self._rows
            if s.split(None, 1)[0].upper() in ("UPDATE", "INSERT", "DELETE") and table in s
        )


class FakeHAProxy:
    """A running HAProxy as the agent sees it: a pid and `show stat`, reads counted."""

    def __init__(self, listener_id: str, member_id: str) -> None:
        self.listener_id, self.member_id = listener_id, member_id
        self.member_state = "UP"
        self.reads = 0

    def pid(self) -> int:
        return 4242

    def running(self) -> bool:
        return True

    def stats(self) -> StatSummary:
        self.reads += 1
        return StatSummary(
            listeners={self.listener_id: ListenerCounters()},
            members={self.member_id: self.member_state},
        )


@pytest.fixture
def controller_(settings: Settings, session_factory: sessionmaker[Session], app: Any) -> Reconciler:
    """A controller driven pass by pass from the test (no threads of its own)."""
    reconciler = Reconciler(settings, session_factory, app.state.providers)
    reconciler.liveness.beat()
    # An API up long enough for hosts to be judged: the liveness pass does all it can.
    with transaction(session_factory) as s:
        s.add(
            Service(
                id="api-long-up",
                kind="api",
                started_at=utcnow() - timedelta(minutes=10),
                last_seen_at=utcnow_precise() + timedelta(minutes=10),
            )
        )
    return reconciler


@pytest.fixture
def snapshots(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    built: list[str] = []
    original = snapshot.build

    def counted(session: Session, lb_id: str, sealer: Any) -> Any:
        built.append(lb_id)
        return original(session, lb_id, sealer)

    monkeypatch.setattr(snapshot, "build", counted)
    return built


def add_lbs(admin: Client, subnet_id: str, count: int) -> None:
    for _ in range(count):
        lb = create_lb(admin, subnet_id)["id"]
        listener = create_listener(admin, lb)["id"]
        pool = create_pool(admin, listener_id=listener)["id"]
        create_member(admin, pool)
        create_hm(admin, pool)


def settle(controller_: Reconciler) -> None:
    """Reconcile and observe until nothing is left to do."""
    for _ in range(200):
        if not controller_.tick() and not controller_.observer.observe_due():
            return
    raise AssertionError("the fleet did not settle")


def idle_pass(controller_: Reconciler, sessions: sessionmaker[Session]) -> Counter:
    with Counter(sessions) as counted:
        controller_.tick()
        controller_.observer.observe_due()
        controller_.housekeeping()
    return counted


def test_idle_controller_passes_cost_the_same_for_5_or_25_lbs(
    admin: Client,
    subnet_id: str,
    controller_: Reconciler,
    session_factory: sessionmaker[Session],
    snapshots: list[str],
) -> None:
    add_lbs(admin, subnet_id, 5)
    settle(controller_)
    controller_.housekeeping()  # the first one also runs the slow resync
    small = [idle_pass(controller_, session_factory) for _ in range(3)]
    add_lbs(admin, subnet_id, 20)
    settle(controller_)
    statuses = {
        lb["operating_status"]
        for lb in admin.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]
    }
    assert statuses == {"ONLINE"}  # observed once each after their apply
    snapshots.clear()
    large = [idle_pass(controller_, session_factory) for _ in range(3)]
    assert snapshots == [], "an idle pass built snapshots"
    # Passes after nothing was committed may skip their queues' queries altogether
    # (`ChangeWatch`); whatever they do, five times the LBs cost no more.
    assert max(c.queries for c in large) <= max(c.queries for c in small)
    for counted in small + large:
        assert counted.queries <= IDLE_PASS_QUERIES, counted.statements
        assert counted.writes() == 0, counted.statements
    # Commits come every second with nothing queued (heartbeats, liveness beats): the
    # passes see the commit, find both queues empty on the watch's own connection, and
    # send nothing through SQLAlchemy.
    for _ in range(3):
        controller_.liveness.beat()
        with Counter(session_factory) as counted:
            assert controller_.tick() == 0
            assert controller_.observer.observe_due() == 0
        assert counted.queries == 0, counted.statements
    # A change costs one reconcile and one observation of that LB, not of the fleet.
    lb_id = admin.get("/v2/lbaas/loadbalancers").json()["loadbalancers"][3]["id"]
    changed = admin.put(f"/v2/lbaas/loadbalancers/{lb_id}", {"loadbalancer": {"name": "x"}})
    assert changed.status_code == 200, changed.text
    settle(controller_)
    assert snapshots == [lb_id, lb_id]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes: pytest's tmp_path may be longer."""
    path = Path(tempfile.mkdtemp(prefix="ohc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Host:
    """One agent host in this process: an `AgentService` whose instances run FakeHAProxy."""

    def __init__(
        self, http: TestClient, sessions: sessionmaker[Session], root: Path, settings: Settings
    ) -> None:
        with transaction(sessions) as s:
            credential = hosts.enroll(s, HOST)
        self.settings = Settings(
            state_dir=root,
            agent_dir=root / "agent",
            database_url=settings.database_url,
            agent_api_url="http://testserver",
            agent_token=credential,
            host_name=HOST,
            heartbeat_interval=1.0,
            stats_interval=10.0,
            report_resync_interval=300.0,
        )
        self.http = http
        self.sessions = sessions
        self.service = AgentService(self.settings)
        self.service.register(http)
        self.haproxy: dict[str, FakeHAProxy] = {}

    def run(self, lb_id: str) -> str:
        """An instance of `lb_id` on this host, in the database and in the agent."""
        with transaction(self.sessions) as s:
            lb = s.get(LoadBalancer, lb_id)
            assert lb is not None
            member = s.scalar(select(Member).where(Member.load_balancer_id == lb_id))
            assert member is not None
            spec = snapshot.build(s, lb_id, None)
            inst = Instance(
                load_balancer_id=lb_id,
                host_id=self.service.host_id,
                applied_generation=lb.desired_generation,
                status="ACTIVE",
            )
            s.add(inst)
            s.flush()
            instance_id = inst.id
            # The haproxy provider derives statuses from what instances report.
            lb.provider = "haproxy"
        fake = FakeHAProxy(spec.listeners[0].id, member.id)
        paths = instance_paths(self.settings.agent_dir, instance_id)  # type: ignore[arg-type]
        sandbox = InstanceSandbox(self.service.sandbox, paths, instance_id)
        record = _Instance(instance_id, paths, f"ohi-{instance_id[:8]}", fake, None, sandbox)  # type: ignore[arg-type]
        record.spec = InstanceSpec(
            instance_id=instance_id,
            load_balancer_id=lb_id,
            project_id="p",
            generation=spec.generation,
            namespace=record.namespace,
            interfaces=(),
            vip_address=spec.vip_address,
            haproxy_config="",
        )
        record.desired_generation = spec.generation
        record.confirmed = True  # as if the controller had pushed it
        self.service._instances[instance_id] = record
        self.haproxy[instance_id] = fake
        return instance_id

    def beat(self) -> tuple[Counter, int]:
        """One heartbeat: the API's statements, and the stats the agent read for it."""
        before = sum(f.reads for f in self.haproxy.values())
        with Counter(self.sessions) as counted:
            self.service.heartbeat_once(self.http)
        return counted, sum(f.reads for f in self.haproxy.values()) - before


def test_idle_heartbeats_read_a_slice_and_write_one_row(
    admin: Client,
    http: TestClient,
    subnet_id: str,
    controller_: Reconciler,
    session_factory: sessionmaker[Session],
    settings: Settings,
    short_dir: Path,
    snapshots: list[str],
) -> None:
    count = 30
    add_lbs(admin, subnet_id, count)
    settle(controller_)
    host = Host(http, session_factory, short_dir, settings)
    lbs = [lb["id"] for lb in admin.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]]
    instances = {host.run(lb_id): lb_id for lb_id in lbs}

    first, reads = host.beat()
    assert reads == count  # the first report after a start is full: everything is read
    assert first.writes("instances") == count
    settle(controller_)  # each LB's statuses derived once from what HAProxy said
    controller_.housekeeping()  # the first one also runs the slow resync

    share = math.ceil(count * 1.0 / 10.0)  # heartbeat interval / stats interval
    snapshots.clear()
    for _ in range(12):
        counted, reads = host.beat()
        assert reads <= share, "an idle heartbeat read more than its share of stats"
        assert counted.writes() == counted.writes("UPDATE hosts") == 1, counted.statements
        assert counted.queries <= 4, counted.statements
        idle = idle_pass(controller_, session_factory)
        assert idle.writes() == 0, "\n".join(idle.statements)
    assert snapshots == []

    # HAProxy says a member went down: the next heartbeat reads that instance at
    # once, reports it alone, and the controller derives that LB's statuses only.
    victim = next(iter(instances))
    host.haproxy[victim].member_state = "DOWN"
    sock_path = short_dir / "log.sock"
    host.service.logs.add(victim, sock_path)
    host.service.logs.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(
                b"<129>Nov 30 21:18:02 haproxy[1]: Server p/m is DOWN, reason: Layer4 "
                b"connection problem, check duration: 0ms.",
                str(sock_path),
            )
        # Heard by the agent's collector (it stores nothing: rsyslogd files lines).
        wait_for(lambda: victim in host.service.logs._state_changed)
        before = host.haproxy[victim].reads
        counted, reads = host.beat()
        assert host.haproxy[victim].reads == before + 1
        assert reads <= share + 1
        assert counted.writes("UPDATE instances") == 1, counted.statements
        snapshots.clear()
        settle(controller_)
        assert snapshots == [instances[victim]]
        member = admin.get(f"/v2/lbaas/pools?loadbalancer_id={instances[victim]}").json()
        pool_id = member["pools"][0]["id"]
        members = admin.get(f"/v2/lbaas/pools/{pool_id}/members").json()["members"]
        assert [m["operating_status"] for m in members] == ["ERROR"]
    finally:
        host.service.logs.stop()


def test_a_stats_sweep_visits_every_instance_within_the_stats_interval(
    admin: Client,
    http: TestClient,
    subnet_id: str,
    controller_: Reconciler,
    session_factory: sessionmaker[Session],
    settings: Settings,
    short_dir: Path,
) -> None:
    add_lbs(admin, subnet_id, 20)
    settle(controller_)
    host = Host(http, session_factory, short_dir, settings)
    for lb in admin.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]:
        host.run(lb["id"])
    host.beat()
    for fake in host.haproxy.values():
        fake.reads = 0
    for _ in range(10):  # stats_interval / heartbeat_interval heartbeats
        host.beat()
    assert {f.reads for f in host.haproxy.values()} == {1}


def test_idle_api_heartbeat_costs_the_same_for_any_fleet(
    http: TestClient, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the API does for an agent reporting nothing new: it does not read the
    host's instances, whatever their number, and takes one trip to the thread pool."""
    with transaction(session_factory) as s:
        secret = hosts.enroll(s, "quiet")
    auth = {"Authorization": f"Bearer {secret}"}
    body = {"name": "quiet", "management_url": "http://127.0.0.1:1", "agent_secret": "s"}
    host_id = http.post("/v2/agent/register", headers=auth, json=body).json()["host_id"]
    answer = http.post(
        "/v2/agent/heartbeat",
        headers=auth,
        json={"host_id": host_id, "name": "quiet", "instances": []},
    ).json()
    version = answer["wanted_version"]
    trips: list[object] = []
    run_sync = anyio.to_thread.run_sync

    async def counted_trip(func: Any, *args: Any, **kw: Any) -> Any:
        trips.append(func)
        return await run_sync(func, *args, **kw)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted_trip)
    with Counter(session_factory) as counted:
        again = http.post(
            "/v2/agent/heartbeat",
            headers=auth,
            json={"host_id": host_id, "name": "quiet", "full": False, "wanted_version": version},
        ).json()
    assert again["wanted_instance_ids"] is None  # nothing changed: no list
    assert counted.writes() == 1 and counted.queries <= 4, counted.statements
    assert len(trips) == 1, trips  # the endpoint alone, not its session and credential


def test_idle_supervision_passes_look_at_no_instance(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervision pass looks at instances when something happened to one (an
    exit, a namespace come or gone) and at all of them now and then, not every second."""
    service = AgentService(Settings(state_dir=short_dir, agent_dir=short_dir / "agent"))
    for n in range(10):
        instance_id = f"00000000-0000-4000-8000-{n:012d}"
        paths = instance_paths(short_dir / "agent", instance_id)
        sandbox = InstanceSandbox(service.sandbox, paths, instance_id)
        record = _Instance(instance_id, paths, f"ohi-{n}", FakeHAProxy("l", "m"), None, sandbox)  # type: ignore[arg-type]
        record.spec = InstanceSpec(
            instance_id=instance_id,
            load_balancer_id="lb",
            project_id="p",
            generation=1,
            namespace=record.namespace,
            interfaces=(),
            vip_address="10.0.0.1",
            haproxy_config="",
        )
        record.confirmed = True
        service._instances[instance_id] = record
    netns_dir = short_dir / "netns"
    netns_dir.mkdir()
    os.utime(netns_dir, (time.time() - 60, time.time() - 60))
    service.netns_dir = str(netns_dir)
    # Every HAProxy watched and every namespace there: nothing needs bringing back.
    monkeypatch.setattr(service.watcher, "watched", lambda key: 4242)
    monkeypatch.setattr("openha.agent.service.namespace_exists", lambda name: True)

    service.supervise_once()
    assert service.supervision_looks == 10  # the first pass looks at everything
    for _ in range(5):
        service.supervise_once()
    assert service.supervision_looks == 10, "an idle pass looked at instances"
    service._exited("00000000-0000-4000-8000-000000000003/haproxy")  # the exit watcher heard one
    service.supervise_once()
    assert service.supervision_looks == 20
    service.supervise_once()
    os.utime(netns_dir)  # a namespace came or went
    service.supervise_once()
    assert service.supervision_looks == 30
    service._full_pass_at -= FULL_PASS_INTERVAL  # and now and then, whatever happened
    os.utime(netns_dir, (time.time() - 60, time.time() - 60))
    service.supervise_once()
    assert service.supervision_looks == 40
    service.supervise_once()
    assert service.supervision_looks == 40


def test_idle_log_janitor_passes_look_at_no_load_balancer(short_dir: Path) -> None:
    """The log janitor looks at a load balancer's files while they change; a quiet one
    gets a one-shot watch (inotify) and is not looked at again until a line is written
    into its directory, which the next pass hears of at once."""
    raise_inotify_instances()  # as the agent does at start: keepalived may hold them all
    store = LogStore(
        short_dir / "logs", lb_quota=1 << 20, host_quota=1 << 30, segment_bytes=4096, retention=3600
    )
    lbs = [str(uuid.uuid4()) for _ in range(20)]
    for lb in lbs:
        store.register(lb, "p", f"i-{lb}", [])
        (store.lb_dir(lb) / "access.log").write_bytes(b"x" * 99 + b"\n")

    def janitor_pass() -> None:  # as LogPipeline.tick runs them
        store.rotate()
        store.enforce()

    for _ in range(QUIET_AFTER + 1):
        janitor_pass()
    assert store.quiet() == set(lbs)
    total = store.disk_bytes()
    store.looks = 0
    for _ in range(2 * QUIET_AFTER):
        janitor_pass()
    assert store.looks == 0, "an idle pass looked at load balancers"
    assert store.total_bytes == total  # still counted

    # rsyslogd writes a line to one of them: the next pass looks at it alone, and
    # closes its file once past the segment size.
    busy, fresh = lbs[3], lbs[7]
    with open(store.lb_dir(busy) / "access.log", "ab") as fh:
        fh.write(b"y" * 4999 + b"\n")
    assert store.rotate()
    store.enforce()
    assert store.looks == 2  # rotate and enforce, that LB only
    assert len(store.segments(busy)) == 1
    assert store.total_bytes == store.disk_bytes() == total + 5000
    # A file created where there was none (rsyslogd after the rotation's SIGHUP) wakes it too.
    (store.lb_dir(fresh) / "access.log").unlink()
    for _ in range(QUIET_AFTER + 1):
        janitor_pass()  # the unlink is ours (a quota), not a write: fresh stays quiet
    assert fresh in store.quiet() and busy in store.quiet()
    store.looks = 0
    (store.lb_dir(fresh) / "admin.log").write_bytes(b"z\n")
    janitor_pass()
    assert store.looks == 2
    assert store.total_bytes == store.disk_bytes()
    store.close()
