"""prevention tasks: plan recommendations assigned, tracked and measured

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 20:45:00
"""

import sqlalchemy as sa
from alembic import op

from gridwatch.storage.types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prevention_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("township_id", sa.Integer(), nullable=False),
        sa.Column("station_id", sa.Integer(), nullable=True),
        sa.Column("grid_ids", sa.JSON(), nullable=False),
        sa.Column("assignee", sa.String(length=200), nullable=False),
        sa.Column("assignee_user_id", sa.Integer(), nullable=True),
        sa.Column("due_date", sa.String(length=10), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("done_at", UTCDateTime(), nullable=True),
        sa.Column("source_plan", sa.String(length=32), nullable=False),
        sa.Column("source_ref", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["township_id"], ["areas.id"], name=op.f("fk_prevention_tasks_township_id_areas")
        ),
        sa.ForeignKeyConstraint(
            ["station_id"], ["stations.id"], name=op.f("fk_prevention_tasks_station_id_stations")
        ),
        sa.ForeignKeyConstraint(
            ["assignee_user_id"],
            ["users.id"],
            name=op.f("fk_prevention_tasks_assignee_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prevention_tasks")),
    )
    with op.batch_alter_table("prevention_tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prevention_tasks_status"), ["status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_prevention_tasks_township_id"), ["township_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("prevention_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prevention_tasks_township_id"))
        batch_op.drop_index(batch_op.f("ix_prevention_tasks_status"))
    op.drop_table("prevention_tasks")
