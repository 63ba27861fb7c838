"""Shared fixtures: an API on a fresh SQLite database, tokens per project, a controller."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from openha.api.app import bind, create_app
from openha.controller.reconciler import Reconciler
from openha.credentials import create_token
from openha.db import make_engine, make_session_factory, transaction, upgrade
from openha.models import Network, Subnet
from openha.settings import Settings
from tests.pg import pg_bin, postgres_server

PROJECT_A = "11111111111111111111111111111111"
PROJECT_B = "22222222222222222222222222222222"


# Tests that drive real processes, namespaces and traffic, with deadlines measured in
# seconds: they run one module at a time in their lane (below).
DATA_PLANE_MARKERS = ("integration", "e2e")

# Data-plane lanes: each is one xdist group, run in order on one worker while the other
# lane runs on the other worker. Modules of different lanes share nothing but the CPU:
# every name is unique (lab prefixes, temporary directories), every port is a free one,
# no test changes host-wide settings (agents run with OPENHA_AGENT_NEIGHBOUR_TABLE=0) or
# purges what it did not make. The lanes are balanced by the modules' measured durations
# (`pytest --durations`); a module not listed here runs in the last lane.
DATA_PLANE_LANES: dict[str, tuple[str, ...]] = {
    "data-plane-1": (
        "tests/e2e/test_keystone.py",
        "tests/e2e/test_barbican.py",
        "tests/e2e/test_openstack_cli.py",
        "tests/e2e/test_openstacksdk.py",  # shares the session's `openha` with the CLI's
        "tests/e2e/test_allinone.py",
        "tests/integration/test_ha.py",
        "tests/integration/test_migrate.py",
        "tests/integration/test_demo.py",
        "tests/integration/test_member_subnets.py",
        "tests/integration/test_lb_traffic.py",
        "tests/integration/test_lb_tls.py",
    ),
    "data-plane-2": (
        "tests/integration/test_agent_faults.py",
        "tests/integration/test_agent_lifecycle.py",
        "tests/integration/test_agent_network.py",
        "tests/integration/test_agent_tls.py",
        "tests/integration/test_agent_traffic.py",
        "tests/integration/test_chaos.py",
        "tests/integration/test_diagnostics.py",
        "tests/integration/test_events_webhooks.py",
        "tests/integration/test_lb_logs.py",
        "tests/integration/test_lb_resilience.py",
        "tests/integration/test_lb_wire.py",
        "tests/integration/test_prometheus.py",
        "tests/integration/test_recovery.py",
    ),
}
# Unit and API tests that take tens of seconds start first, so that none of them is
# what the last worker still runs once everything else is done.
SLOW_FIRST = (
    "tests/api/test_role_matrix.py",
    "tests/api/test_fuzz.py",
    "tests/api/test_fleet_cost.py",
    "tests/api/test_controller_fleet.py",
)


def data_plane_lane(module: str) -> str:
    """The lane (xdist group) of a data-plane test module, given by its path."""
    for lane, modules in DATA_PLANE_LANES.items():
        if module in modules:
            return lane
    return list(DATA_PLANE_LANES)[-1]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`), each data-plane lane
    is one group that a single worker runs in order; the groups go out first (the
    scheduler hands out its biggest units first), and each worker takes the unit and
    API tests (units of one test each, the slow ones first) once its lane is done."""
    lanes: dict[str, list[pytest.Item]] = {lane: [] for lane in DATA_PLANE_LANES}
    rest: list[pytest.Item] = []
    for item in items:
        if any(m in item.keywords for m in DATA_PLANE_MARKERS):
            lane = data_plane_lane(item.nodeid.split("::", 1)[0])
            item.add_marker(pytest.mark.xdist_group(lane))
            lanes[lane].append(item)
        else:
            rest.append(item)
    rest.sort(key=lambda i: not i.nodeid.startswith(SLOW_FIRST))  # stable: order kept
    items[:] = [item for lane in lanes.values() for item in lane] + rest


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        database_url=f"sqlite:///{tmp_path / 'openha.db'}",
        auth="token",
        default_provider="noop",
        controller_interval=0.05,
        observe_interval=0.1,
        # The API and the controller beat once when they start, then rarely: a test's
        # query counts see no beats, and they count as alive for its whole length.
        service_beat_interval=60,
        service_dead_after=180,
    )


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file migrated once; each test starts from a copy (migrating is slow)."""
    path = tmp_path_factory.mktemp("template") / "openha.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated throwaway PostgreSQL database, shared by the tests that need one."""
    if os.geteuid() != 0 or pg_bin() is None:
        pytest.skip("needs root and the PostgreSQL server (make setup installs it)")
    with postgres_server() as url:
        upgrade(url)
        yield url


