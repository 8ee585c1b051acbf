"""The upload service's tables: one row per committed upload and one per file."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from trainyard.runtime.clock import utcnow


class Base(DeclarativeBase):
    pass


class Upload(Base):
    """A committed upload: written only after every file is stored."""

    __tablename__ = "upload_uploads"
    __table_args__ = (Index("ix_upload_uploads_owner_created", "owner", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    file_count: Mapped[int] = mapped_column(Integer)
    total_size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    files: Mapped[list[UploadFile]] = relationship(
        back_populates="upload",
        order_by="UploadFile.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="selectin",
    )


class UploadFile(Base):
    """One stored file of an upload: its sanitized name, storage key, size and SHA-256."""

    __tablename__ = "upload_files"
    __table_args__ = (
        UniqueConstraint("upload_id", "name", name="uq_upload_files_upload_name"),
        UniqueConstraint("upload_id", "position", name="uq_upload_files_upload_position"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    upload_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("upload_uploads.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    storage_key: Mapped[str] = mapped_column(String(1024))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))

    upload: Mapped[Upload] = relationship(back_populates="files")
