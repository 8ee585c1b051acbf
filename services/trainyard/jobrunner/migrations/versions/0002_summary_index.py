"""summary index: a user's jobs newest first, read from the index alone

The job list reads summaries (owner, times, name, state, reason), never the spec. On SQLite the
columns stored after a large spec JSON in the row can only be read by walking the spec's
overflow pages, so a list of jobs with 256 KiB specs cost several times one with 1 KiB specs;
with this covering index the list is answered from the index and its cost no longer depends on
the size of the specs. It also serves the owner filter and the newest-first order (and the
cursor) of a paged list without a sort.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = [
    "owner",
    "created_at",
    "id",
    "name",
    "state",
    "reason",
    "started_at",
    "finished_at",
]


def upgrade() -> None:
    op.create_index("ix_jobrunner_jobs_owner_summary", "jobrunner_jobs", COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_jobrunner_jobs_owner_summary", table_name="jobrunner_jobs")
