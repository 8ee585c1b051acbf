"""Token feedback: corrected tags users give on a complete nlp-token model, kept per model in
the database (so across restarts) until the model is deleted; nlp-token-retrain trains on
them. Knows nothing of gRPC; the tags a model accepts come from its artifact (inference.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trainyard.orchestrator.models import TokenFeedback
from trainyard.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument


@dataclass(frozen=True)
class Sentence:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]


class TokenFeedbackStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], max_per_model: int) -> None:
        self._sessions = sessions
        self._max = max_per_model

    async def add(
        self,
        model_id: str,
        user: str,
        tokens: Sequence[str],
        tags: Sequence[str],
        known: frozenset[str],
    ) -> int:
        """Record one sentence whose tags are all `known` (the model's; 422 naming the others);
        the model's feedback count after it. At most `max_per_model` are kept
        (FAILED_PRECONDITION, 422, past that)."""
        unknown = sorted({t for t in tags if t not in known})
        if unknown:
            shown = ", ".join(repr(t) for t in unknown[:20])
            allowed = ", ".join(sorted(known)[:50])
            raise InvalidArgument(
                f"tags {shown} are not tags of model {model_id!r}; its tags are {allowed}",
                reason="UNKNOWN_TAGS",
                violations=[FieldViolation("tags", f"unknown tags: {shown}")],
                http_status=422,
            )
        async with self._sessions.begin() as session:
            count = await self._count(session, model_id)
            if count >= self._max:
                raise FailedPrecondition(
                    f"model {model_id!r} already holds {self._max} feedback sentences, the most "
                    "it keeps; retrain it (nlp-token-retrain) and give feedback on the new model",
                    reason="TOO_MUCH_FEEDBACK",
                    http_status=422,
                )
            session.add(
                TokenFeedback(model_id=model_id, user=user, tokens=list(tokens), tags=list(tags))
            )
            return count + 1

    async def count(self, model_id: str) -> int:
        async with self._sessions() as session:
            return await self._count(session, model_id)

    async def sentences(self, model_id: str) -> list[Sentence]:
        """The model's feedback, oldest first."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(TokenFeedback.tokens, TokenFeedback.tags)
                .where(TokenFeedback.model_id == model_id)
                .order_by(TokenFeedback.id)
            )
            return [Sentence(tuple(tokens), tuple(tags)) for tokens, tags in rows.all()]

    @staticmethod
    async def _count(session: AsyncSession, model_id: str) -> int:
        value = await session.scalar(
            select(func.count())
            .select_from(TokenFeedback)
            .where(TokenFeedback.model_id == model_id)
        )
        return int(value or 0)
