"""certificate store: Barbican-style secrets (payloads sealed at rest) and containers,
and when each TLS listener's certificate expires

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _common() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("creator_id", sa.String(length=255), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "certstore_secrets",
        *_common(),
        sa.Column("secret_type", sa.String(length=32), nullable=False),
        sa.Column("algorithm", sa.String(length=255), nullable=True),
        sa.Column("bit_length", sa.Integer(), nullable=True),
        sa.Column("mode", sa.String(length=255), nullable=True),
        sa.Column("expiration", sa.DateTime(), nullable=True),
        sa.Column("payload_content_type", sa.String(length=255), nullable=True),
        sa.Column("sealed_payload", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certstore_secrets")),
    )
    op.create_index(op.f("ix_certstore_secrets_project_id"), "certstore_secrets", ["project_id"])
    op.create_table(
        "certstore_containers",
        *_common(),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("secret_refs", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certstore_containers")),
    )
    op.create_index(
        op.f("ix_certstore_containers_project_id"), "certstore_containers", ["project_id"]
    )
    op.create_table(
        "certificate_expiry",
        sa.Column("listener_id", sa.String(length=36), nullable=False),
        sa.Column("load_balancer_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("not_after", sa.DateTime(), nullable=False),
        sa.Column("warned", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("listener_id", name=op.f("pk_certificate_expiry")),
    )
    op.create_index(
        op.f("ix_certificate_expiry_load_balancer_id"), "certificate_expiry", ["load_balancer_id"]
    )
    op.create_index(op.f("ix_certificate_expiry_not_after"), "certificate_expiry", ["not_after"])


def downgrade() -> None:
    op.drop_table("certificate_expiry")
    op.drop_table("certstore_containers")
    op.drop_table("certstore_secrets")
