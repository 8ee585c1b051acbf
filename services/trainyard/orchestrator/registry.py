"""The model registry: read access, train status and trainer messages. Knows nothing of gRPC."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trainyard.orchestrator.models import TRAIN_STATUSES, Model, ModelMessage
from trainyard.runtime.db import reader_of
from trainyard.runtime.errors import NotFound, PermissionDenied
from trainyard.runtime.readcache import ReadCache

CALLBACK_STATUSES = ("starting", "in_progress", "complete", "failed", "stopped")
MESSAGE_LEVELS = ("warning", "error")


@dataclass(frozen=True)
class TrainStatus:
    status: str
    errors: list[str]
    warnings: list[str]


class ModelRegistry:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._reader = reader_of(sessions)
        #: Recent status reads by model id, dropped by every write (all go through `_write`).
        self._statuses = ReadCache()

    def _write(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        """A transaction that changes what `_statuses` caches (see ReadCache.writing)."""
        return self._statuses.writing(self._sessions)

    async def create(
        self,
        *,
        owner: str,
        name: str,
        type: str,
        base_model_id: str | None = None,
        train_config: dict[str, Any] | None = None,
    ) -> Model:
        async with self._write() as session:
            model = Model(
                owner=owner,
                name=name,
                type=type,
                status="not_started",
                access="private",
                base_model_id=base_model_id,
                train_config=train_config,
            )
            session.add(model)
        return model

    async def _readable(self, session: AsyncSession, model_id: str, user: str) -> Model:
        model = await session.get(Model, model_id)
        if model is None:
            raise NotFound(f"model {model_id!r} does not exist", reason="MODEL_NOT_FOUND")
        if model.owner != user and model.access != "public":
            raise PermissionDenied(
                f"you do not have read access to model {model_id!r}", reason="MODEL_ACCESS_DENIED"
            )
        return model

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
            raise NotFound(f"model {model_id!r} does not exist", reason="MODEL_NOT_FOUND")
        first = rows[0]
        if first.owner != user and first.access != "public":
            raise PermissionDenied(
                f"you do not have read access to model {model_id!r}", reason="MODEL_ACCESS_DENIED"
            )
        return TrainStatus(
            status=first.status,
            errors=[r.message for r in rows if r.level == "error"],
            warnings=[r.message for r in rows if r.level == "warning"],
        )

    async def update_status(
        self, model_id: str, status: str, metadata: dict[str, Any] | None
    ) -> None:
        """Set a model's status (and metadata). Idempotent: the same update twice is one. The
        status value is checked by the request validator (orchestrator/validation.py)."""
        async with self._write() as session:
            model = await session.get(Model, model_id)
            if model is None:
                raise NotFound(f"model {model_id!r} does not exist", reason="MODEL_NOT_FOUND")
            model.status = status
            if metadata is not None:
                model.model_metadata = json.dumps(metadata, sort_keys=True)

    async def add_message(self, model_id: str, level: str, message: str) -> None:
        """Record a warning or error (its fields checked by the request validator)."""
        async with self._write() as session:
            if await session.get(Model, model_id) is None:
                raise NotFound(f"model {model_id!r} does not exist", reason="MODEL_NOT_FOUND")
            session.add(ModelMessage(model_id=model_id, level=level, message=message))


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
