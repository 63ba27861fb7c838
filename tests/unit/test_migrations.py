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


def assert_failover_marks_carried_over(url: str) -> None:
    """0002: an instance marked by its status word before the upgrade keeps its mark."""
    from alembic import command
    from sqlalchemy import text

    from openha.db import alembic_config

    cfg = alembic_config(url)
    command.upgrade(cfg, "0001")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO load_balancers (id, project_id, provisioning_status,"
                " operating_status, admin_state_up, tags, name, description, provider,"
                " vip_vnic_type, desired_generation, applied_generation, failover_requested,"
                " attempts, created_at) VALUES ('lb', 'p', 'ACTIVE', 'ONLINE', true, '', '',"
                " '', 'haproxy', 'normal', 1, 1, true, 0, '2026-01-01 00:00:00')"
            )
        )
        for ident, status in (("i1", "PENDING_FAILOVER"), ("i2", "ACTIVE")):
            conn.execute(
                text(
                    "INSERT INTO instances (id, load_balancer_id, role, status,"
                    " applied_generation, health, created_at) VALUES (:id, 'lb', 'MASTER',"
                    " :status, 1, '{}', '2026-01-01 00:00:00')"
                ),
                {"id": ident, "status": status},
            )
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        marked = dict(conn.execute(text("SELECT id, failover_requested_at FROM instances")).all())
    assert marked["i1"] is not None and marked["i2"] is None
    command.downgrade(cfg, "0001")
    command.upgrade(cfg, "head")
    engine.dispose()


def test_sqlite_upgrade_keeps_failover_marks(tmp_path: Path) -> None:
    assert_failover_marks_carried_over(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.skipif(
    os.geteuid() != 0 or pg_bin() is None,
    reason="needs root and the PostgreSQL server (make setup installs it)",
)
def test_postgresql_upgrade_keeps_failover_marks() -> None:
    with postgres_server() as url:
        assert_failover_marks_carried_over(url)
