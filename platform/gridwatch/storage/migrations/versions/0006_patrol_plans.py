"""patrol plans: planned routes per station and shift, for adherence

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 18:10:00
"""

import sqlalchemy as sa
from alembic import op

from gridwatch.storage.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patrol_plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("station_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("shift", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["station_id"], ["stations.id"], name=op.f("fk_patrol_plans_station_id_stations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patrol_plans")),
    )
    with op.batch_alter_table("patrol_plans", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patrol_plans_station_id"), ["station_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("patrol_plans", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patrol_plans_station_id"))
    op.drop_table("patrol_plans")
