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
# seconds: they run one at a time.
DATA_PLANE_MARKERS = ("integration", "e2e")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`), the data-plane tests
    form one group that a single worker runs, in order and first, while the others take
    the unit and API tests (which share nothing but the CPU)."""
    data_plane = [i for i in items if any(m in i.keywords for m in DATA_PLANE_MARKERS)]
    rest = [i for i in items if not any(m in i.keywords for m in DATA_PLANE_MARKERS)]
    for item in data_plane:
        item.add_marker(pytest.mark.xdist_group("data-plane"))
    items[:] = data_plane + rest


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
