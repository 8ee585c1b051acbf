"""The clustering service's tables: models (a modelId and its owner), experiments (one per
training request) with the history of their statuses, and the job-runner watch cursor."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from trainyard.runtime.clock import utcnow


class Base(DeclarativeBase):
    pass


class ClusteringModel(Base):
    """A modelId: whose it is (a modelId belongs to the user who first trained it)."""

    __tablename__ = "clustering_models"

    model_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Experiment(Base):
    """One training request of a model."""

    __tablename__ = "clustering_experiments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    model_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("clustering_models.model_id", ondelete="CASCADE"), index=True
    )
    owner: Mapped[str] = mapped_column(String(255))
    product_name: Mapped[str] = mapped_column(Text)
    status: Mapped[int] = mapped_column(Integer, default=0)
    percent: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[list[Any]] = mapped_column(JSON, default=list)
    datasets: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: The blob prefix of the model artifact this experiment serves (its own, or the one it
    #: redeployed), set once known.
    model_prefix: Mapped[str | None] = mapped_column(String(255), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class StatusChange(Base):
    """Every status an experiment went through, in order."""

    __tablename__ = "clustering_status_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("clustering_experiments.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[int] = mapped_column(Integer)
    percent: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Cursor(Base):
    """The last job-runner WatchJobs revision applied."""

    __tablename__ = "clustering_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
