"""The `openha` CLI chores, clouds.yaml, the all-in-one bootstrap and its supervisor."""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openstack.config
import pytest
import yaml
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import delete, select
from typer.testing import CliRunner

from openha import allinone, clouds, db, hosts
from openha.api.app import create_app
from openha.cli import app
from openha.models import Host, Token
from openha.settings import Settings


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A fresh state directory that does not exist yet, selected through the environment."""
    for key in [k for k in os.environ if k.startswith("OPENHA_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("OPENHA_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("OPENHA_API_BIND", "127.0.0.1:19999")
    # The CLI configures the root logger, as a process entry point should; undo it after.
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield Settings()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def sessions(settings: Settings) -> Any:
    return db.make_session_factory(db.make_engine(settings.database_url))


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


# --- token create / host enroll -------------------------------------------------------


def test_token_create_prints_only_a_working_token(env: Settings) -> None:
    result = invoke("token", "create", "--project", "p1", "--role", "member", "--role", "reader")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and len(lines[0]) >= 40 and " " not in lines[0]
    token = lines[0]

    client = TestClient(create_app(env, sessions(env)))
    ok = client.get("/v2/lbaas/loadbalancers", headers={"X-Auth-Token": token})
    assert ok.status_code == 200, ok.text
    bad = client.get("/v2/lbaas/loadbalancers", headers={"X-Auth-Token": token + "x"})
    assert bad.status_code == 401

    with db.transaction(sessions(env)) as s:
        [row] = s.scalars(select(Token)).all()
        assert (row.project_id, row.roles) == ("p1", ["member", "reader"])
        assert row.token_hash != token  # only the hash is stored


def test_token_roles_are_checked_and_admin_tokens_are_admins(env: Settings) -> None:
    refused = invoke("token", "create", "--project", "p1", "--role", "root")
    assert refused.exit_code == 2
    assert refused.stdout == ""
    assert "unknown role" in refused.stderr

    admin = invoke("token", "create", "--project", "admin", "--role", "admin").stdout.strip()
    reader = invoke("token", "create", "--project", "p2", "--role", "reader").stdout.strip()
    client = TestClient(create_app(env, sessions(env)))
    body = {"network": {"provider:network_type": "flat", "provider:physical_network": "br0"}}
    assert (
        client.post("/v2.0/networks", json=body, headers={"X-Auth-Token": admin}).status_code == 201
    )
    assert (
        client.post("/v2.0/networks", json=body, headers={"X-Auth-Token": reader}).status_code
        == 403
    )


def test_host_enroll_prints_only_the_credential(env: Settings) -> None:
    result = invoke("host", "enroll", "lb-host-1", "--az", "az1")
    assert result.exit_code == 0, result.output
    [credential] = result.stdout.splitlines()
    factory = sessions(env)
    with db.transaction(factory) as s:
        host = hosts.authenticate(s, credential)
        assert host is not None
        assert (host.name, host.availability_zone) == ("lb-host-1", "az1")

    # Re-enrolling rotates the credential: the old one stops working.
    rotated = invoke("host", "enroll", "lb-host-1").stdout.strip()
    assert rotated != credential
    with db.transaction(factory) as s:
        assert hosts.authenticate(s, credential) is None
        host = hosts.authenticate(s, rotated)
        assert host is not None and host.availability_zone == "az1"


# --- clouds.yaml ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bind", "endpoint"),
    [
        ("127.0.0.1:9876", "http://127.0.0.1:9876"),
        ("0.0.0.0:80", "http://127.0.0.1:80"),
        ("[::]:9876", "http://[::1]:9876"),
        ("[2001:db8::5]:9876", "http://[2001:db8::5]:9876"),
        ("lb.example.com:9876", "http://lb.example.com:9876"),
    ],
)
def test_endpoint_for_bind(bind: str, endpoint: str) -> None:
    assert clouds.endpoint_for_bind(bind) == endpoint


def test_clouds_yaml_content_and_mode(tmp_path: Path) -> None:
    path = clouds.write(tmp_path / "var" / "clouds.yaml", "http://127.0.0.1:9876", "s3cr-et_")
    assert path.stat().st_mode & 0o777 == 0o600
    parsed = yaml.safe_load(path.read_text())
    assert parsed == {
        "clouds": {
            "openha": {
                "auth_type": "admin_token",
                "auth": {"endpoint": "http://127.0.0.1:9876", "token": "s3cr-et_"},
                "region_name": "RegionOne",
                "interface": "public",
            }
        }
    }
    assert clouds.read(path) == ("http://127.0.0.1:9876", "s3cr-et_")
    assert clouds.read(tmp_path / "missing.yaml") is None
    # openstacksdk reads it as the admin_token plugin pointed at our endpoint.
    region = openstack.config.OpenStackConfig(config_files=[str(path)], vendor_files=[]).get_one(
        cloud="openha"
    )
    assert region.config["auth_type"] == "admin_token"
    assert region.config["auth"] == {"endpoint": "http://127.0.0.1:9876", "token": "s3cr-et_"}


def test_clouds_yaml_keeps_a_valid_token_and_replaces_a_dead_one(env: Settings) -> None:
    db.upgrade_schema(env)
    factory = sessions(env)
    path = env.state_dir / "clouds.yaml"
    token, created = allinone.ensure_clouds_yaml(factory, path, "http://127.0.0.1:1")
    assert created
    assert allinone.ensure_clouds_yaml(factory, path, "http://127.0.0.1:1") == (token, False)
    # A new bind address rewrites the endpoint and keeps the token.
    assert allinone.ensure_clouds_yaml(factory, path, "http://127.0.0.1:2") == (token, False)
    assert clouds.read(path) == ("http://127.0.0.1:2", token)

    with db.transaction(factory) as s:
        s.execute(delete(Token))
    fresh, created = allinone.ensure_clouds_yaml(factory, path, "http://127.0.0.1:2")
    assert created and fresh != token
    assert clouds.read(path) == ("http://127.0.0.1:2", fresh)
    client = TestClient(create_app(env, factory))
    resp = client.get("/v2.0/networks", headers={"X-Auth-Token": fresh})
    assert resp.status_code == 200


def test_enrolment_is_reused_until_it_stops_working(env: Settings) -> None:
    db.upgrade_schema(env)
    factory = sessions(env)
    first = allinone.ensure_enrolment(factory, env)
    cred_file = env.state_dir / allinone.CREDENTIAL_FILE
    assert cred_file.stat().st_mode & 0o777 == 0o600
    assert allinone.ensure_enrolment(factory, env) == first
    with db.transaction(factory) as s:
        s.execute(delete(Host))
    second = allinone.ensure_enrolment(factory, env)
    assert second != first
    assert cred_file.read_text().strip() == second
    with db.transaction(factory) as s:
        host = hosts.authenticate(s, second)
        assert host is not None and host.name == env.host_name


def test_bootstrap_without_agent(env: Settings) -> None:
    boot = allinone.bootstrap(env, with_agent=False)
    assert boot.endpoint == "http://127.0.0.1:19999"
    assert boot.clouds_path == env.state_dir / "clouds.yaml"
    assert boot.token_created and boot.agent_credential is None
    assert boot.agent_skipped_because == "disabled with --no-agent"
    assert not boot.has_subnets
    children = allinone.build_children(env, boot, "info")
    assert [c.name for c in children] == ["api", "controller"]
    assert children[0].env["OPENHA_STATE_DIR"] == str(env.state_dir)
    assert children[0].env["OPENHA_DATABASE_URL"] == env.database_url
    assert allinone.bootstrap(env, with_agent=False).token_created is False


# --- supervisor -----------------------------------------------------------------------


def _child(name: str, code: str) -> allinone.Child:
    return allinone.Child(name, [sys.executable, "-c", code], {"PATH": "/usr/bin:/bin"})


def test_supervisor_restarts_with_backoff_and_stops_everything() -> None:
    out = io.StringIO()
    crasher = _child("crasher", "import sys; print('boom', flush=True); sys.exit(3)")
    stubborn = _child(
        "stubborn",
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)",
    )
    sup = allinone.Supervisor([crasher, stubborn], Console(file=out, width=200))
    started = time.monotonic()
    try:
        while crasher.failures < 2 and time.monotonic() - started < 10:
            sup.check()
            time.sleep(0.02)
        # The restart waited the first backoff; the healthy child was never restarted.
        assert crasher.failures == 2
        assert time.monotonic() - started >= allinone.BACKOFF_FIRST
        assert stubborn.proc is not None and stubborn.proc.poll() is None
        while "ready" not in out.getvalue() and time.monotonic() - started < 10:
            time.sleep(0.02)
        stubborn_pid = stubborn.proc.pid
        assert "crasher | boom" in out.getvalue()
    finally:
        t0 = time.monotonic()
        sup.stop_all(timeout=0.5)
    # It ignored SIGTERM, so it had to be killed once the timeout passed.
    assert 0.4 <= time.monotonic() - t0 < 5
    assert sup.running() == []
    with pytest.raises(ProcessLookupError):
        os.kill(stubborn_pid, 0)


def test_restart_delays_stay_short() -> None:
    delays = [allinone.restart_delay(n) for n in range(1, 10)]
    assert delays[:4] == [0.25, 0.5, 1.0, 2.0]
    assert max(delays) == allinone.BACKOFF_MAX <= 5


def test_supervisor_forgets_old_crashes_once_a_child_is_healthy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 13.4: the backoff restarts from its shortest delay after a healthy run."""
    monkeypatch.setattr(allinone, "HEALTHY_UPTIME", 0.3)
    sleeper = _child("sleeper", "import time; time.sleep(60)")
    sup = allinone.Supervisor([sleeper], Console(file=io.StringIO(), width=200))
    try:
        sup.check()
        assert sleeper.proc is not None
        sleeper.failures = 6  # as if it had flapped a while before this run
        time.sleep(0.4)
        sup.check()
        assert sleeper.failures == 0
        sleeper.proc.kill()
        sleeper.proc.wait()
        sup.check()
        assert sleeper.failures == 1
        assert sleeper.next_start - time.monotonic() <= allinone.BACKOFF_FIRST
    finally:
        sup.stop_all(timeout=0.5)
