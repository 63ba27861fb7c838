"""The Alembic migrations build exactly the schema the models describe (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from openha.db import upgrade
from openha.models import Base
from tests.pg import pg_bin, postgres_server


def assert_models_match(url: str) -> None:
    upgrade(url)
    upgrade(url)  # idempotent: services run it on every start
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_sqlite_schema_matches_models(tmp_path: Path) -> None:
    assert_models_match(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.skipif(
    os.geteuid() != 0 or pg_bin() is None,
    reason="needs root and the PostgreSQL server (make setup installs it)",
)
def test_postgresql_schema_matches_models() -> None:
    with postgres_server() as url:
        assert_models_match(url)
