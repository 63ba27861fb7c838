"""`openha demo` pieces that need no root: its record, its status tree, its refusals.

The real flow (bridge, servers, load balancer, curl, --clean) is
tests/integration/test_demo.py.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from openha.cli import app
from openha.demo import DEMO_FILE, DemoError, DemoRecord, DemoServer, clean_demo, status_tree


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for key in [k for k in os.environ if k.startswith("OPENHA_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("OPENHA_STATE_DIR", str(tmp_path))
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield tmp_path
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_record_round_trip(tmp_path: Path) -> None:
    record = DemoRecord(prefix="ohdemo", api_url="http://127.0.0.1:9876", vip="10.1.2.100")
    record.servers.append(DemoServer("web1", "ohdemo-web1", "10.1.2.2", 8080, pid=42))
    record.save(tmp_path / DEMO_FILE)
    loaded = DemoRecord.load(tmp_path / DEMO_FILE)
    assert loaded == record
    assert loaded.curl == "curl http://10.1.2.100/"
    (tmp_path / DEMO_FILE).write_text("{not json")
    with pytest.raises(DemoError, match="not a demo record"):
        DemoRecord.load(tmp_path / DEMO_FILE)


def test_status_tree_shows_every_object() -> None:
    tree = {
        "name": "demo",
        "provisioning_status": "ACTIVE",
        "operating_status": "ONLINE",
        "listeners": [
            {
                "name": "demo-http",
                "provisioning_status": "ACTIVE",
                "operating_status": "ONLINE",
                "pools": [
                    {
                        "name": "demo-web",
                        "provisioning_status": "ACTIVE",
                        "operating_status": "DEGRADED",
                        "health_monitor": {
                            "name": "demo-check",
                            "type": "HTTP",
                            "provisioning_status": "ACTIVE",
                            "operating_status": "ONLINE",
                        },
                        "members": [
                            {
                                "name": "web1",
                                "address": "10.1.2.2",
                                "protocol_port": 8080,
                                "provisioning_status": "ACTIVE",
                                "operating_status": "ERROR",
                            }
                        ],
                    }
                ],
            }
        ],
    }
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(status_tree(tree, "10.1.2.100"))
    text = out.getvalue()
    for line in (
        "loadbalancer demo 10.1.2.100 ACTIVE/ONLINE",
        "listener demo-http ACTIVE/ONLINE",
        "pool demo-web ACTIVE/DEGRADED",
        "healthmonitor demo-check (HTTP) ACTIVE/ONLINE",
        "member web1 10.1.2.2:8080 ACTIVE/ERROR",
    ):
        assert line in text, text


def test_clean_without_a_demo_changes_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    assert clean_demo(tmp_path, "http://127.0.0.1:1", "t", Console(file=out)) is False
    assert "No demo" in out.getvalue()


def test_cli_needs_a_token(state: Path) -> None:
    result = CliRunner().invoke(app, ["demo"], env={"OS_TOKEN": ""})
    assert result.exit_code == 2
    assert "no token" in result.output and "clouds.yaml" in result.output
    assert not (state / DEMO_FILE).exists()


def test_cli_reports_an_unreachable_api(state: Path) -> None:
    result = CliRunner().invoke(
        app, ["demo", "--api-url", "http://127.0.0.1:9", "--token", "secret"]
    )
    assert result.exit_code == 1
    # Root is checked first; the API next.
    assert ("unreachable" if os.geteuid() == 0 else "needs root") in result.output
    assert not (state / DEMO_FILE).exists()