@pytest.fixture
def session_factory(settings: Settings, migrated_template: Path) -> sessionmaker[Session]:
    target = Path(settings.database_url.removeprefix("sqlite:///"))
    shutil.copyfile(migrated_template, target)
    return make_session_factory(make_engine(settings.database_url))


@pytest.fixture(scope="session")
def shared_app(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Any:
    """One app for the session: building its routes takes a second or more (FastAPI
    prepares every route's parameters on the first request), so tests rebind it."""
    root = tmp_path_factory.mktemp("shared-app")
    url = f"sqlite:///{migrated_template}"
    return create_app(
        Settings(state_dir=root, database_url=url), make_session_factory(make_engine(url))
    )


@pytest.fixture
def app(shared_app: Any, settings: Settings, session_factory: sessionmaker[Session]) -> Any:
    """The API bound to this test's settings and fresh database."""
    bind(shared_app, settings, session_factory)
    return shared_app


@pytest.fixture
def tokens(session_factory: sessionmaker[Session]) -> dict[str, str]:
    with transaction(session_factory) as s:
        return {
            "admin": create_token(s, "admin", ["admin"]),
            "a": create_token(s, PROJECT_A, ["member"]),
            "b": create_token(s, PROJECT_B, ["member"]),
            "a_reader": create_token(s, PROJECT_A, ["reader"]),
        }


class Client:
    """A TestClient bound to one token, with Octavia's envelope helpers."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.http = client
        self.headers = {"X-Auth-Token": token}

    def request(self, method: str, path: str, **kw: Any) -> Any:
        return self.http.request(method, path, headers=self.headers, **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Any:
        return self.request("POST", path, json=body, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> Any:
        return self.request("PUT", path, json=body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)


@pytest.fixture
def http(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture
def admin(http: TestClient, tokens: dict[str, str]) -> Client:
    return Client(http, tokens["admin"])


@pytest.fixture
def alice(http: TestClient, tokens: dict[str, str]) -> Client:
    return Client(http, tokens["a"])


@pytest.fixture
def bob(http: TestClient, tokens: dict[str, str]) -> Client:
    return Client(http, tokens["b"])


@pytest.fixture
def alice_reader(http: TestClient, tokens: dict[str, str]) -> Client:
    return Client(http, tokens["a_reader"])


def add_shared_subnet(
    sessions: sessionmaker[Session],
    cidr: str = "198.51.100.0/24",
    gateway_ip: str = "198.51.100.1",
    allocation_pools: list[dict[str, str]] | None = None,
) -> str:
    """A shared VIP network and subnet, as an admin creates them through the networks API."""
    with transaction(sessions) as s:
        net = Network(
            project_id="admin",
            name="public",
            shared=True,
            network_type="flat",
            physical_network="ohtest-br",
        )
        s.add(net)
        s.flush()
        sub = Subnet(
            project_id="admin",
            network_id=net.id,
            name="public-v4",
            cidr=cidr,
            gateway_ip=gateway_ip,
            allocation_pools=allocation_pools or [],
        )
        s.add(sub)
        s.flush()
        return sub.id


@pytest.fixture
def subnet_id(session_factory: sessionmaker[Session]) -> str:
    return add_shared_subnet(
        session_factory, allocation_pools=[{"start": "198.51.100.10", "end": "198.51.100.250"}]
    )


@pytest.fixture
def controller(
    settings: Settings, session_factory: sessionmaker[Session], app: Any
) -> Iterator[Reconciler]:
    """A real reconcile loop in a thread, as `openha controller` runs it."""
    reconciler = Reconciler(settings, session_factory, app.state.providers)
    stop = threading.Event()
    thread = threading.Thread(target=reconciler.run, args=(stop,), daemon=True)
    thread.start()
    yield reconciler
    stop.set()
    thread.join(timeout=5)


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
