"""The diagnostics routes' answers that need no data plane: refusals, scoping, fallback.

A load balancer of the noop provider has no instance; one is placed by hand on a
host whose agent URL answers nothing, so the answer must say the agent is
unreachable and fall back to what the last heartbeat told the database.
"""

from __future__ import annotations

import socket

from sqlalchemy.orm import Session, sessionmaker

from openha.db import transaction
from openha.models import Host, Instance
from tests.api.factories import create_lb
from tests.conftest import Client


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refusals_and_scoping(admin: Client, alice: Client, bob: Client, subnet_id: str) -> None:
    lb = create_lb(alice, subnet_id)
    tenant_url = f"/v2/lbaas/loadbalancers/{lb['id']}/diagnostics"
    admin_url = f"/v2/manage/loadbalancers/{lb['id']}/diagnostics"
    assert alice.get(f"{tenant_url}?probe=everything").status_code == 400
    assert admin.get(f"{admin_url}?probe=hosts").status_code == 400
    assert bob.get(tenant_url).status_code == 403  # another project's LB (Octavia's answer)
    assert alice.get(admin_url).status_code == 403  # the operator's route is admin-only
    assert bob.get(admin_url).status_code == 403
    assert admin.get("/v2/manage/loadbalancers/nope/diagnostics").status_code == 404
    mine = alice.get(tenant_url)
    assert mine.status_code == 200, mine.text
    assert mine.json()["diagnostics"]["instances"] == []
    assert admin.get(admin_url).json()["diagnostics"]["loadbalancer"]["id"] == lb["id"]


def test_an_unreachable_agent_falls_back_to_the_last_heartbeat(
    admin: Client, alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    lb = create_lb(alice, subnet_id)
    heard = {
        "instance_id": "",
        "state": "ACTIVE",
        "applied_generation": 3,
        "haproxy_running": True,
        "members": {"m-1": "DOWN"},
        "pools": {"p-1": "DOWN"},
    }
    with transaction(session_factory) as s:
        host = Host(
            name="diag-silent",
            credential_hash="x" * 64,
            management_url=f"http://127.0.0.1:{_closed_port()}",
            agent_secret="s",
        )
        s.add(host)
        s.flush()
        inst = Instance(load_balancer_id=lb["id"], host_id=host.id, health=heard)
        s.add(inst)
        s.flush()
        instance_id = inst.id
    full = admin.get(f"/v2/manage/loadbalancers/{lb['id']}/diagnostics")
    assert full.status_code == 200, full.text
    (answer,) = full.json()["diagnostics"]["instances"]
    assert answer["instance_id"] == instance_id and answer["reachable"] is False
    assert "unreachable" in answer["error"] and "live" not in answer
    assert answer["host"]["name"] == "diag-silent"
    assert answer["fallback"]["source"] == "last heartbeat"
    assert answer["fallback"]["status"]["members"] == {"m-1": "DOWN"}
    # The tenant sees its members' last known states, and nothing of the host.
    subset = alice.get(f"/v2/lbaas/loadbalancers/{lb['id']}/diagnostics").json()
    (mine,) = subset["diagnostics"]["instances"]
    assert mine == {
        "role": "STANDALONE",
        "reachable": False,
        "fallback": {
            "source": "last heartbeat",
            "heartbeat_at": None,
            "members": {"m-1": "DOWN"},
            "pools": {"p-1": "DOWN"},
        },
    }
    assert "diag-silent" not in str(subset) and "127.0.0.1" not in str(subset)
