"""experiments: models, the product's experiment record, status history, watch cursor

The 0001 table was never written (every RPC answered UNIMPLEMENTED): it is replaced.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("clustering_experiments")
    op.create_table(
        "clustering_models",
        sa.Column("model_id", sa.String(63), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "clustering_experiments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "model_id",
            sa.String(63),
            sa.ForeignKey("clustering_models.model_id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("product_name", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("datasets", sa.JSON(), nullable=False),
        sa.Column("model_prefix", sa.String(255), nullable=True),
        sa.Column("job_id", sa.String(64), nullable=True, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "clustering_status_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "experiment_id",
            sa.String(36),
            sa.ForeignKey("clustering_experiments.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "clustering_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("clustering_cursors")
    op.drop_table("clustering_status_changes")
    op.drop_table("clustering_experiments")
    op.drop_table("clustering_models")
    op.create_table(
        "clustering_experiments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("model_id", sa.String(63), nullable=False, index=True),
        sa.Column("training_status", sa.String(16), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
