"""The job-runner's tables: jobs and their labels."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobrunner_jobs"
    __table_args__ = (
        Index("ix_jobrunner_jobs_created", "created_at", "id"),
        # Covers the summary columns of a user's list (migration 0002): a list never reads
        # the rows themselves, so it costs the same whatever the size of the specs.
        Index(
            "ix_jobrunner_jobs_owner_summary",
            "owner",
            "created_at",
            "id",
            "name",
            "state",
            "reason",
            "started_at",
            "finished_at",
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    spec_hash: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(String(32), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    backend: Mapped[str] = mapped_column(String(16))
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    labels: Mapped[list[JobLabel]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True
    )


class JobLabel(Base):
    __tablename__ = "jobrunner_job_labels"
    __table_args__ = (Index("ix_jobrunner_job_labels_kv", "key", "value"),)

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobrunner_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
