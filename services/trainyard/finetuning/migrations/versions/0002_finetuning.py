"""finetuning: database connections, golden records, finetunings, watch cursor

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
    op.drop_table("finetuning_finetunings")
    op.create_table(
        "finetuning_db_connections",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("alias", sa.String(255), nullable=False),
        sa.Column("dialect", sa.String(32), nullable=False),
        sa.Column("uri_encrypted", sa.Text(), nullable=False),
        sa.Column("uri_masked", sa.Text(), nullable=False),
        sa.Column("schemas", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("owner", "alias", name="uq_finetuning_connection_alias"),
    )
    op.create_table(
        "finetuning_golden_records",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False, index=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column(
            "db_connection_id",
            sa.String(36),
            sa.ForeignKey("finetuning_db_connections.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("sql_query", sa.Text(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "finetuning_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("db_connection_id", sa.String(36), nullable=False, index=True),
        sa.Column("alias", sa.String(255), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("base_llm", sa.JSON(), nullable=False),
        sa.Column("provider_file_id", sa.String(255), nullable=True),
        sa.Column("provider_job_id", sa.String(255), nullable=True),
        sa.Column("model_id", sa.String(255), nullable=True),
        sa.Column("golden_records", sa.JSON(), nullable=False),
        sa.Column("held_out", sa.JSON(), nullable=False),
        sa.Column("records", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("evaluation", sa.JSON(), nullable=True),
        sa.Column("job_id", sa.String(64), nullable=True, index=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "finetuning_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("finetuning_cursors")
    op.drop_table("finetuning_jobs")
    op.drop_table("finetuning_golden_records")
    op.drop_table("finetuning_db_connections")
    op.create_table(
        "finetuning_finetunings",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("db_connection_id", sa.String(36), nullable=False, index=True),
        sa.Column("alias", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
