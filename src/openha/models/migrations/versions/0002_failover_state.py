"""failover state in rows: the instance marked for failover, the host its replacement avoids

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch_op:
        batch_op.add_column(sa.Column("failover_requested_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("load_balancers") as batch_op:
        batch_op.add_column(sa.Column("failover_left_host_id", sa.String(length=36), nullable=True))
    # Before this revision a failover request was only the instance's status word.
    instances = sa.table(
        "instances",
        sa.column("status", sa.String),
        sa.column("failover_requested_at", sa.DateTime),
    )
    op.execute(
        instances.update()
        .where(instances.c.status == "PENDING_FAILOVER")
        .values(failover_requested_at=datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    )


def downgrade() -> None:
    with op.batch_alter_table("load_balancers") as batch_op:
        batch_op.drop_column("failover_left_host_id")
    with op.batch_alter_table("instances") as batch_op:
        batch_op.drop_column("failover_requested_at")
