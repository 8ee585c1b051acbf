"""The model registry: models, who may read or change them, their train status and the
messages their trainers report. Knows nothing of gRPC, the job-runner or blob storage."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, and_, bindparam, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from trainyard.orchestrator.models import (
    FINAL_STATUSES,
    TRAIN_STATUSES,
    Cursor,
    Model,
    ModelMessage,
    NdbFeedback,
    TokenFeedback,
)
from trainyard.runtime.clock import as_utc, utcnow
from trainyard.runtime.db import Cursors, reader_of
from trainyard.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from trainyard.runtime.pagination import checked_page_size, decode_page_token, encode_page_token
from trainyard.runtime.readcache import ReadCache

__all__ = [
    "CALLBACK_STATUSES",
    "FINAL_STATUSES",
    "MESSAGE_LEVELS",
    "TRAIN_STATUSES",
    "ModelPage",
    "ModelRegistry",
    "ModelView",
    "TrainStatus",
]

CALLBACK_STATUSES = ("starting", "in_progress", "complete", "failed", "stopped")
MESSAGE_LEVELS = ("warning", "error")
#: Most messages kept per model (a chatty trainer cannot fill the database).
MAX_MESSAGES_PER_MODEL = 1000
DEFAULT_PAGE = 100
MAX_PAGE = 1000


@dataclass(frozen=True)
class TrainStatus:
    status: str
    errors: list[str]
    warnings: list[str]


@dataclass(frozen=True)
class ModelView:
    """What a reader sees of a model."""

    id: str
    name: str
    type: str
    owner: str
    access: str
    status: str
    base_model_id: str | None
    metadata: dict[str, Any]
    train_config: dict[str, Any]
    job_id: str | None
    artifact_uri: str | None
    created_at: datetime
    finished_at: datetime | None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def of(cls, model: Model) -> ModelView:
        return cls(
            id=model.id,
            name=model.name,
            type=model.type,
            owner=model.owner,
            access=model.access,
            status=model.status,
            base_model_id=model.base_model_id,
            metadata=_metadata(model.model_metadata),
            train_config=dict(model.train_config or {}),
            job_id=model.job_id,
            artifact_uri=model.artifact_uri,
            created_at=as_utc(model.created_at),
            finished_at=as_utc(model.finished_at),
        )


@dataclass(frozen=True)
class ModelPage:
    models: list[ModelView]
    next_page_token: str


def _metadata(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _not_found(model_id: str) -> NotFound:
    return NotFound(f"model {model_id!r} does not exist", reason="MODEL_NOT_FOUND")


def _no_read(model_id: str) -> PermissionDenied:
    return PermissionDenied(
        f"you do not have read access to model {model_id!r}", reason="MODEL_ACCESS_DENIED"
    )


def _not_owner(model_id: str) -> PermissionDenied:
    return PermissionDenied(
        f"only the owner of model {model_id!r} may change it", reason="MODEL_OWNER_ONLY"
    )


def may_read(model: Model | ModelView, user: str) -> bool:
    return model.owner == user or model.access == "public"


class ModelRegistry:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        #: The job-event cursor (the job-runner's WatchJobs revision).
        self.cursors = Cursors(sessions, Cursor)
        self._reader = reader_of(sessions)
        #: Recent status reads by model id, dropped by every write (all go through `_write`).
        self._statuses = ReadCache()

    def _write(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        """A transaction that changes what `_statuses` caches (see ReadCache.writing)."""
        return self._statuses.writing(self._sessions)

    # ---- creating ------------------------------------------------------------------------

    async def create(
        self,
        *,
        owner: str,
        name: str,
        type: str,
        base_model_id: str | None = None,
        train_config: dict[str, Any] | None = None,
        artifact_uri: str | None = None,
        model_id: str | None = None,
    ) -> ModelView:
        """A new model, `not_started`; ALREADY_EXISTS when the owner has one of that name."""
        try:
            async with self._write() as session:
                model = Model(
                    owner=owner,
                    name=name,
                    type=type,
                    status="not_started",
                    access="private",
                    base_model_id=base_model_id,
                    train_config=train_config,
                    artifact_uri=artifact_uri,
                )
                if model_id:
                    model.id = model_id
                session.add(model)
                await session.flush()
                view = ModelView.of(model)
        except IntegrityError as exc:
            raise AlreadyExists(
                f"you already have a model named {name!r}; choose another model_name",
                reason="MODEL_NAME_TAKEN",
                violations=[FieldViolation("model_name", "is already taken")],
            ) from exc
        return view

    async def set_job(self, model_id: str, job_id: str) -> None:
        """Record the workload that trains the model; the status becomes `starting`."""
        try:
            async with self._write() as session:
                model = await session.get(Model, model_id)
                if model is None:
                    raise _not_found(model_id)
                model.job_id = job_id
                if model.status == "not_started":
                    model.status = "starting"
        except StaleDataError as exc:
            raise _not_found(model_id) from exc

    # ---- reading -------------------------------------------------------------------------

    async def get(self, model_id: str) -> ModelView:
        """A model regardless of who asks (for the platform's own use)."""
        async with self._sessions() as session:
            model = await session.get(Model, model_id)
            if model is None:
                raise _not_found(model_id)
            return ModelView.of(model)

    async def readable(self, model_id: str, user: str) -> ModelView:
        """A model the user may read: NOT_FOUND when there is none, PERMISSION_DENIED when it
        is another user's private model."""
        view = await self.get(model_id)
        if not may_read(view, user):
            raise _no_read(model_id)
        return view

    async def owned(self, model_id: str, user: str) -> ModelView:
        """A model the user owns (may change); PERMISSION_DENIED when they may only read it,
        and for another user's private model too (it exists, but not for them)."""
        view = await self.get(model_id)
        if view.owner != user:
            raise _not_owner(model_id) if may_read(view, user) else _no_read(model_id)
        return view

    async def by_job(self, job_id: str) -> ModelView | None:
        async with self._sessions() as session:
            model = (
                await session.execute(select(Model).where(Model.job_id == job_id))
            ).scalar_one_or_none()
            return ModelView.of(model) if model is not None else None

    async def unfinished(self) -> list[ModelView]:
        """Models whose training has not ended (to reconcile with the job-runner on start)."""
        async with self._sessions() as session:
            rows = await session.execute(select(Model).where(Model.status.not_in(FINAL_STATUSES)))
            return [ModelView.of(m) for m in rows.scalars()]

    async def list(
        self,
        user: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        type: str = "",
        status: str = "",
    ) -> ModelPage:
        """The user's models and the public ones, newest first."""
        size = checked_page_size(page_size, maximum=MAX_PAGE) or DEFAULT_PAGE
        query = select(Model).where(or_(Model.owner == user, Model.access == "public"))
        if type:
            query = query.where(Model.type == type)
        if status:
            query = query.where(Model.status == status)
        if page_token:
            created, last_id = decode_page_token(page_token)
            query = query.where(
                or_(
                    Model.created_at < created,
                    and_(Model.created_at == created, Model.id < last_id),
                )
            )
        query = query.order_by(Model.created_at.desc(), Model.id.desc()).limit(size + 1)
        async with self._sessions() as session:
            models = [ModelView.of(m) for m in (await session.execute(query)).scalars()]
        more = len(models) > size
        models = models[:size]
        token = encode_page_token(models[-1].created_at, models[-1].id) if more else ""
        return ModelPage(models, token)

    async def train_status(self, model_id: str, user: str) -> TrainStatus:
        """A status poll: one prepared Core query (the model's status and its messages joined),
        no ORM objects, so many clients polling cost little more than a health check."""
        rows = self._statuses.get(model_id)
        if rows is None:
            generation = self._statuses.generation
            async with self._reader.connect() as conn:
                rows = (await conn.execute(_status_statement(), {"model_id": model_id})).all()
            self._statuses.put(model_id, generation, rows)
        if not rows:
            raise _not_found(model_id)
        first = rows[0]
        if first.owner != user and first.access != "public":
            raise _no_read(model_id)
        return TrainStatus(
            status=first.status,
            errors=[r.message for r in rows if r.level == "error"],
            warnings=[r.message for r in rows if r.level == "warning"],
        )

    # ---- changing ------------------------------------------------------------------------

    async def set_access(self, model_id: str, user: str, access: str) -> None:
        async with self._write() as session:
            model = await session.get(Model, model_id)
            if model is None:
                raise _not_found(model_id)
            if model.owner != user:
                raise _not_owner(model_id) if may_read(model, user) else _no_read(model_id)
            model.access = access

    async def delete(self, model_id: str) -> None:
        async with self._write() as session:
            await session.execute(delete(ModelMessage).where(ModelMessage.model_id == model_id))
            await session.execute(delete(TokenFeedback).where(TokenFeedback.model_id == model_id))
            await session.execute(delete(NdbFeedback).where(NdbFeedback.model_id == model_id))
            await session.execute(delete(Model).where(Model.id == model_id))

    async def update_status(
        self,
        model_id: str,
        status: str,
        metadata: dict[str, Any] | None,
        *,
        job_id: str | None = None,
    ) -> None:
        """A trainer's report: set the model's status (and metadata). Idempotent: the same update
        twice is one. A report from another workload than the model's current one (`job_id`,
        from the job token) is PERMISSION_DENIED; once the training has ended, its status no
        longer changes (FAILED_PRECONDITION, 422), though the same final status again is fine."""
        if status not in TRAIN_STATUSES:
            raise InvalidArgument(f"unknown status {status!r}")
        async with self._write() as session:
            model = await session.get(Model, model_id)
            if model is None:
                raise _not_found(model_id)
            if job_id is not None and model.job_id is not None and job_id != model.job_id:
                raise PermissionDenied(
                    "this job token belongs to an earlier training of the model",
                    reason="STALE_JOB_TOKEN",
                )
            if model.status in FINAL_STATUSES and status != model.status:
                raise FailedPrecondition(
                    f"the training of model {model_id!r} has already ended ({model.status})",
                    reason="TRAINING_ENDED",
                    http_status=422,
                )
            model.status = status
            if metadata is not None:
                model.model_metadata = json.dumps(metadata, sort_keys=True)
            if status in FINAL_STATUSES and model.finished_at is None:
                model.finished_at = utcnow()
            try:
                await session.flush()
            except StaleDataError as exc:
                raise _not_found(model_id) from exc

    async def finish(
        self, model_id: str, status: str, error: str | None = None, *, job_id: str | None = None
    ) -> bool:
        """End a training from the platform's side (workload gone, stopped): set a final status
        and record `error`, unless it already ended or moved on to another job. True when it
        changed anything (False too when the model was deleted meanwhile)."""
        try:
            async with self._write() as session:
                model = await session.get(Model, model_id)
                if model is None or model.status in FINAL_STATUSES:
                    return False
                if job_id is not None and model.job_id not in (None, job_id):
                    return False
                model.status = status
                model.finished_at = utcnow()
                if error:
                    session.add(ModelMessage(model_id=model_id, level="error", message=error))
                return True
        except (StaleDataError, IntegrityError):
            return False  # deleted while we looked

    async def add_message(
        self, model_id: str, level: str, message: str, *, job_id: str | None = None
    ) -> None:
        """Record a warning or error (its fields checked by the request validator); at most
        MAX_MESSAGES_PER_MODEL are kept, the rest are refused with RESOURCE_EXHAUSTED."""
        async with self._write() as session:
            model = await session.get(Model, model_id)
            if model is None:
                raise _not_found(model_id)
            if job_id is not None and model.job_id is not None and job_id != model.job_id:
                raise PermissionDenied(
                    "this job token belongs to an earlier training of the model",
                    reason="STALE_JOB_TOKEN",
                )
            count = len(
                (
                    await session.execute(
                        select(ModelMessage.id)
                        .where(ModelMessage.model_id == model_id)
                        .limit(MAX_MESSAGES_PER_MODEL)
                    )
                ).all()
            )
            if count >= MAX_MESSAGES_PER_MODEL:
                raise FailedPrecondition(
                    f"model {model_id!r} already has {MAX_MESSAGES_PER_MODEL} messages",
                    reason="TOO_MANY_MESSAGES",
                    http_status=422,
                )
            session.add(ModelMessage(model_id=model_id, level=level, message=message[:10_000]))


@cache
def _status_statement() -> Select[str, str, str, str, str]:
    """A model's owner, access and status with its messages in order (bound `model_id`), built
    once; a model without messages is one row with a NULL message."""
    return (
        select(Model.owner, Model.access, Model.status, ModelMessage.level, ModelMessage.message)
        .outerjoin(ModelMessage, ModelMessage.model_id == Model.id)
        .where(Model.id == bindparam("model_id"))
        .order_by(ModelMessage.id)
    )


assert set(CALLBACK_STATUSES) <= set(TRAIN_STATUSES)
