"""audit trail: every write through the API

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 09:30:00

- audit_records: who (project, token id, roles) wrote what (method, path, object ids,
  the body's sha256), when, and how it ended (status code).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=True),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=2048), nullable=False),
        sa.Column("object_ids", sa.Text(), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_records")),
    )
    op.create_index(
        op.f("ix_audit_records_created_at"), "audit_records", ["created_at"], unique=False
    )
    op.create_index(
        op.f("ix_audit_records_project_id"), "audit_records", ["project_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_records_project_id"), table_name="audit_records")
    op.drop_index(op.f("ix_audit_records_created_at"), table_name="audit_records")
    op.drop_table("audit_records")
