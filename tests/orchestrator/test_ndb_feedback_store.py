"""The ndb feedback store on SQLite and PostgreSQL: feedback kept per model and per user in
order, its bound per model, NUL-free text round trips, deletion with the model; and the
retrain config keeping the newest feedback that fits its byte budget."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from trainyard.orchestrator.app import MIGRATIONS
from trainyard.orchestrator.feedback import (
    Association,
    CollectedFeedback,
    FeedbackStore,
    ImplicitEvent,
    Upvote,
)
from trainyard.orchestrator.registry import ModelRegistry
from trainyard.orchestrator.training import fit_feedback
from trainyard.runtime.db import Database
from trainyard.runtime.errors import FailedPrecondition, NotFound


@pytest.fixture
async def db(database: tuple[str, str | None]) -> AsyncIterator[Database]:
    url, schema = database
    db = Database("orchestrator", url, MIGRATIONS, schema)
    await db.start()
    try:
        yield db
    finally:
        await db.close()


async def test_feedback_is_kept_per_model_and_user_in_order(db: Database) -> None:
    registry = ModelRegistry(db.sessions)
    store = FeedbackStore(db.sessions, max_per_model=5)
    model = await registry.create(owner="alice", name="m", type="ndb")
    other = await registry.create(owner="alice", name="n", type="ndb")
    assert await store.add(model.id, "alice", [Upvote("what is ndb", "a.txt#0")]) == 1
    await store.add(model.id, "bob", [Association("café ☕", "coffee shop")])
    await store.add(model.id, "carol", [ImplicitEvent("ndb?", "a.txt#1", "click")])
    await store.add(other.id, "alice", [Upvote("elsewhere", "b.txt#0")])

    everything = await store.collected(model.id)
    assert everything.upvotes == [Upvote("what is ndb", "a.txt#0")]
    assert everything.associations == [Association("café ☕", "coffee shop")]
    assert everything.implicit == [ImplicitEvent("ndb?", "a.txt#1", "click")]
    assert len(everything) == 3
    assert everything.to_config() == {
        "upvotes": [{"query_text": "what is ndb", "reference_id": "a.txt#0"}],
        "associations": [{"source": "café ☕", "target": "coffee shop"}],
        "implicit": [{"query_text": "ndb?", "reference_id": "a.txt#1", "event": "click"}],
    }
    some = await store.collected(model.id, ["alice", "carol"])
    assert (len(some.upvotes), len(some.associations), len(some.implicit)) == (1, 0, 1)

    # The bound is per model: two more fit, a third does not, and nothing of a refused call
    # is kept.
    await store.add(model.id, "alice", [Upvote("q1", "a.txt#0"), Upvote("q2", "a.txt#0")])
    with pytest.raises(FailedPrecondition, match="keeps at most 5"):
        await store.add(model.id, "alice", [Upvote("q3", "a.txt#0")])
    assert len(await store.collected(model.id)) == 5
    assert len(await store.collected(other.id)) == 1

    await registry.delete(model.id)
    assert len(await store.collected(model.id)) == 0
    assert len(await store.collected(other.id)) == 1
    with pytest.raises(NotFound):
        await store.add(model.id, "alice", [Upvote("late", "a.txt#0")])


def test_the_retrain_config_keeps_the_newest_feedback_that_fits() -> None:
    collected = CollectedFeedback(
        upvotes=[Upvote(f"query {i} " + "x" * 100, f"doc#{i}") for i in range(50)],
        associations=[Association(f"source {i}", f"target {i}") for i in range(5)],
    )
    whole, dropped = fit_feedback(collected, 1_000_000)
    assert dropped == 0 and whole == collected.to_config()

    budget = 2000
    config, dropped = fit_feedback(collected, budget)
    assert dropped > 0
    kept = config["upvotes"]
    assert len(kept) + len(config["associations"]) + dropped == 55
    assert len(json.dumps(config)) <= budget
    # The newest upvotes stay, in order.
    assert [u["reference_id"] for u in kept] == [f"doc#{i}" for i in range(50 - len(kept), 50)]
