"""ndb feedback: upvotes, associations and implicit events given on ndb models

Revision ID: 0004_ndb_feedback (after 0003_token_feedback)
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_ndb_feedback"
down_revision = "0003_token_feedback"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orchestrator_ndb_feedback",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "model_id",
            sa.String(36),
            sa.ForeignKey("orchestrator_models.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("event", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_orchestrator_ndb_feedback_model_id", "orchestrator_ndb_feedback", ["model_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_orchestrator_ndb_feedback_model_id", "orchestrator_ndb_feedback")
    op.drop_table("orchestrator_ndb_feedback")
