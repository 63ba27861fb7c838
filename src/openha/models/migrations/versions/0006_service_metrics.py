"""service metrics: what a controller publishes with its liveness beats

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 00:00:00

- services.metrics: a controller's reconcile counters and durations (JSON), which
  the API's /metrics serves (the controller has no HTTP server of its own).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("services") as batch_op:
        batch_op.add_column(sa.Column("metrics", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("services") as batch_op:
        batch_op.drop_column("metrics")
