"""The job-runner's tables: jobs and their labels.

States, reasons and specs are stored as the plain strings and JSON of trainyard.jobrunner.domain
and read back as its types, here and nowhere else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from trainyard.jobrunner.domain import JobReason, JobSpec, JobState, parse_reason, parse_state
from trainyard.runtime.clock import utcnow

log = structlog.get_logger("trainyard.jobrunner.models")


class StateColumn(TypeDecorator[JobState]):
    """A JobState stored as its name. A stored string that is no state this version knows (a
    newer version's, or a hand edit) is logged and read as FAILED, so the job reads as ended
    and nothing acts on it, instead of every read of it failing."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: JobState | None, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> JobState | None:
        if value is None:
            return None
        state = parse_state(value)
        if state is None:
            log.warning("job.unknown_state", stored=value[:32], read_as=JobState.FAILED.value)
            return JobState.FAILED
        return state


class ReasonColumn(TypeDecorator[JobReason]):
    """A JobReason stored as its name ("" for none); an unknown one is logged and read as none."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: JobReason | None, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> JobReason | None:
        if value is None:
            return None
        reason = parse_reason(value)
        if reason is None:
            log.warning("job.unknown_reason", stored=value[:32])
            return JobReason.NONE
        return reason


class SpecColumn(TypeDecorator[JobSpec]):
    """A JobSpec stored as the JSON of JobSpec.to_json."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: JobSpec | None, dialect: Dialect) -> Any:
        return None if value is None else value.to_json()

    def process_result_value(self, value: Any, dialect: Dialect) -> JobSpec | None:
        return None if value is None else JobSpec.from_json(value)


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
    spec: Mapped[JobSpec] = mapped_column(SpecColumn)
    state: Mapped[JobState] = mapped_column(StateColumn, index=True)
    reason: Mapped[JobReason] = mapped_column(ReasonColumn, default=JobReason.NONE)
    message: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    backend: Mapped[str] = mapped_column(String(16))
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: The event revision of the job's last state change (EventCounter's value then).
    updated_seq: Mapped[int] = mapped_column(BigInteger, default=0, index=True)

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


class EventCounter(Base):
    """The one row (id 1) holding the last event revision issued (migration 0004)."""

    __tablename__ = "jobrunner_event_counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
