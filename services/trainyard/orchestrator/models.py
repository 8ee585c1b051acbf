"""The orchestrator's tables: the model registry and the messages trainers report."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from trainyard.runtime.clock import utcnow


class Base(DeclarativeBase):
    pass


TRAIN_STATUSES = ("not_started", "starting", "in_progress", "complete", "failed", "stopped")
#: Statuses a training never leaves.
FINAL_STATUSES = ("complete", "failed", "stopped")


class Model(Base):
    """A Model Bazaar model: its owner, type, train status and lineage."""

    __tablename__ = "orchestrator_models"
    __table_args__ = (
        UniqueConstraint("owner", "name", name="uq_orchestrator_models_owner_name"),
        Index("ix_orchestrator_models_access_created", "access", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    owner: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), default="not_started")
    access: Mapped[str] = mapped_column(String(16), default="private")
    base_model_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    train_config: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    model_metadata: Mapped[str | None] = mapped_column("metadata", Text, nullable=True)
    report: Mapped[str | None] = mapped_column(Text, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    #: Folder URI of the model's artifacts (`.../models/<id>/`), set when the training starts.
    artifact_uri: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class ModelMessage(Base):
    """A warning or error a trainer reported for a model."""

    __tablename__ = "orchestrator_model_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("orchestrator_models.id", ondelete="CASCADE"), index=True
    )
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Cursor(Base):
    """A named position in another service's event stream (the job-runner's WatchJobs
    revision), so a restarted orchestrator resumes where it stopped."""

    __tablename__ = "orchestrator_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


# ---- datagen and token feedback (issue 11) ----------------------------------------------------


class TokenFeedback(Base):
    """A sentence with corrected tags, given on an nlp-token model; nlp-token-retrain trains a
    new model on the base model's feedback."""

    __tablename__ = "orchestrator_token_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("orchestrator_models.id", ondelete="CASCADE"), index=True
    )
    #: Who gave it (the model's owner or a reader of a public model).
    user: Mapped[str] = mapped_column(String(255))
    tokens: Mapped[list[str]] = mapped_column(JSON)
    tags: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# ---- ndb feedback (issue 11) -------------------------------------------------------------------

#: Kinds of NdbFeedback rows: the ndb-retrain config keys they feed.
NDB_FEEDBACK_KINDS = ("upvote", "associate", "implicit")


class NdbFeedback(Base):
    """One piece of feedback a user gave on an ndb model: an upvote (`text` = query,
    `target` = reference id), an association (`text` = source phrase, `target` = target phrase)
    or an implicit event (an upvote with its `event`, e.g. "click"). ndb-retrain trains a new
    model from the base and its feedback."""

    __tablename__ = "orchestrator_ndb_feedback"
    __table_args__ = (Index("ix_orchestrator_ndb_feedback_model_id", "model_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("orchestrator_models.id", ondelete="CASCADE")
    )
    username: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    event: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
