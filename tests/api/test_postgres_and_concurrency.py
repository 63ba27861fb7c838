"""The same service on PostgreSQL, and concurrent writers merged into one apply."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from openha.api.app import create_app
from openha.controller.reconciler import Reconciler
from openha.credentials import create_token
from openha.db import make_engine, make_session_factory, transaction
from openha.settings import Settings
from tests.conftest import Client, add_shared_subnet, wait_for


def run_concurrent_lifecycle(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """20 writers change one LB's members at once; all land, none gets a 409."""
    app = create_app(settings, sessions)
    with transaction(sessions) as s:
        token = create_token(s, "p1", ["member"])
    subnet_id = add_shared_subnet(sessions)
    reconciler = Reconciler(settings, sessions, app.state.providers)
    stop = threading.Event()
    loop = threading.Thread(target=reconciler.run, args=(stop,), daemon=True)
    loop.start()
    try:
        with TestClient(app) as http:
            api = Client(http, token)
            lb = api.post(
                "/v2/lbaas/loadbalancers",
                {
                    "loadbalancer": {
                        "vip_subnet_id": subnet_id,
                        "listeners": [
                            {
                                "protocol": "HTTP",
                                "protocol_port": 80,
                                "default_pool": {
                                    "name": "p",
                                    "protocol": "HTTP",
                                    "lb_algorithm": "ROUND_ROBIN",
                                },
                            }
                        ],
                    }
                },
            )
            assert lb.status_code == 201, lb.text
            lb_id = lb.json()["loadbalancer"]["id"]
            pool_id = lb.json()["loadbalancer"]["listeners"][0]["default_pool_id"]
            codes: list[int] = []

            def add(i: int) -> None:
                resp = api.post(
                    f"/v2/lbaas/pools/{pool_id}/members",
                    {"member": {"address": f"192.0.2.{100 + i}", "protocol_port": 80}},
                )
                codes.append(resp.status_code)

            writers = [threading.Thread(target=add, args=(i,)) for i in range(20)]
            for w in writers:
                w.start()
            for w in writers:
                w.join()
            assert codes == [201] * 20

            def settled() -> Any:
                body = api.get(f"/v2/lbaas/loadbalancers/{lb_id}").json()["loadbalancer"]
                return body["provisioning_status"] == "ACTIVE"

            wait_for(settled, 20)
            members = api.get(f"/v2/lbaas/pools/{pool_id}/members").json()["members"]
            assert len(members) == 20
            assert {m["provisioning_status"] for m in members} == {"ACTIVE"}
            assert api.delete(f"/v2/lbaas/loadbalancers/{lb_id}?cascade=true").status_code == 204
            wait_for(lambda: api.get(f"/v2/lbaas/loadbalancers/{lb_id}").status_code == 404, 20)
    finally:
        stop.set()
        loop.join(5)


def test_concurrent_writers_on_sqlite(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    run_concurrent_lifecycle(settings, session_factory)


def test_concurrent_writers_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path,
        database_url=postgres_url,
        default_provider="noop",
        controller_interval=0.05,
    )
    engine = make_engine(postgres_url)
    try:
        run_concurrent_lifecycle(settings, make_session_factory(engine))
    finally:
        engine.dispose()


def test_noauth_takes_the_project_from_headers(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    settings = Settings(state_dir=tmp_path, auth="noauth", default_provider="noop")
    with TestClient(create_app(settings, session_factory)) as http:
        assert (
            http.get("/v2/lbaas/loadbalancers", headers={"X-Project-Id": "p9"}).json()[
                "loadbalancers"
            ]
            == []
        )
        assert http.get("/v2/manage/hosts", headers={"X-Project-Id": "p9"}).status_code == 403
        assert http.get("/v2/manage/hosts").status_code == 200  # no project: admin
