"""protection profiles: per-source limits, under-attack mode

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 12:40:00

- protection_profiles: named sets of per-source limits and guards (issue 12).
- load_balancers.protection_profile_id: an operator's profile for one LB.
- load_balancers.under_attack_profile_id / under_attack_since: under-attack mode.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "protection_profiles",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_protection_profiles")),
        sa.UniqueConstraint("name", name=op.f("uq_protection_profiles_name")),
    )
    with op.batch_alter_table("load_balancers") as batch_op:
        batch_op.add_column(sa.Column("protection_profile_id", sa.String(length=36), nullable=True))
        batch_op.add_column(
            sa.Column("under_attack_profile_id", sa.String(length=36), nullable=True)
        )
        batch_op.add_column(sa.Column("under_attack_since", sa.DateTime(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_load_balancers_protection_profile_id_protection_profiles"),
            "protection_profiles",
            ["protection_profile_id"],
            ["id"],
        )
        batch_op.create_foreign_key(
            op.f("fk_load_balancers_under_attack_profile_id_protection_profiles"),
            "protection_profiles",
            ["under_attack_profile_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("load_balancers") as batch_op:
        batch_op.drop_constraint(
            op.f("fk_load_balancers_under_attack_profile_id_protection_profiles"),
            type_="foreignkey",
        )
        batch_op.drop_constraint(
            op.f("fk_load_balancers_protection_profile_id_protection_profiles"),
            type_="foreignkey",
        )
        batch_op.drop_column("under_attack_since")
        batch_op.drop_column("under_attack_profile_id")
        batch_op.drop_column("protection_profile_id")
    op.drop_table("protection_profiles")
