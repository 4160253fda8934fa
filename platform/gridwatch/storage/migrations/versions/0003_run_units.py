"""run units

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 15:30:00
"""

import sqlalchemy as sa
from alembic import op

from gridwatch.storage.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_units",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("grid_count", sa.Integer(), nullable=False),
        sa.Column("done_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["aggregation_runs.id"],
            name=op.f("fk_run_units_run_id_aggregation_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "label", name=op.f("pk_run_units")),
    )


def downgrade() -> None:
    op.drop_table("run_units")
