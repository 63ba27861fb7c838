"""The controller at fleet scale: its work queue, parallel and isolated reconciles,
capacity, hosts declared down on evidence only, and several controllers sharing work.

The haproxy provider runs against stand-in agents (`tests.api.fakeagents`): one
that applies anything, one that never answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, event, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from openha import hosts
from openha.api.app import create_app
from openha.controller import hostmonitor
from openha.controller import stats as outcome
from openha.controller.hostmonitor import HostMonitor, SilentHost
from openha.controller.reconciler import Reconciler
from openha.credentials import create_token
from openha.db import make_engine, make_session_factory, transaction
from openha.domain import constants as c
from openha.domain.capacity import capacity_for
from openha.models import (
    Host,
    Instance,
    LoadBalancer,
    Service,
    utcnow,
    utcnow_precise,
)
from openha.providers.base import ApplyResult, ProviderContext
from openha.providers.haproxy.driver import HAProxyProvider
from openha.providers.noop import NoopProvider
from openha.providers.registry import ProviderRegistry
from openha.settings import Settings
from tests.api.factories import create_lb
from tests.api.fakeagents import FakeAgent, HungAgent
from tests.conftest import PROJECT_A, Client, add_shared_subnet, wait_for

# --- helpers -------------------------------------------------------------------------------


def register(http: Any, sessions: sessionmaker[Session], name: str, url: str, **extra: Any) -> str:
    """Enrol and register a host whose agent answers at `url`; its id."""
    with transaction(sessions) as s:
        secret = hosts.enroll(s, name)
    body = {"name": name, "management_url": url, "agent_secret": "s", "agent_dir": "/tmp/oha"}
    resp = http.post(
        "/v2/agent/register", headers={"Authorization": f"Bearer {secret}"}, json=body | extra
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["host_id"])


def api_up_since(sessions: sessionmaker[Session], seconds_ago: float, name: str = "api-t") -> None:
    """An API that started `seconds_ago` and beats (what `openha api` records)."""
    with transaction(sessions) as s:
        s.execute(delete(Service).where(Service.id == name))
        s.add(
            Service(
                id=name,
                kind="api",
                started_at=utcnow_precise() - timedelta(seconds=seconds_ago),
                last_seen_at=utcnow_precise() + timedelta(minutes=10),
            )
        )


@dataclass
class World:
    """An API on the haproxy provider, its controller running, a tenant."""

    settings: Settings
    sessions: sessionmaker[Session]
    http: TestClient
    tenant: Client
    admin: Client
    controller: Reconciler
    subnet_id: str
    # Stops the controller's loop (joined by the fixture), for tests that act alone.
    halt: Callable[[], None]

    def create_lb(self) -> str:
        return str(create_lb(self.tenant, self.subnet_id)["id"])

    def lb(self, lb_id: str) -> LoadBalancer:
        with transaction(self.sessions) as s:
            lb = s.get(LoadBalancer, lb_id)
            assert lb is not None
            return lb

    def hosts_of(self, lb_id: str) -> list[str | None]:
        with transaction(self.sessions) as s:
            return list(
                s.scalars(select(Instance.host_id).where(Instance.load_balancer_id == lb_id))
            )


@pytest.fixture
def world(
    settings: Settings,
    session_factory: sessionmaker[Session],
    subnet_id: str,
    tokens: dict[str, str],
) -> Iterator[World]:
    haproxy = settings.model_copy(
        update={
            "default_provider": "haproxy",
            "controller_workers": 4,
            "controller_workers_per_host": 2,
            "agent_timeout": 3.0,
            "host_down_after": 600.0,
            "retry_backoff_max": 1.0,
        }
    )
    app = create_app(haproxy, session_factory)
    controller = Reconciler(haproxy, session_factory, app.state.providers)
    stop = threading.Event()
    loop = threading.Thread(target=controller.run, args=(stop,), daemon=True)
    with TestClient(app) as http:
        loop.start()
        try:
            yield World(
                haproxy,
                session_factory,
                http,
                Client(http, tokens["a"]),
                Client(http, tokens["admin"]),
                controller,
                subnet_id,
                lambda: (stop.set(), loop.join(30)),
            )
        finally:
            stop.set()
            loop.join(30)


@pytest.fixture
def agents() -> Iterator[dict[str, Any]]:
    made: dict[str, Any] = {"good": FakeAgent(), "good2": FakeAgent(), "hung": HungAgent()}
    yield made
    for agent in made.values():
        agent.close()


# --- the work queue ------------------------------------------------------------------------


def assert_fresh_changes_first(sessions: sessionmaker[Session], settings: Settings) -> None:
    reconciler = Reconciler(
        settings, sessions, ProviderRegistry(ProviderContext(settings, sessions))
    )
    now = utcnow()
    with transaction(sessions) as s:
        s.execute(delete(LoadBalancer).where(LoadBalancer.project_id == "queue-test"))
        backoff = LoadBalancer(
            project_id="queue-test",
            provider="noop",
            desired_generation=2,
            applied_generation=1,
            reconcile_requested=True,
            next_attempt_at=now - timedelta(seconds=5),  # its backoff just expired
            created_at=now - timedelta(hours=1),
        )
        fresh = LoadBalancer(
            project_id="queue-test",
            provider="noop",
            desired_generation=2,
            applied_generation=1,
            created_at=now,
        )
        waiting = LoadBalancer(
            project_id="queue-test",
            provider="noop",
            desired_generation=2,
            applied_generation=1,
            next_attempt_at=now + timedelta(minutes=5),  # still in backoff
            created_at=now - timedelta(hours=2),
        )
        idle = LoadBalancer(project_id="queue-test", provider="noop", desired_generation=1)
        idle.applied_generation = 1
        s.add_all([backoff, fresh, waiting, idle])
        s.flush()
        ids = {backoff.id: "backoff", fresh.id: "fresh", waiting.id: "waiting", idle.id: "idle"}
    try:
        order = [ids[i] for i in reconciler.due(limit=1000) if i in ids]
        assert order == ["fresh", "backoff"]
        assert [ids[i] for i in reconciler.due(limit=1000, exclude=[fresh.id]) if i in ids] == [
            "backoff"
        ]
    finally:
        with transaction(sessions) as s:
            s.execute(delete(LoadBalancer).where(LoadBalancer.project_id == "queue-test"))


def due_plan(sessions: sessionmaker[Session], settings: Settings) -> str:
    """The database's plan of the due query exactly as the controller sends it
    (sequential scans forbidden on PostgreSQL: the tiny tables of a test would make any
    plan win; the question is whether the partial index can serve the query)."""
    engine = sessions.kw["bind"]
    sent: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM load_balancers" in statement and "next_attempt_at" in statement:
            sent.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        Reconciler(settings, sessions, ProviderRegistry(ProviderContext(settings, sessions))).due(
            limit=10, exclude=["x"], avoid_hosts=["y"]
        )
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    (statement, params), *_ = sent
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
            return "\n".join(str(r[-1]) for r in rows)
        conn.exec_driver_sql("SET enable_seqscan = off")
        rows = conn.exec_driver_sql(f"EXPLAIN {statement}", params).all()
        return "\n".join(str(r[0]) for r in rows)


def test_fresh_changes_go_first_and_the_due_query_uses_its_index_sqlite(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    assert_fresh_changes_first(session_factory, settings)
    # "SCAN load_balancers USING INDEX ix_load_balancers_due": the due rows only.
    assert "USING INDEX ix_load_balancers_due" in due_plan(session_factory, settings)


def test_fresh_changes_go_first_and_the_due_query_uses_its_index_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path, database_url=postgres_url, default_provider="noop")
    engine = make_engine(postgres_url)
    try:
        sessions = make_session_factory(engine)
        assert_fresh_changes_first(sessions, settings)
        assert "ix_load_balancers_due" in due_plan(sessions, settings)
    finally:
        engine.dispose()


# --- parallel, isolated reconciles ---------------------------------------------------------


def test_a_hung_agent_delays_only_the_load_balancers_of_its_host(
    world: World, agents: dict[str, Any]
) -> None:
    register(world.http, world.sessions, "hung", agents["hung"].url)
    stuck = [world.create_lb() for _ in range(6)]
    # Every push to the hung host waits out agent_timeout; the queue holds more of them
    # than the controller has workers.
    wait_for(lambda: all(world.hosts_of(lb) for lb in stuck), 10)
    register(world.http, world.sessions, "good", agents["good"].url)
    start = time.monotonic()
    fine = world.create_lb()
    wait_for(lambda: world.lb(fine).provisioning_status == c.ACTIVE, 10)
    took = time.monotonic() - start
    assert took < world.settings.agent_timeout, f"waited {took:.1f}s behind the hung host"
    assert {world.lb(lb).provisioning_status for lb in stuck} <= {c.PENDING_CREATE, c.ERROR}


def test_a_dead_host_does_not_hold_back_the_rebuild_of_its_load_balancers(
    world: World, agents: dict[str, Any]
) -> None:
    """Nothing calls a host declared down: counting it against the per-host bound would
    rebuild its load balancers `controller_workers_per_host` at a time, all of them
    having had an instance there, while the hosts taking them over idle."""
    doomed = register(world.http, world.sessions, "doomed", agents["good"].url)
    lbs = [world.create_lb() for _ in range(6)]
    wait_for(lambda: all(world.lb(lb).provisioning_status == c.ACTIVE for lb in lbs), 20)
    slow = FakeAgent(delay=1.0)
    try:
        for name in ("s1", "s2"):
            register(world.http, world.sessions, name, slow.url)
        with transaction(world.sessions) as s:
            s.execute(
                update(Host)
                .where(Host.id == doomed)
                .values(last_heartbeat_at=utcnow_precise() - timedelta(minutes=20))
            )
        assert hostmonitor.declare_down(world.sessions, [doomed], utcnow_precise()) == [doomed]
        wait_for(lambda: all(doomed not in world.hosts_of(lb) for lb in lbs), 30)
        wait_for(lambda: all(world.lb(lb).provisioning_status == c.ACTIVE for lb in lbs), 30)
        assert slow.most_at_once > world.settings.controller_workers_per_host
    finally:
        slow.close()


# --- capacity ------------------------------------------------------------------------------


def test_the_operators_capacity_sticks_across_registrations(
    http: TestClient, admin: Client, session_factory: sessionmaker[Session]
) -> None:
    host_id = register(http, session_factory, "cap", "http://127.0.0.1:1", capacity=50)

    def shown() -> tuple[int, int | None, int]:
        host = admin.get(f"/v2/manage/hosts/{host_id}").json()["host"]
        return host["capacity"], host["capacity_override"], host["reported_capacity"]

    assert shown() == (50, None, 50)
    put = admin.put(f"/v2/manage/hosts/{host_id}", {"host": {"capacity": 500}})
    assert put.status_code == 200 and put.json()["host"]["capacity"] == 500
    register(http, session_factory, "cap", "http://127.0.0.1:1", capacity=40)
    assert shown() == (500, 500, 40)  # the agent says what it measures; the operator wins
    assert admin.get("/v2/manage/hosts?capacity=500").json()["hosts"][0]["id"] == host_id
    admin.put(f"/v2/manage/hosts/{host_id}", {"host": {"capacity": None}})
    assert shown() == (40, None, 40)
    # Without a figure of its own, the agent's facts decide.
    register(
        http,
        session_factory,
        "cap",
        "http://127.0.0.1:1",
        memory_bytes=24 * 2**30,
        fd_limit=2_466_174,
    )
    assert shown()[0] == capacity_for(24 * 2**30, 2_466_174)
    with transaction(session_factory) as s:
        secret = hosts.enroll(s, "cap")
    bad = http.post(
        "/v2/agent/register",
        headers={"Authorization": f"Bearer {secret}"},
        json={"name": "cap", "management_url": "u", "agent_secret": "s", "capacity": -1},
    )
    assert bad.status_code == 400
    assert shown()[0] == capacity_for(24 * 2**30, 2_466_174)  # nothing changed
    too_big = admin.put(f"/v2/manage/hosts/{host_id}", {"host": {"capacity": 2**63}})
    assert too_big.status_code == 400


def test_capacity_comes_from_memory_and_descriptors() -> None:
    # 24 GiB and this machine's file-max: memory decides (~3,300), descriptors allow ~2,400.
    assert capacity_for(24 * 2**30, 2_466_174) == min(
        (24 * 2**30 - 2**30) // (7 * 2**20), (2_466_174 - 65536) // 1000
    )
    assert capacity_for(2**30, None) == 0  # all of it reserved for the host itself
    assert capacity_for(None, None) == 100


def test_a_full_fleet_answers_with_a_clear_error_and_recovers_when_room_appears(
    world: World, agents: dict[str, Any]
) -> None:
    host_id = register(world.http, world.sessions, "small", agents["good"].url, capacity=1)
    first = world.create_lb()
    wait_for(lambda: world.lb(first).provisioning_status == c.ACTIVE, 10)
    second = world.create_lb()
    wait_for(lambda: world.lb(second).provisioning_status == c.ERROR, 10)
    assert world.lb(second).last_error == ("No capacity: needs a healthy host (1 host: 1 full)")
    events = world.admin.get(
        "/v2/manage/events", params={"kind": "loadbalancer.no_capacity"}
    ).json()["events"]
    assert [e["load_balancer_id"] for e in events] == [second]
    # The operator makes room: the LB is tried again at once, not after its backoff.
    world.admin.put(f"/v2/manage/hosts/{host_id}", {"host": {"capacity": 2}})
    wait_for(lambda: world.lb(second).provisioning_status == c.ACTIVE, 10)


def test_the_scheduler_spreads_by_load_and_skips_disabled_hosts(
    world: World, agents: dict[str, Any]
) -> None:
    a = register(world.http, world.sessions, "a", agents["good"].url, capacity=10)
    b = register(world.http, world.sessions, "b", agents["good2"].url, capacity=30)
    made = [world.create_lb() for _ in range(8)]
    wait_for(lambda: all(world.lb(lb).provisioning_status == c.ACTIVE for lb in made), 20)
    placed = [world.hosts_of(lb)[0] for lb in made]
    # By load against capacity: b (30) takes three for every one a (10) takes.
    assert (placed.count(a), placed.count(b)) == (2, 6)
    world.admin.put(f"/v2/manage/hosts/{b}", {"host": {"admin_state": "DISABLED"}})
    more = world.create_lb()
    wait_for(lambda: world.lb(more).provisioning_status == c.ACTIVE, 10)
    assert world.hosts_of(more) == [a]


# --- hosts declared down on evidence -------------------------------------------------------


def silent_host(sessions: sessionmaker[Session], name: str, silent_for: float) -> str:
    with transaction(sessions) as s:
        host = Host(
            name=name,
            credential_hash=f"h-{name}",
            status=c.HOST_UP,
            management_url="http://127.0.0.1:9",
            last_heartbeat_at=utcnow_precise() - timedelta(seconds=silent_for),
        )
        s.add(host)
        s.flush()
        return host.id


def status_of(sessions: sessionmaker[Session], host_id: str) -> str:
    with transaction(sessions) as s:
        host = s.get(Host, host_id)
        assert host is not None
        return host.status


def test_no_host_is_declared_down_while_no_api_listens(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    host = silent_host(session_factory, "h", 60)
    with transaction(session_factory) as s:
        s.execute(delete(Service))  # every API stopped (or crashed) long ago
    dead = lambda _h: False  # noqa: E731 - the probe finds nothing
    assert hostmonitor.mark_silent_hosts_down(settings, session_factory, dead) == []
    # An API restarted a moment ago: silence before it proves nothing yet.
    api_up_since(session_factory, 2)
    assert hostmonitor.mark_silent_hosts_down(settings, session_factory, dead) == []
    assert status_of(session_factory, host) == c.HOST_UP
    # Once the API has listened for host_down_after, the host's silence is evidence.
    api_up_since(session_factory, settings.host_down_after + 1)
    assert hostmonitor.mark_silent_hosts_down(settings, session_factory, dead) == [host]
    assert status_of(session_factory, host) == c.HOST_DOWN


def test_a_silent_host_whose_agent_answers_is_not_declared_down(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    api_up_since(session_factory, 600)
    host = silent_host(session_factory, "h", 60)
    probed: list[str] = []

    def answers(h: SilentHost) -> bool:
        probed.append(h.name)
        return True

    monitor = HostMonitor(settings, session_factory, answers)
    assert monitor.check() == []
    assert probed == ["h"] and status_of(session_factory, host) == c.HOST_UP


def test_the_api_records_its_liveness_while_it_runs(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with transaction(session_factory) as s:
        s.execute(delete(Service))
    with TestClient(create_app(settings, session_factory)), transaction(session_factory) as s:
        (api,) = s.scalars(select(Service))
        assert api.kind == "api" and api.last_seen_at >= api.started_at
    with transaction(session_factory) as s:
        assert list(s.scalars(select(Service))) == []  # a clean stop is not a crash


def test_a_single_lb_does_not_move_while_failover_is_paused(
    world: World, agents: dict[str, Any]
) -> None:
    api_up_since(world.sessions, 600, "api-long")
    hosts_ = {
        name: register(world.http, world.sessions, name, agents["good"].url)
        for name in ("p1", "p2", "p3")
    }
    lb_id = world.create_lb()
    wait_for(lambda: world.lb(lb_id).provisioning_status == c.ACTIVE, 10)
    (home,) = world.hosts_of(lb_id)
    others = [h for h in hosts_.values() if h != home]
    with transaction(world.sessions) as s:  # what its agent's heartbeat said
        s.execute(
            update(Instance)
            .where(Instance.load_balancer_id == lb_id)
            .values(health={"applied_generation": 1, "haproxy_running": True, "members": {}})
        )
    # Its host and one more go silent: two of three hosts down, the breaker opens.
    with transaction(world.sessions) as s:
        s.execute(
            update(Host)
            .where(Host.id.in_([home, others[0]]))
            .values(last_heartbeat_at=utcnow_precise() - timedelta(minutes=20))
        )
    hostmonitor.declare_down(world.sessions, [home, others[0]], utcnow_precise())
    wait_for(
        lambda: world.admin.get("/v2/manage/events", params={"kind": "failover.paused"}).json()[
            "events"
        ],
        10,
    )
    time.sleep(1.5)
    assert world.hosts_of(lb_id) == [home], "a SINGLE LB moved while failover was paused"
    assert world.lb(lb_id).provisioning_status == c.ACTIVE
    assert world.lb(lb_id).operating_status == c.ERROR  # nothing runs it: shown, not hidden
    # One host back: one of three down, failover resumes and the LB is rebuilt elsewhere.
    with transaction(world.sessions) as s:
        s.execute(
            update(Host)
            .where(Host.id == others[0])
            .values(status=c.HOST_UP, last_heartbeat_at=utcnow_precise())
        )
    wait_for(lambda: world.hosts_of(lb_id) not in ([home], []), 10)
    wait_for(lambda: world.lb(lb_id).provisioning_status == c.ACTIVE, 10)


# --- several controllers -------------------------------------------------------------------


class Recorder:
    """Wraps the noop provider's apply: who applied which LB, when; optionally blocking."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, float]] = []  # (lb, thread, start, end)
        self.block: dict[str, threading.Event] = {}
        self.started: list[str] = []
        self._lock = threading.Lock()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = NoopProvider.apply
        recorder = self

        def apply(provider: NoopProvider, spec: Any, *, failover_paused: str | None) -> Any:
            start = time.monotonic()
            with recorder._lock:
                recorder.started.append(spec.id)
                gate = recorder.block.pop(spec.id, None)  # blocks the first apply only
            if gate is not None:
                gate.wait(60)
            time.sleep(0.02)
            with recorder._lock:
                recorder.calls.append(
                    (spec.id, threading.current_thread().name, start, time.monotonic())
                )
            return original(provider, spec, failover_paused=failover_paused)

        monkeypatch.setattr(NoopProvider, "apply", apply)

    def overlaps(self) -> list[str]:
        found = []
        by_lb: dict[str, list[tuple[float, float]]] = {}
        for lb_id, _, start, end in self.calls:
            by_lb.setdefault(lb_id, []).append((start, end))
        for lb_id, spans in by_lb.items():
            spans.sort()
            found += [lb_id for a, b in pairwise(spans) if b[0] < a[1]]
        return found


