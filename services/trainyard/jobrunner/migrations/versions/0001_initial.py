"""initial: jobs and labels

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobrunner_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True, unique=True),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("handle", sa.JSON(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_jobrunner_jobs_created", "jobrunner_jobs", ["created_at", "id"])
    op.create_table(
        "jobrunner_job_labels",
        sa.Column(
            "job_id",
            sa.String(36),
            sa.ForeignKey("jobrunner_jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )
    op.create_index("ix_jobrunner_job_labels_kv", "jobrunner_job_labels", ["key", "value"])


def downgrade() -> None:
    op.drop_table("jobrunner_job_labels")
    op.drop_table("jobrunner_jobs")
