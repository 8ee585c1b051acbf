"""event revisions: a persisted event sequence, and each job's revision of its last change

WatchJobs resumes from a revision (ListJobs returns the current one), so the sequence must
survive restarts and be shared by every write: one counter row in jobrunner_event_counter,
bumped in the same transaction as each state change, whose new value goes into the job's
updated_seq. Jobs that exist before this migration all get revision 1 (and the counter starts
at 1 when there are any), so a watch since 0 replays them and one since 1 does not.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "jobrunner_jobs",
        sa.Column("updated_seq", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_index("ix_jobrunner_jobs_updated_seq", "jobrunner_jobs", ["updated_seq"])
    counter = op.create_table(
        "jobrunner_event_counter",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    jobs = sa.table("jobrunner_jobs", sa.column("id"), sa.column("updated_seq", sa.BigInteger()))
    bind = op.get_bind()
    existing = bind.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one()
    bind.execute(jobs.update().values(updated_seq=1))
    op.bulk_insert(counter, [{"id": 1, "value": 1 if existing else 0}])


def downgrade() -> None:
    op.drop_table("jobrunner_event_counter")
    op.drop_index("ix_jobrunner_jobs_updated_seq", table_name="jobrunner_jobs")
    op.drop_column("jobrunner_jobs", "updated_seq")
