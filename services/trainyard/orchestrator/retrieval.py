"""Using ndb models: search, their documents, and the feedback their readers give.

Read access is enough for all of it (the owner, or anyone for a public model): the users of a
public model are the ones whose feedback improves it. Feedback is stored per model and per user
(feedback.py) and becomes a new model with ndb-retrain (training.py). Knows nothing of gRPC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainyard.orchestrator.feedback import (
    Association,
    Feedback,
    FeedbackStore,
    ImplicitEvent,
    Upvote,
)
from trainyard.orchestrator.inference import Models, NdbReference, NdbSource
from trainyard.orchestrator.registry import ModelRegistry, ModelView
from trainyard.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument
from trainyard.runtime.pagination import (
    checked_page_size,
    decode_offset_token,
    encode_offset_token,
)

#: Largest search answer (texts, ids, sources), well under the 32 MiB of a gRPC message.
MAX_ANSWER_BYTES = 24 * 1024 * 1024
DEFAULT_SOURCES_PAGE = 1000
MAX_SOURCES_PAGE = 10_000


@dataclass(frozen=True)
class SourcePage:
    sources: list[NdbSource]
    next_page_token: str


class Retrieval:
    def __init__(self, registry: ModelRegistry, models: Models, feedback: FeedbackStore) -> None:
        self._registry = registry
        self._models = models
        self._feedback = feedback

    async def search(
        self,
        model_id: str,
        user: str,
        queries: Sequence[str],
        top_k: int,
        constraints: Mapping[str, Any] | None,
    ) -> list[list[NdbReference]]:
        model = await self._registry.readable(model_id, user)
        results = await self._models.search(model, queries, top_k, constraints)
        size = sum(
            len(r.text) + len(r.id) + len(r.doc_id) + len(r.source)
            for refs in results
            for r in refs
        )
        if size > MAX_ANSWER_BYTES:
            raise FailedPrecondition(
                f"the answer would hold {size} characters of references, more than "
                f"{MAX_ANSWER_BYTES} a call: lower top_k or send fewer queries",
                reason="ANSWER_TOO_LARGE",
                http_status=422,
            )
        return results

    async def sources(
        self, model_id: str, user: str, *, page_size: int = 0, page_token: str = ""
    ) -> SourcePage:
        """A page of the model's documents, in the model's order."""
        size = checked_page_size(page_size, maximum=MAX_SOURCES_PAGE) or DEFAULT_SOURCES_PAGE
        offset = decode_offset_token(page_token)
        model = await self._registry.readable(model_id, user)
        everything = await self._models.sources(model)
        page = everything[offset : offset + size]
        more = offset + size < len(everything)
        return SourcePage(page, encode_offset_token(offset + size) if more else "")

    async def upvote(self, model_id: str, user: str, upvotes: Sequence[Upvote]) -> int:
        model = await self._ndb(model_id, user)
        await self._check_references(
            model,
            [(f"text_id_pairs[{i}].reference_id", u.reference_id) for i, u in enumerate(upvotes)],
        )
        return await self._store(model, user, upvotes)

    async def associate(self, model_id: str, user: str, associations: Sequence[Association]) -> int:
        model = await self._ndb(model_id, user)
        return await self._store(model, user, associations)

    async def implicit(self, model_id: str, user: str, event: ImplicitEvent) -> int:
        model = await self._ndb(model_id, user)
        await self._check_references(model, [("reference_id", event.reference_id)])
        return await self._store(model, user, [event])

    async def _ndb(self, model_id: str, user: str) -> ModelView:
        """A complete ndb model the user may read (its index loaded, so feedback is only
        taken for a model that can be searched)."""
        model = await self._registry.readable(model_id, user)
        await self._models.index(model)
        return model

    async def _check_references(self, model: ModelView, named: Sequence[tuple[str, str]]) -> None:
        missing = set(await self._models.missing_references(model, [ref for _, ref in named]))
        if not missing:
            return
        violations = [
            FieldViolation(field, f"{ref!r} is not a reference of model {model.id!r}")
            for field, ref in named
            if ref in missing
        ]
        shown = ", ".join(
            repr(ref) for ref in list(dict.fromkeys(r for _, r in named if r in missing))[:5]
        )
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InvalidArgument(
            f"model {model.id!r} has no reference {shown}{more}: use the id of a reference "
            "its search returned",
            reason="UNKNOWN_REFERENCE",
            violations=violations,
            http_status=422,
        )

    async def _store(self, model: ModelView, user: str, items: Sequence[Feedback]) -> int:
        return await self._feedback.add(model.id, user, items)