@dataclass
class Shared:
    """One PostgreSQL database, its API, a tenant on it and a VIP subnet."""

    settings: Settings
    sessions: sessionmaker[Session]
    tenant: Client
    subnet_id: str

    def create_lb(self) -> str:
        return str(create_lb(self.tenant, self.subnet_id)["id"])

    def settled(self, ids: list[str]) -> bool:
        return all(
            self.tenant.get(f"/v2/lbaas/loadbalancers/{i}").json()["loadbalancer"][
                "provisioning_status"
            ]
            == "ACTIVE"
            for i in ids
        )


@pytest.fixture
def pg_world(postgres_url: str, tmp_path: Path) -> Iterator[Shared]:
    settings = Settings(
        state_dir=tmp_path,
        database_url=postgres_url,
        default_provider="noop",
        controller_interval=0.02,
        observe_interval=0.1,
        controller_workers=4,
        service_beat_interval=0.3,
        service_dead_after=1.0,
    )
    engine = make_engine(postgres_url)
    sessions = make_session_factory(engine)
    with transaction(sessions) as s:
        token = create_token(s, PROJECT_A, ["member"])
    subnet_id = add_shared_subnet(sessions)
    app = create_app(settings, sessions)
    try:
        with TestClient(app) as http:
            yield Shared(settings, sessions, Client(http, token), subnet_id)
    finally:
        with transaction(sessions) as s:
            s.execute(text("DELETE FROM load_balancers WHERE project_id = :p"), {"p": PROJECT_A})
        engine.dispose()


