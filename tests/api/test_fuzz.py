"""Property-based fuzz of every operation the API describes (schemathesis, in-process).

Each operation of `/openapi.json` gets generated requests, valid and invalid, sent
as an admin (who may call everything) to the app on SQLite through its ASGI
interface. Every answer must be no 5xx, with a status code, content type and body
that the document declares for it. The run is bounded and derandomised so that it
takes the same cases every time (`make test`); `make fuzz` runs many more.

Schemathesis' coverage phase (every boundary of every parameter, hundreds of cases
for a list with twenty filters) runs for the writes in `make test`; the lists'
query strings have their own tests (test_query_strings.py), and `make fuzz` covers
every operation.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session, sessionmaker

from openha.api.app import create_app
from openha.credentials import create_token
from openha.db import make_engine, make_session_factory, transaction, upgrade
from openha.settings import Settings

# `make fuzz` sets OPENHA_FUZZ_EXAMPLES for a long run; `make test` takes a few per operation.
MAX_EXAMPLES = int(os.environ.get("OPENHA_FUZZ_EXAMPLES", "6"))
# `make fuzz` sets OPENHA_FUZZ_COVERAGE=all; else the coverage phase skips reads.
COVERAGE_OF_READS = os.environ.get("OPENHA_FUZZ_COVERAGE") == "all"
CONFIG = SchemathesisConfig.from_dict(
    {}
    if COVERAGE_OF_READS
    else {"operations": [{"include-method": "GET", "phases": {"coverage": {"enabled": False}}}]}
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _fuzzed_app() -> tuple[Any, str]:
    """One app and database for the whole run: the fuzz needs no clean slate per case.

    Built when the module is collected, as schemathesis reads the document then."""
    root = Path(tempfile.mkdtemp(prefix="openha-fuzz-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # no fixture outlives collection
    url = f"sqlite:///{root / 'openha.db'}"
    upgrade(url)
    settings = Settings(
        state_dir=root / "state",
        database_url=url,
        auth="token",
        default_provider="noop",
        service_beat_interval=60,
        service_dead_after=180,
        # A followed event stream ends at once: a generated `follow=true` must not hang.
        event_follow_max_seconds=0.5,
    )
    sessions: sessionmaker[Session] = make_session_factory(make_engine(url))
    with transaction(sessions) as s:
        token = create_token(s, "admin", ["admin"])
    return create_app(settings, sessions), token


APP, TOKEN = _fuzzed_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


@pytest.mark.fuzz
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation(case: Any) -> None:
    case.call_and_validate(headers={"X-Auth-Token": TOKEN}, checks=CHECKS)


def test_every_operation_is_fuzzed() -> None:
    """Each route in the document is an operation of the fuzz."""
    with TestClient(APP) as client:
        paths = client.get("/openapi.json").json()["paths"]
    operations = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
    declared = {(m.upper(), p) for p, ops in paths.items() for m in ops}
    assert operations == declared
    assert len(operations) > 80
