"""Feedback on ndb models: upvotes, associations and implicit events, stored per model and per
user in the orchestrator's database (kept across restarts, deleted with the model). ndb-retrain
reads them back as the trainer's `feedback` config. Knows nothing of gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trainyard.orchestrator.models import NdbFeedback
from trainyard.runtime.errors import FailedPrecondition, NotFound


@dataclass(frozen=True)
class Upvote:
    """A query whose answer is `reference_id` (a chunk id of the model)."""

    query_text: str
    reference_id: str


@dataclass(frozen=True)
class Association:
    """A phrase (`source`) that should retrieve like another (`target`)."""

    source: str
    target: str


@dataclass(frozen=True)
class ImplicitEvent:
    """What a user did with a reference returned for a query (e.g. "click"): a weaker upvote."""

    query_text: str
    reference_id: str
    event: str


Feedback = Upvote | Association | ImplicitEvent


@dataclass
class CollectedFeedback:
    """A model's feedback, oldest first, as the ndb trainer's `feedback` config reads it."""

    upvotes: list[Upvote] = field(default_factory=list)
    associations: list[Association] = field(default_factory=list)
    implicit: list[ImplicitEvent] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.upvotes) + len(self.associations) + len(self.implicit)

    def to_config(self) -> dict[str, list[dict[str, str]]]:
        return {
            "upvotes": [
                {"query_text": u.query_text, "reference_id": u.reference_id} for u in self.upvotes
            ],
            "associations": [{"source": a.source, "target": a.target} for a in self.associations],
            "implicit": [
                {"query_text": e.query_text, "reference_id": e.reference_id, "event": e.event}
                for e in self.implicit
            ],
        }


def _row(model_id: str, user: str, item: Feedback) -> NdbFeedback:
    if isinstance(item, Upvote):
        return NdbFeedback(
            model_id=model_id,
            username=user,
            kind="upvote",
            text=item.query_text,
            target=item.reference_id,
        )
    if isinstance(item, Association):
        return NdbFeedback(
            model_id=model_id, username=user, kind="associate", text=item.source, target=item.target
        )
    return NdbFeedback(
        model_id=model_id,
        username=user,
        kind="implicit",
        text=item.query_text,
        target=item.reference_id,
        event=item.event,
    )


class FeedbackStore:
    """The feedback table, with a bound on the entries kept per model (a busy or hostile user
    cannot fill the database, and a retrain's config stays bounded)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, max_per_model: int) -> None:
        self._sessions = sessions
        self.max_per_model = max_per_model
        #: Count-then-insert under one lock, so concurrent calls of this process cannot pass
        #: the bound together (another replica can still add one call's worth: at most 1,000).
        self._writing = asyncio.Lock()

    async def add(self, model_id: str, user: str, items: Sequence[Feedback]) -> int:
        """Store `items` given by `user` on the model; how many were stored. FAILED_PRECONDITION
        (422) when the model would hold more than `max_per_model` entries."""
        try:
            async with self._writing, self._sessions.begin() as session:
                held = await self._count(session, model_id)
                if held + len(items) > self.max_per_model:
                    raise FailedPrecondition(
                        f"model {model_id!r} already holds {held} feedback entries and keeps at "
                        f"most {self.max_per_model}: retrain it (POST /api/v2/train/ndb-retrain) "
                        "and send further feedback to the new model",
                        reason="FEEDBACK_FULL",
                        http_status=422,
                    )
                session.add_all(_row(model_id, user, item) for item in items)
        except IntegrityError as exc:  # the model was deleted meanwhile
            raise NotFound(f"model {model_id!r} does not exist", reason="MODEL_NOT_FOUND") from exc
        return len(items)

    async def _count(self, session: AsyncSession, model_id: str) -> int:
        query = (
            select(func.count()).select_from(NdbFeedback).where(NdbFeedback.model_id == model_id)
        )
        return int((await session.execute(query)).scalar_one())

    async def collected(
        self, model_id: str, users: Iterable[str] | None = None
    ) -> CollectedFeedback:
        """The model's feedback, oldest first; only that of `users` when given."""
        query = select(NdbFeedback).where(NdbFeedback.model_id == model_id)
        if users is not None:
            query = query.where(or_(*(NdbFeedback.username == u for u in set(users))))
        out = CollectedFeedback()
        async with self._sessions() as session:
            for row in (await session.execute(query.order_by(NdbFeedback.id))).scalars():
                if row.kind == "upvote":
                    out.upvotes.append(Upvote(row.text, row.target))
                elif row.kind == "associate":
                    out.associations.append(Association(row.text, row.target))
                else:
                    out.implicit.append(ImplicitEvent(row.text, row.target, row.event or ""))
        return out
