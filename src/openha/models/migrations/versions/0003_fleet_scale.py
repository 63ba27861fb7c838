"""fleet scale: work and observation queues in rows, service liveness, capacity that sticks

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10 10:00:00

- load_balancers: `reconcile_requested` and the partial index of due LBs (the
  controller's work queue); `health_generation`/`observed_generation` and the
  partial index of LBs to observe (the observation queue). Every existing LB is
  observed once after the upgrade (health_generation starts at 1).
- hosts: `capacity` becomes the operator's setting (NULL: from the host's
  resources) and `reported_capacity` what the agent measures. Before this
  revision the agent's registration overwrote `capacity` every time, so what it
  holds is the agent's figure: it moves to `reported_capacity`.
  `placement_version` lets a heartbeat answer skip the list of wanted instances.
- services: APIs and controllers beating while they live.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DUE = {
    "sqlite": "load_balancers.desired_generation > load_balancers.applied_generation"
    " OR load_balancers.reconcile_requested = 1 OR load_balancers.failover_requested = 1",
    "postgresql": "load_balancers.desired_generation > load_balancers.applied_generation"
    " OR load_balancers.reconcile_requested OR load_balancers.failover_requested",
}
OBSERVATION_DUE = "load_balancers.health_generation > load_balancers.observed_generation"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("load_balancers") as batch_op:
        batch_op.add_column(
            sa.Column(
                "reconcile_requested", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch_op.add_column(
            sa.Column("health_generation", sa.BigInteger(), nullable=False, server_default="1")
        )
        batch_op.add_column(
            sa.Column("observed_generation", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("load_balancers") as batch_op:
        batch_op.alter_column("reconcile_requested", server_default=None)
        batch_op.alter_column("health_generation", server_default=None)
        batch_op.alter_column("observed_generation", server_default=None)
    op.create_index(
        "ix_load_balancers_due",
        "load_balancers",
        ["next_attempt_at"],
        unique=False,
        sqlite_where=sa.text(DUE["sqlite"]) if dialect == "sqlite" else None,
        postgresql_where=sa.text(DUE["postgresql"]) if dialect == "postgresql" else None,
    )
    op.create_index(
        "ix_load_balancers_observation_due",
        "load_balancers",
        ["id"],
        unique=False,
        sqlite_where=sa.text(OBSERVATION_DUE),
        postgresql_where=sa.text(OBSERVATION_DUE),
    )

    with op.batch_alter_table("hosts") as batch_op:
        batch_op.add_column(
            sa.Column("reported_capacity", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("placement_version", sa.BigInteger(), nullable=False, server_default="0")
        )
    hosts = sa.table(
        "hosts",
        sa.column("capacity", sa.Integer),
        sa.column("reported_capacity", sa.Integer),
    )
    op.execute(hosts.update().values(reported_capacity=hosts.c.capacity))
    with op.batch_alter_table("hosts") as batch_op:
        batch_op.alter_column("reported_capacity", server_default=None)
        batch_op.alter_column("placement_version", server_default=None)
        batch_op.alter_column("capacity", existing_type=sa.Integer(), nullable=True)
    op.execute(hosts.update().values(capacity=None))

    op.create_table(
        "services",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("host_name", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_services")),
    )
    op.create_index(op.f("ix_services_kind"), "services", ["kind"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_services_kind"), table_name="services")
    op.drop_table("services")
    hosts = sa.table(
        "hosts",
        sa.column("capacity", sa.Integer),
        sa.column("reported_capacity", sa.Integer),
    )
    op.execute(
        hosts.update()
        .where(hosts.c.capacity.is_(None))
        .values(capacity=sa.func.coalesce(sa.func.nullif(hosts.c.reported_capacity, 0), 100))
    )
    with op.batch_alter_table("hosts") as batch_op:
        batch_op.alter_column("capacity", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("placement_version")
        batch_op.drop_column("reported_capacity")
    op.drop_index("ix_load_balancers_observation_due", table_name="load_balancers")
    op.drop_index("ix_load_balancers_due", table_name="load_balancers")
    with op.batch_alter_table("load_balancers") as batch_op:
        batch_op.drop_column("observed_generation")
        batch_op.drop_column("health_generation")
        batch_op.drop_column("reconcile_requested")
