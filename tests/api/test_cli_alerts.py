"""`openha events` and `openha webhook …` against a real API server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from openha import events
from openha.cli import app as cli
from openha.db import transaction
from openha.settings import Settings
from tests.conftest import wait_for


@pytest.fixture
def api_url(app: Any, settings: Settings) -> Iterator[str]:
    app.state.settings = settings.model_copy(update={"event_follow_max_seconds": 1.5})
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def run(api_url: str, token: str, *args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--api-url", api_url, "--token", token])
    assert result.exit_code == 0, result.output
    return result


def test_events_and_webhooks_from_the_command_line(
    api_url: str, tokens: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    admin = [api_url, tokens["admin"]]
    with transaction(session_factory) as s:
        events.emit(s, "host.down", "host h1 silent", severity="ERROR", host_id="h1")
        events.emit(s, "host.up", "host h1 back", host_id="h1")
    shown = run(*admin, "events", "--kind", "host.down", "--json").output.splitlines()
    assert [json.loads(line)["message"] for line in shown] == ["host h1 silent"]
    table = run(*admin, "events", "--host", "h1").output
    assert "host h1 silent" in table and "host h1 back" in table
    assert table.index("silent") < table.index("back")  # oldest first

    def later() -> None:
        time.sleep(0.5)
        with transaction(session_factory) as s:
            events.emit(s, "host.down", "host h2 silent", severity="ERROR", host_id="h2")

    threading.Thread(target=later).start()
    followed = run(*admin, "events", "-f", "--min-severity", "ERROR", "--limit", "2").stdout
    # The last page, then what came after it, each once (the API ends the stream).
    assert followed.count("host h1 silent") == 1 and followed.count("host h2 silent") == 1

    made = run(*admin, "webhook", "create", "http://127.0.0.1:9/x", "--kind", "host.*")
    secret = made.stdout.strip()
    assert len(secret) >= 32 and "\n" not in secret
    (hook,) = [json.loads(x) for x in run(*admin, "webhook", "list", "--json").stdout.splitlines()]
    assert hook["kinds"] == ["host.*"] and hook["all_projects"] and "secret" not in hook
    run(*admin, "webhook", "set", hook["id"], "--disable")
    assert "disabled" in run(*admin, "webhook", "list").output
    # Tenants: their own webhooks and events.
    tenant = [api_url, tokens["a"]]
    assert run(*tenant, "events", "--tenant", "--json").stdout == ""
    run(
        *tenant,
        "webhook",
        "create",
        "https://hooks.example.com/a",
        "--tenant",
        "--secret",
        "x" * 20,
    )
    assert run(*tenant, "webhook", "list", "--tenant", "--json").stdout.count("\n") == 1
    failed = CliRunner().invoke(
        cli, ["webhook", "list", "--api-url", api_url, "--token", tokens["a"]]
    )
    assert failed.exit_code == 1 and "403" in failed.output
    run(*admin, "webhook", "deliveries", hook["id"])
    run(*admin, "webhook", "delete", hook["id"])
    assert run(*admin, "webhook", "list", "--json").stdout.count("\n") == 1  # the tenant's
