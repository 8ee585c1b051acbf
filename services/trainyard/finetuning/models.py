"""The finetuning service's tables: database connections (URI encrypted at rest), golden records,
finetunings (with their held-out records and evaluation) and the job-runner watch cursor."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from trainyard.runtime.clock import utcnow


class Base(DeclarativeBase):
    pass


class DbConnection(Base):
    __tablename__ = "finetuning_db_connections"
    __table_args__ = (UniqueConstraint("owner", "alias", name="uq_finetuning_connection_alias"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    alias: Mapped[str] = mapped_column(String(255))
    dialect: Mapped[str] = mapped_column(String(32))
    #: The URI, Fernet-encrypted (it carries the password).
    uri_encrypted: Mapped[str] = mapped_column(Text)
    #: The URI with its password masked: what answers show.
    uri_masked: Mapped[str] = mapped_column(Text)
    schemas: Mapped[list[str]] = mapped_column(JSON, default=list)
    meta: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GoldenRecord(Base):
    __tablename__ = "finetuning_golden_records"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    #: Creation order (ids are random).
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    db_connection_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("finetuning_db_connections.id", ondelete="CASCADE"), index=True
    )
    question: Mapped[str] = mapped_column(Text)
    sql_query: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Finetuning(Base):
    __tablename__ = "finetuning_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    db_connection_id: Mapped[str] = mapped_column(String(36), index=True)
    alias: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: {model_provider, model_name, model_parameters} as answered (parameters as strings).
    base_llm: Mapped[dict[str, Any]] = mapped_column(JSON)
    provider_file_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    provider_job_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    model_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: Every golden record id the finetuning uses (training and held out), as answered.
    golden_records: Mapped[list[str]] = mapped_column(JSON)
    #: The ids held out of training for the evaluation.
    held_out: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: The records' question and SQL, copied at creation: deleting a golden record later
    #: changes no finetuning.
    records: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    meta: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    #: The evaluation (FinetuningEvaluation's fields) once there is one.
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: The job-runner job of the current workload, and how many were started.
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Cursor(Base):
    """The last job-runner WatchJobs revision applied."""

    __tablename__ = "finetuning_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
