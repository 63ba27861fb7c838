"""Admin operations against stand-in agents: migrate, drain, undrain, delete a host, bad input.

The controller runs for real (its operations engine and reconciles) against
`FakeAgent`s, which apply anything and drain a retired instance at once; what
the data plane does is the integration tests' job (tests/integration/test_migrate.py).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from openha import hosts, opsclient
from openha.api.app import create_app
from openha.cli import app as cli_app
from openha.controller import opkinds
from openha.controller.operations import OperationContext, OperationRunner
from openha.controller.reconciler import Reconciler
from openha.db import transaction
from openha.domain import constants as c
from openha.models import Host, Instance, Operation
from openha.settings import Settings
from tests.api.factories import create_lb
from tests.api.fakeagents import FakeAgent
from tests.conftest import Client, wait_for


@dataclass
class Fleet:
    settings: Settings
    sessions: sessionmaker[Session]
    http: TestClient
    tenant: Client
    admin: Client
    agents: dict[str, FakeAgent]
    host_ids: dict[str, str]
    stop: threading.Event
    loop: threading.Thread

    def hosts_of(self, lb_id: str) -> list[str | None]:
        with transaction(self.sessions) as s:
            return sorted(
                s.scalars(select(Instance.host_id).where(Instance.load_balancer_id == lb_id)),
                key=str,
            )

    def name_of(self, host_id: str | None) -> str:
        return next(n for n, i in self.host_ids.items() if i == host_id)

    def lb(self) -> str:
        lb = create_lb(self.tenant, self.subnet_id())
        wait_for(lambda: self.status(lb["id"]) == "ACTIVE", 20)
        return str(lb["id"])

    def subnet_id(self) -> str:
        return self._subnet

    def status(self, lb_id: str) -> str:
        return str(
            self.tenant.get(f"/v2/lbaas/loadbalancers/{lb_id}").json()["loadbalancer"][
                "provisioning_status"
            ]
        )

    def operation(self, location: str) -> dict[str, Any]:
        return dict(self.admin.get(location).json()["operation"])

    def finished(self, location: str, timeout: float = 30) -> dict[str, Any]:
        return wait_for(
            lambda: (
                (op := self.operation(location))["state"]
                in (c.OPERATION_SUCCEEDED, c.OPERATION_FAILED)
                and op
            ),
            timeout,
        )

    def operations(self) -> int:
        with transaction(self.sessions) as s:
            return int(s.scalar(select(func.count(Operation.id))) or 0)

    _subnet: str = ""


def register(http: TestClient, sessions: sessionmaker[Session], name: str, url: str) -> str:
    with transaction(sessions) as s:
        secret = hosts.enroll(s, name)
    body = {"name": name, "management_url": url, "agent_secret": "s", "agent_dir": "/tmp/oha"}
    resp = http.post("/v2/agent/register", headers={"Authorization": f"Bearer {secret}"}, json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["host_id"])


@pytest.fixture
def fleet(
    settings: Settings,
    session_factory: sessionmaker[Session],
    subnet_id: str,
    tokens: dict[str, str],
) -> Iterator[Fleet]:
    haproxy = settings.model_copy(
        update={
            "default_provider": "haproxy",
            "host_down_after": 600.0,
            "retry_backoff_max": 1.0,
            "drain_concurrency": 2,
            "migrate_drain_timeout": 2.0,
        }
    )
    app = create_app(haproxy, session_factory)
    controller = Reconciler(haproxy, session_factory, app.state.providers)
    stop = threading.Event()
    loop = threading.Thread(target=controller.run, args=(stop,), daemon=True)
    agents = {name: FakeAgent() for name in ("h1", "h2", "h3")}
    with TestClient(app) as http:
        ids = {name: register(http, session_factory, name, a.url) for name, a in agents.items()}
        loop.start()
        world = Fleet(
            haproxy,
            session_factory,
            http,
            Client(http, tokens["a"]),
            Client(http, tokens["admin"]),
            agents,
            ids,
            stop,
            loop,
        )
        world._subnet = subnet_id
        try:
            yield world
        finally:
            stop.set()
            loop.join(30)
            for agent in agents.values():
                agent.close()


def test_migrate_builds_the_new_instance_before_retiring_the_old(fleet: Fleet) -> None:
    lb = fleet.lb()
    (old_host,) = fleet.hosts_of(lb)
    target = next(n for n, i in fleet.host_ids.items() if i != old_host)
    resp = fleet.admin.post(f"/v2/manage/loadbalancers/{lb}/migrate", {"host": target})
    assert resp.status_code == 202, resp.text
    location = resp.headers["Location"]
    assert location == f"/v2/manage/operations/{resp.json()['operation']['id']}"
    # One migration of an LB at a time: refused while the first runs (or, once it is
    # done, because the LB runs there already); no second operation either way.
    again = fleet.admin.post(f"/v2/manage/loadbalancers/{lb}/migrate", {"host": target})
    assert again.status_code == 409, again.text
    op = fleet.finished(location)
    assert op["state"] == c.OPERATION_SUCCEEDED, op
    steps = [s["step"] for s in op["steps"]]
    # Make-before-break: built and checked before the switch, the old one retired after.
    order = ["staged", "built", "ready", "switched", "retired", "drained", "removed", "done"]
    assert [s for s in steps if s in order] == order
    assert fleet.hosts_of(lb) == [fleet.host_ids[target]]
    old_agent = fleet.agents[fleet.name_of(old_host)]
    assert old_agent.retired and old_agent.deleted == old_agent.retired
    assert fleet.status(lb) == "ACTIVE"
    listed = fleet.admin.get("/v2/manage/operations", params={"target_id": lb}).json()
    assert [o["id"] for o in listed["operations"]] == [op["id"]]


def test_bad_migrations_are_refused_and_change_nothing(fleet: Fleet) -> None:
    lb = fleet.lb()
    (home,) = fleet.hosts_of(lb)
    home_name = fleet.name_of(home)
    down, other = [n for n in sorted(fleet.host_ids) if n != home_name]
    url = f"/v2/manage/loadbalancers/{lb}/migrate"
    with transaction(fleet.sessions) as s:
        s.execute(update(Host).where(Host.name == down).values(status=c.HOST_DOWN))
    cases = [
        ({"host": "no-such-host"}, 400, "not found"),
        ({"host": home_name}, 409, "already runs"),
        ({"host": down}, 409, "DOWN"),
        ({}, 400, "exactly one"),
        ({"host": other, "availability_zone": "x"}, 400, "exactly one"),
        ({"availability_zone": "nowhere"}, 400, "No host"),
        ({"hostname": other}, 400, ""),
    ]
    for body, code, words in cases:
        resp = fleet.admin.post(url, body)
        assert resp.status_code == code, (body, resp.text)
        assert words in resp.text, (body, resp.text)
    unknown = fleet.admin.post("/v2/manage/loadbalancers/nope/migrate", {"host": other})
    assert unknown.status_code == 404
    assert fleet.tenant.post(url, {"host": other}).status_code == 403
    assert fleet.operations() == 0
    assert fleet.hosts_of(lb) == [home]


def test_drain_empties_the_host_which_then_may_be_deleted(fleet: Fleet) -> None:
    lbs = [fleet.lb() for _ in range(5)]
    counts: dict[str | None, int] = {}
    for lb in lbs:
        for h in fleet.hosts_of(lb):
            counts[h] = counts.get(h, 0) + 1
    busiest = max(counts, key=lambda h: counts[h])
    name = fleet.name_of(busiest)
    assert fleet.admin.delete(f"/v2/manage/hosts/{name}").status_code == 409
    resp = fleet.admin.post(f"/v2/manage/hosts/{name}/drain", None)
    assert resp.status_code == 202, resp.text
    again = fleet.admin.post(f"/v2/manage/hosts/{name}/drain", None)  # the same drain
    assert again.json()["operation"]["id"] == resp.json()["operation"]["id"]
    op = fleet.finished(resp.headers["Location"], timeout=60)
    assert op["state"] == c.OPERATION_SUCCEEDED, op
    assert op["progress"]["total"] == counts[busiest]
    host = fleet.admin.get(f"/v2/manage/hosts/{name}").json()["host"]
    assert (host["admin_state"], host["instance_count"]) == (c.HOST_DRAINED, 0)
    assert all(busiest not in fleet.hosts_of(lb) for lb in lbs)
    children = fleet.admin.get("/v2/manage/operations", params={"parent_id": op["id"]}).json()
    assert len(children["operations"]) == counts[busiest]
    # A new LB never lands on the drained host.
    assert busiest not in fleet.hosts_of(fleet.lb())
    assert fleet.admin.delete(f"/v2/manage/hosts/{name}").status_code == 204
    assert fleet.admin.get(f"/v2/manage/hosts/{name}").status_code == 404
    # Undrain gives a host back to the scheduler.
    other = next(n for n in fleet.host_ids if n != name)
    fleet.admin.post(f"/v2/manage/hosts/{other}/drain", None)
    back = fleet.admin.post(f"/v2/manage/hosts/{other}/undrain", None)
    assert back.status_code == 200 and back.json()["host"]["admin_state"] == c.HOST_ENABLED


def test_an_operation_resumes_under_another_controller(fleet: Fleet) -> None:
    """A controller that stopped mid-operation: the next one carries on from the rows."""
    lb = fleet.lb()
    fleet.stop.set()
    fleet.loop.join(30)
    (old_host,) = fleet.hosts_of(lb)
    target = next(n for n, i in fleet.host_ids.items() if i != old_host)
    location = fleet.admin.post(f"/v2/manage/loadbalancers/{lb}/migrate", {"host": target}).headers[
        "Location"
    ]
    ctx = OperationContext(fleet.settings, fleet.sessions, fleet.http.app.state.providers)  # type: ignore[attr-defined]
    first = OperationRunner(ctx, opkinds.KINDS, owner="gone-controller")
    for _ in range(4):  # planned, next, staged, built
        first.advance_due()
    op_id = location.rsplit("/", 1)[-1]
    with transaction(fleet.sessions) as s:
        row = s.get(Operation, op_id)
        assert row is not None and row.state == c.OPERATION_RUNNING
        # It died holding its claim: a controller that is not beating holds nothing.
        row.lease_owner = "gone-controller"
    second = OperationRunner(ctx, opkinds.KINDS, owner="next-controller")
    wait_for(
        lambda: (
            (second.advance_due(), fleet.operation(location)["state"])[1] == c.OPERATION_SUCCEEDED
        ),
        30,
    )
    assert fleet.hosts_of(lb) == [fleet.host_ids[target]]


def test_the_cli_client_starts_and_follows_a_migration(
    fleet: Fleet, tokens: dict[str, str]
) -> None:
    """`openha migrate --wait` as `opsclient` does it, on the API's own client."""
    lb = fleet.lb()
    (home,) = fleet.hosts_of(lb)
    target = next(n for n, i in fleet.host_ids.items() if i != home)
    api = fleet.http
    api.headers["X-Auth-Token"] = tokens["admin"]
    out = io.StringIO()
    op = opsclient.migrate(api, lb, target, None)
    done = opsclient.follow(api, op["id"], Console(file=out, width=200), interval=0.1)
    assert done["state"] == c.OPERATION_SUCCEEDED
    assert "switched" in out.getvalue() and "removed" in out.getvalue()
    with pytest.raises(opsclient.OpsError, match="409"):
        opsclient.migrate(api, lb, target, None)
    result = CliRunner().invoke(cli_app, ["migrate", lb])
    assert result.exit_code == 2 and "--host or --az" in result.output
