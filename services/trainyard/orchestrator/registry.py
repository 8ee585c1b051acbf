"""The model registry: read access, train status and trainer messages. Knows nothing of gRPC."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trainyard.orchestrator.models import TRAIN_STATUSES, Model, ModelMessage
from trainyard.runtime.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied

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

    async def create(
        self,
        *,
        owner: str,
        name: str,
        type: str,
        base_model_id: str | None = None,
        train_config: dict[str, Any] | None = None,
    ) -> Model:
        async with self._sessions.begin() as session:
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
        async with self._sessions() as session:
            model = await self._readable(session, model_id, user)
            rows = (
                await session.scalars(
                    select(ModelMessage)
                    .where(ModelMessage.model_id == model.id)
                    .order_by(ModelMessage.id)
                )
            ).all()
            return TrainStatus(
                status=model.status,
                errors=[r.message for r in rows if r.level == "error"],
                warnings=[r.message for r in rows if r.level == "warning"],
            )

    async def update_status(
        self, model_id: str, status: str, metadata: dict[str, Any] | None
    ) -> None:
        """Set a model's status (and metadata). Idempotent: the same update twice is one."""
        if status not in CALLBACK_STATUSES:
            raise InvalidArgument(
                f"unknown status {status!r}",
                violations=[
                    FieldViolation("status", f"must be one of {', '.join(CALLBACK_STATUSES)}")
                ],
                http_status=422,
            )
        async with self._sessions.begin() as session:
            model = await session.get(Model, model_id)
            if model is None:
                raise NotFound(f"model {model_id!r} does not exist", reason="MODEL_NOT_FOUND")
            model.status = status
            if metadata is not None:
                model.model_metadata = json.dumps(metadata, sort_keys=True)

    async def add_message(self, model_id: str, level: str, message: str) -> None:
        violations = []
        if level not in MESSAGE_LEVELS:
            violations.append(FieldViolation("level", "must be 'warning' or 'error'"))
        if not message.strip():
            violations.append(FieldViolation("message", "must not be empty"))
        if violations:
            raise InvalidArgument("invalid log message", violations=violations, http_status=422)
        async with self._sessions.begin() as session:
            if await session.get(Model, model_id) is None:
                raise NotFound(f"model {model_id!r} does not exist", reason="MODEL_NOT_FOUND")
            session.add(ModelMessage(model_id=model_id, level=level, message=message))


assert set(CALLBACK_STATUSES) <= set(TRAIN_STATUSES)