def start(reconciler: Reconciler) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=reconciler.run, args=(stop,), daemon=True).start()
    return stop


def test_two_controllers_share_the_work_and_never_apply_one_lb_at_once(
    pg_world: Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = pg_world
    recorder = Recorder()
    recorder.install(monkeypatch)
    registry = ProviderRegistry(ProviderContext(world.settings, world.sessions))
    one = Reconciler(world.settings, world.sessions, registry)
    two = Reconciler(world.settings, world.sessions, registry)
    stops = [start(one), start(two)]
    try:
        ids = [world.create_lb() for _ in range(12)]
        for round_ in range(5):
            for lb_id in ids:
                world.tenant.put(
                    f"/v2/lbaas/loadbalancers/{lb_id}", {"loadbalancer": {"name": f"r{round_}"}}
                )
            time.sleep(0.05)
        wait_for(lambda: world.settled(ids), 30)
    finally:
        for stop in stops:
            stop.set()
    assert recorder.overlaps() == []
    workers = {name.rsplit("_", 1)[0] for _, name, _, _ in recorder.calls}
    assert workers == {f"reconcile-{one.owner}", f"reconcile-{two.owner}"}, "one did it all"


def test_a_crashed_controllers_claims_are_taken_over_at_once(
    pg_world: Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = pg_world
    recorder = Recorder()
    recorder.install(monkeypatch)
    registry = ProviderRegistry(ProviderContext(world.settings, world.sessions))
    crashed = Reconciler(world.settings, world.sessions, registry)
    lb_id = world.create_lb()
    gate = recorder.block[lb_id] = threading.Event()
    stop_crashed = start(crashed)

    wait_for(lambda: lb_id in recorder.started, 10)  # its apply hangs, the claim held
    with transaction(world.sessions) as s:
        lb = s.get(LoadBalancer, lb_id)
        assert lb is not None and lb.lease_owner == crashed.owner
    # It stops beating as a killed process would: no clean exit, its row stays.
    monkeypatch.setattr(crashed.liveness, "beat", lambda: False)
    survivor = Reconciler(world.settings, world.sessions, registry)
    began = time.monotonic()
    stop_survivor = start(survivor)
    try:
        wait_for(lambda: world.settled([lb_id]), 15)
        took = time.monotonic() - began
        assert took < world.settings.controller_lease_seconds / 3, f"took over after {took:.1f}s"
        appliers = [name for i, name, _, _ in recorder.calls if i == lb_id]
        assert appliers[0].startswith(f"reconcile-{survivor.owner}")
        assert not crashed.liveness.alive  # and it claims nothing more
    finally:
        gate.set()
        stop_crashed.set()
        stop_survivor.set()


def test_a_reconcile_calls_no_agent_for_an_lb_taken_over_nor_while_its_beat_lags(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between its snapshot and its provider call a reconcile checks that it still holds
    the LB (a twin that judged it dead may have claimed it meanwhile) and that its own
    beat is fresh (else the twin may judge it dead at any moment): otherwise it calls no
    agent, and an LB it still holds stays queued."""
    me = Reconciler(world.settings, world.sessions, world.controller.providers)
    lb_id = world.create_lb()
    wait_for(lambda: world.lb(lb_id).lease_owner is None, 15)
    world.halt()
    applied: list[str] = []

    def apply(provider: HAProxyProvider, spec: Any, *, failover_paused: str | None) -> Any:
        applied.append(spec.id)
        return ApplyResult.applied()

    monkeypatch.setattr(HAProxyProvider, "apply", apply)

    def held_by(owner: str) -> None:
        with transaction(world.sessions) as s:
            s.execute(
                update(LoadBalancer)
                .where(LoadBalancer.id == lb_id)
                .values(lease_owner=owner, lease_until=utcnow_precise() + timedelta(minutes=5))
            )

    assert me.liveness.beat()
    held_by("controller-twin")
    assert me.reconcile(lb_id) == outcome.SKIPPED
    held_by(me.owner)
    lagging = utcnow_precise() - timedelta(seconds=world.settings.service_dead_after)
    monkeypatch.setattr(me.liveness, "_last_ok", lagging)
    assert me.reconcile(lb_id) == outcome.REQUEUED
    assert world.lb(lb_id).reconcile_requested
    assert applied == []
    assert me.liveness.beat()  # fresh again: it applies
    assert me.reconcile(lb_id) == outcome.APPLIED
    assert applied == [lb_id]


def test_a_controller_never_declares_itself_dead(world: World) -> None:
    """On a starved machine a controller's own beat can lag past `service_dead_after`
    (seen in bench/scale.py at load 15-20): it must not release its own claims, held
    by reconciles under way, nor delete its own row; a stale other one it does."""
    me = Reconciler(world.settings, world.sessions, world.controller.providers)
    lb_mine, lb_theirs = world.create_lb(), world.create_lb()
    stale = utcnow_precise() - timedelta(seconds=world.settings.service_dead_after * 5)
    wait_for(
        lambda: world.lb(lb_mine).lease_owner is None and world.lb(lb_theirs).lease_owner is None,
        15,
    )
    world.halt()  # its own liveness pass would judge `me` by its stale row meanwhile
    with transaction(world.sessions) as s:
        for owner in (me.owner, "controller-gone"):
            s.add(Service(id=owner, kind="controller", started_at=stale, last_seen_at=stale))
        for lb_id, owner in ((lb_mine, me.owner), (lb_theirs, "controller-gone")):
            s.execute(
                update(LoadBalancer)
                .where(LoadBalancer.id == lb_id)
                .values(lease_owner=owner, lease_until=utcnow_precise() + timedelta(minutes=5))
            )
    released = me.release_dead_controllers()
    assert "controller-gone" in released and me.owner not in released
    assert world.lb(lb_mine).lease_owner == me.owner
    assert world.lb(lb_theirs).lease_owner is None
    with transaction(world.sessions) as s:
        assert s.get(Service, me.owner) is not None
