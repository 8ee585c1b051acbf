"""token feedback: corrected tags given on nlp-token models, for nlp-token-retrain

Revision ID: 0003_token_feedback
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_token_feedback"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orchestrator_token_feedback",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "model_id",
            sa.String(36),
            sa.ForeignKey("orchestrator_models.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("tokens", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_orchestrator_token_feedback_model_id", "orchestrator_token_feedback", ["model_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_orchestrator_token_feedback_model_id", "orchestrator_token_feedback")
    op.drop_table("orchestrator_token_feedback")
