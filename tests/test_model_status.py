"""The model status poll (one prepared query, cached until the registry's next write): every
write is seen by the next poll, access rules hold on cached answers; SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from trainyard.orchestrator.app import MIGRATIONS
from trainyard.orchestrator.registry import ModelRegistry
from trainyard.runtime.db import Database
from trainyard.runtime.errors import NotFound, PermissionDenied


@pytest.fixture
async def registry(database: tuple[str, str | None]) -> AsyncIterator[ModelRegistry]:
    url, schema = database
    db = Database("orchestrator", url, MIGRATIONS, schema)
    await db.start()
    try:
        yield ModelRegistry(db.sessions)
    finally:
        await db.close()


async def test_every_write_is_seen_by_the_next_poll(registry: ModelRegistry) -> None:
    model = await registry.create(owner="alice", name="m", type="nlp-text")
    first = await registry.train_status(model.id, "alice")
    assert (first.status, first.errors, first.warnings) == ("not_started", [], [])
    assert (await registry.train_status(model.id, "alice")) == first  # cached, same answer
    await registry.update_status(model.id, "in_progress", None)
    assert (await registry.train_status(model.id, "alice")).status == "in_progress"
    await registry.add_message(model.id, "warning", "2 rows skipped")
    await registry.add_message(model.id, "error", "out of memory")
    await registry.add_message(model.id, "warning", "slow disk")
    status = await registry.train_status(model.id, "alice")
    assert status.warnings == ["2 rows skipped", "slow disk"]
    assert status.errors == ["out of memory"]


async def test_access_rules_hold_on_cached_answers(registry: ModelRegistry) -> None:
    model = await registry.create(owner="alice", name="m", type="nlp-text")
    await registry.train_status(model.id, "alice")  # now cached
    with pytest.raises(PermissionDenied):
        await registry.train_status(model.id, "bob")
    with pytest.raises(NotFound):
        await registry.train_status("no-such-model", "alice")
