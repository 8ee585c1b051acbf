"""initial: uploads and their files

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
        "upload_uploads",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("total_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_upload_uploads_owner_created", "upload_uploads", ["owner", "created_at", "id"]
    )
    op.create_table(
        "upload_files",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "upload_id",
            sa.String(36),
            sa.ForeignKey("upload_uploads.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("storage_key", sa.String(1024), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.UniqueConstraint("upload_id", "name", name="uq_upload_files_upload_name"),
        sa.UniqueConstraint("upload_id", "position", name="uq_upload_files_upload_position"),
    )


def downgrade() -> None:
    op.drop_table("upload_files")
    op.drop_index("ix_upload_uploads_owner_created", table_name="upload_uploads")
    op.drop_table("upload_uploads")
