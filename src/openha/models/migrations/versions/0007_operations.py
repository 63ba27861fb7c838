"""operations: admin actions the controller advances step by step; migration marks

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 00:00:00

- operations: one row per admin action (migrate, drain, ...), its state and steps.
- instances.migration: STAGED / RETIRING while a migration builds or drains it.
- load_balancers.failover_target_host_id: where a migration's rebuild goes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "operations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("parent_id", sa.String(length=36), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operations")),
    )
    for column in ("kind", "target_id", "state", "parent_id"):
        op.create_index(op.f(f"ix_operations_{column}"), "operations", [column])
    with op.batch_alter_table("instances") as batch_op:
        batch_op.add_column(sa.Column("migration", sa.String(length=16), nullable=True))
    with op.batch_alter_table("load_balancers") as batch_op:
        batch_op.add_column(
            sa.Column("failover_target_host_id", sa.String(length=36), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("load_balancers") as batch_op:
        batch_op.drop_column("failover_target_host_id")
    with op.batch_alter_table("instances") as batch_op:
        batch_op.drop_column("migration")
    for column in ("kind", "target_id", "state", "parent_id"):
        op.drop_index(op.f(f"ix_operations_{column}"), table_name="operations")
    op.drop_table("operations")
