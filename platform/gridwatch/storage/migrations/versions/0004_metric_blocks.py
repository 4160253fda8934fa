"""metric blocks and run parts replace per-area metric rows; daily situation reports

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 17:10:00
"""

import sqlalchemy as sa
from alembic import op

from gridwatch.storage.types import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_blocks",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=32), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("period_kind", sa.String(length=16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["aggregation_runs.id"],
            name=op.f("fk_metric_blocks_run_id_aggregation_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "level", "period", name=op.f("pk_metric_blocks")),
    )
    op.create_table(
        "run_parts",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["aggregation_runs.id"],
            name=op.f("fk_run_parts_run_id_aggregation_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "unit", "name", name=op.f("pk_run_parts")),
    )
    op.create_table(
        "situation_reports",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["aggregation_runs.id"],
            name=op.f("fk_situation_reports_run_id_aggregation_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_situation_reports")),
    )
    with op.batch_alter_table("aggregation_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("extras", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("area_metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_area_metrics_run_level_period")
    op.drop_table("area_metrics")
    # Runs published before blocks existed have no metrics any more: mark them so that
    # readers wait for the next run instead of showing an empty one.
    op.execute("UPDATE aggregation_runs SET status = 'failed' WHERE status = 'done'")


def downgrade() -> None:
    op.create_table(
        "area_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("area_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=32), nullable=False),
        sa.Column("period_kind", sa.String(length=16), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("incidents_total", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["area_id"], ["areas.id"], name=op.f("fk_area_metrics_area_id_areas")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["aggregation_runs.id"],
            name=op.f("fk_area_metrics_run_id_aggregation_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_area_metrics")),
        sa.UniqueConstraint(
            "run_id", "area_id", "period", name=op.f("uq_area_metrics_run_id_area_id_period")
        ),
    )
    with op.batch_alter_table("area_metrics", schema=None) as batch_op:
        batch_op.create_index(
            "ix_area_metrics_run_level_period", ["run_id", "level", "period"], unique=False
        )
    with op.batch_alter_table("aggregation_runs", schema=None) as batch_op:
        batch_op.drop_column("extras")
    op.drop_table("situation_reports")
    op.drop_table("run_parts")
    op.drop_table("metric_blocks")
