"""training: artifact location, finish time, the job-event cursor

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orchestrator_models") as batch:
        batch.add_column(sa.Column("artifact_uri", sa.String(2048), nullable=True))
        batch.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_orchestrator_models_job_id", "orchestrator_models", ["job_id"])
    op.create_index(
        "ix_orchestrator_models_access_created", "orchestrator_models", ["access", "created_at"]
    )
    op.create_table(
        "orchestrator_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("orchestrator_cursors")
    op.drop_index("ix_orchestrator_models_access_created", "orchestrator_models")
    op.drop_index("ix_orchestrator_models_job_id", "orchestrator_models")
    with op.batch_alter_table("orchestrator_models") as batch:
        batch.drop_column("finished_at")
        batch.drop_column("artifact_uri")
