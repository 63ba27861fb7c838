"""request bodies: members re-added while their deletion is pending, idempotency keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-11 00:00:00

- members: the unique (pool, address, port) holds for live members only (a partial
  unique index leaving PENDING_DELETE rows out), so a member may be added again
  before the controller has removed the one being deleted.
- idempotency_keys: the answers of creates sent with an `Idempotency-Key` header.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "provisioning_status != 'PENDING_DELETE'"


def upgrade() -> None:
    with op.batch_alter_table("members") as batch_op:
        batch_op.drop_constraint("uq_members_pool_id", type_="unique")
    op.create_index(
        "uq_members_live_address",
        "members",
        ["pool_id", "address", "protocol_port"],
        unique=True,
        sqlite_where=sa.text(LIVE),
        postgresql_where=sa.text(LIVE),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("route", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint(
            "project_id", "route", "key", name=op.f("uq_idempotency_keys_project_id")
        ),
    )
    op.create_index(
        op.f("ix_idempotency_keys_created_at"), "idempotency_keys", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_idempotency_keys_created_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    # Rows being deleted may now repeat a live member's address: they go first.
    op.execute("DELETE FROM members WHERE provisioning_status = 'PENDING_DELETE'")
    op.drop_index("uq_members_live_address", table_name="members")
    with op.batch_alter_table("members") as batch_op:
        batch_op.create_unique_constraint(
            "uq_members_pool_id", ["pool_id", "address", "protocol_port"]
        )
