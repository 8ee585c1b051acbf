"""The token feedback store on SQLite and PostgreSQL: feedback is kept per model across a
restart (a new Database on the same URL), checked against the model's tags, bounded per model,
and gone with its model."""

from __future__ import annotations

import pytest

from trainyard.orchestrator.app import MIGRATIONS
from trainyard.orchestrator.registry import ModelRegistry
from trainyard.orchestrator.token_feedback import Sentence, TokenFeedbackStore
from trainyard.runtime.db import Database
from trainyard.runtime.errors import FailedPrecondition, InvalidArgument

KNOWN = frozenset({"O", "PER", "B-PER", "I-PER"})


async def test_feedback_is_kept_across_a_restart_and_bounded(
    database: tuple[str, str | None],
) -> None:
    url, schema = database
    db = Database("orchestrator", url, MIGRATIONS, schema)
    await db.start()
    try:
        registry = ModelRegistry(db.sessions)
        model = await registry.create(owner="alice", name="tok", type="nlp-token")
        other = await registry.create(owner="alice", name="tok2", type="nlp-token")
        store = TokenFeedbackStore(db.sessions, max_per_model=2)
        assert await store.add(model.id, "alice", ["hi", "Ann"], ["O", "PER"], KNOWN) == 1
        assert await store.add(model.id, "bob", ["Ann"], ["B-PER"], KNOWN) == 2
        with pytest.raises(FailedPrecondition, match="already holds 2 feedback sentences"):
            await store.add(model.id, "alice", ["x"], ["O"], KNOWN)
        with pytest.raises(InvalidArgument, match="tags 'CITY', 'LOC' are not tags of model"):
            await store.add(other.id, "alice", ["a", "b", "c"], ["LOC", "CITY", "LOC"], KNOWN)
        assert await store.count(other.id) == 0
    finally:
        await db.close()

    db = Database("orchestrator", url, MIGRATIONS, schema)
    await db.start()
    try:
        store = TokenFeedbackStore(db.sessions, max_per_model=2)
        assert await store.sentences(model.id) == [
            Sentence(("hi", "Ann"), ("O", "PER")),
            Sentence(("Ann",), ("B-PER",)),
        ]
        await ModelRegistry(db.sessions).delete(model.id)
        assert await store.count(model.id) == 0
    finally:
        await db.close()
