"""Octavia's policy (oslo.policy) as OpenHA enforces it: an operator's policy file,
both of Octavia's role sets, and the rules listed for `oslopolicy-sample-generator`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from openha.api.app import bind
from openha.api.policy import ROUTE_RULES, Policy, rule_for
from openha.credentials import create_token
from openha.db import transaction
from openha.settings import Settings
from tests.api.factories import POLICY_REFUSED, create_lb
from tests.conftest import PROJECT_A, PROJECT_B, Client

LBS = "/v2/lbaas/loadbalancers"


def _client(http: TestClient, sessions: sessionmaker[Session], project: str, *roles: str) -> Client:
    with transaction(sessions) as s:
        return Client(http, create_token(s, project, list(roles)))


def test_an_operators_policy_file_overrides_octavias_defaults(
    tmp_path: Path,
    app: Any,
    settings: Settings,
    session_factory: sessionmaker[Session],
    http: TestClient,
    alice: Client,
    admin: Client,
    subnet_id: str,
) -> None:
    create_lb(alice, subnet_id)
    policy = tmp_path / "policy.yaml"
    # What an Octavia operator's file looks like: YAML, rule name -> check string.
    policy.write_text(
        '"os_load-balancer_api:loadbalancer:get_all": "rule:load-balancer:admin"\n'
        '"os_load-balancer_api:loadbalancer:post": "role:admin"\n'
    )
    bind(app, settings.model_copy(update={"policy_file": policy}), session_factory)
    refused = alice.get(LBS)
    assert refused.status_code == 403
    assert refused.json()["faultstring"] == POLICY_REFUSED
    assert alice.post(LBS, {"loadbalancer": {"vip_subnet_id": subnet_id}}).status_code == 403
    assert len(admin.get(LBS).json()["loadbalancers"]) == 1
    # The rules the file does not name keep Octavia's defaults.
    assert alice.get("/v2/lbaas/listeners").status_code == 200


def test_octavias_advanced_rbac_roles_work_beside_keystones(
    http: TestClient, session_factory: sessionmaker[Session], alice: Client, subnet_id: str
) -> None:
    lb = create_lb(alice, subnet_id)
    one = f"{LBS}/{lb['id']}"
    lb_member = _client(http, session_factory, PROJECT_A, "load-balancer_member")
    observer = _client(http, session_factory, PROJECT_A, "load-balancer_observer")
    global_observer = _client(http, session_factory, PROJECT_B, "load-balancer_global_observer")
    nobody = _client(http, session_factory, PROJECT_A, "unrelated")
    assert lb_member.put(one, {"loadbalancer": {"name": "x"}}).status_code == 200
    assert observer.get(one).status_code == 200
    assert observer.put(one, {"loadbalancer": {"name": "y"}}).status_code == 403
    listed = global_observer.get(LBS).json()["loadbalancers"]
    assert [x["id"] for x in listed] == [lb["id"]]
    assert global_observer.get(one).status_code == 200
    assert global_observer.delete(one).status_code == 403
    # No role Octavia knows: refused, reads included.
    assert nobody.get(LBS).status_code == 403
    assert nobody.get(one).status_code == 403


def test_every_route_rule_is_a_registered_rule() -> None:
    registered = Policy().enforcer.registered_rules
    assert set(ROUTE_RULES.values()) <= set(registered)
    assert rule_for("GET", "/v2/manage/anything/{ident}") == "openha:manage"
    assert rule_for("GET", "/v2.0/lbaas/pools/{ident}") == "os_load-balancer_api:pool:get_one"


def test_sample_generator_lists_the_rules() -> None:
    generator = Path(sys.executable).parent / "oslopolicy-sample-generator"
    done = subprocess.run(
        [str(generator), "--namespace", "openha"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for name in (
        "os_load-balancer_api:loadbalancer:get_one",
        "os_load-balancer_api:quota:put",
        "load-balancer:member_and_owner",
        "openha:manage",
    ):
        assert f'#"{name}":' in done.stdout, name


def test_remembered_decisions_follow_an_edited_policy_file(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    rule = "os_load-balancer_api:loadbalancer:get_all"
    policy_file.write_text(f'"{rule}": "role:member"\n')
    policy = Policy(policy_file)
    policy.RULES_CHECK_SECONDS = 0  # look at the file on every decision
    member = policy.credentials(PROJECT_A, ["member"], "u1")
    assert policy.allowed(rule, PROJECT_A, member)
    assert policy.allowed(rule, PROJECT_A, member)  # remembered
    policy_file.write_text(f'"{rule}": "role:admin"\n')
    # oslo.policy reloads on a changed modification time: make it differ for sure.
    stat = policy_file.stat()
    os.utime(policy_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not policy.allowed(rule, PROJECT_A, member)
    # Decisions are per credentials and target: another project's is refused.
    assert not policy.allowed("os_load-balancer_api:loadbalancer:get_one", PROJECT_B, member)
    assert Policy(remember=False).allowed(rule, PROJECT_A, member)  # the default rule
