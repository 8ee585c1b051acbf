"""Serving ndb models from blob storage without a server: the artifact (written by the ndb
library, memory-mapped) is downloaded to the model cache folder, searched in the pool, replaced
when a new version is committed, removed when the model is forgotten; a broken artifact is a
clear 422, never a crash; search, sources and feedback refuse models of another type or
status; feedback naming references the model lacks is refused naming them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.wait import wait_until
from trainyard.blobs import LocalBlobStorage
from trainyard.orchestrator.app import MIGRATIONS
from trainyard.orchestrator.feedback import Association, FeedbackStore, Upvote
from trainyard.orchestrator.inference import Models
from trainyard.orchestrator.registry import ModelRegistry, ModelView
from trainyard.orchestrator.retrieval import Retrieval
from trainyard.orchestrator.training import MODEL_ARTIFACT
from trainyard.runtime.db import Database
from trainyard.runtime.errors import FailedPrecondition, InvalidArgument
from trainyard.trainers.ndb.model import Chunk, NdbModel, Settings
from trainyard.workload import Artifacts

CHUNKS = [
    Chunk("tea.txt#0", "tea.txt", "tea.txt", {"text": "green tea is steeped briefly"}, {}),
    Chunk("tea.txt#1", "tea.txt", "tea.txt", {"text": "black tea takes boiling water"}, {}),
    Chunk("r1", "r1", "rows.csv", {"text": "a bicycle with two wheels"}, {"kind": "bike"}),
]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


async def _publish(storage: LocalBlobStorage, model_id: str, folder: Path) -> None:
    await Artifacts(storage, f"models/{model_id}/").write(MODEL_ARTIFACT, _files(folder))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[ModelRegistry, LocalBlobStorage, Models]]:
    db = Database("orchestrator", f"sqlite+aiosqlite:///{tmp_path / 'o.db'}", MIGRATIONS)
    await db.start()
    storage = LocalBlobStorage(tmp_path / "artifacts")
    await storage.start()
    models = Models(
        storage,
        cache_bytes=1 << 30,
        workers=1,
        max_model_bytes=1 << 30,
        cache_dir=tmp_path / "cache",
    )
    (tmp_path / "cache" / "left-by-a-killed-process").mkdir(parents=True)
    await models.start()
    assert not (tmp_path / "cache").exists()
    try:
        yield ModelRegistry(db.sessions), storage, models
    finally:
        models.close()
        await storage.close()
        await db.close()


async def _complete(registry: ModelRegistry, type: str = "ndb") -> ModelView:
    model = await registry.create(owner="alice", name=f"m-{type}", type=type)
    await registry.update_status(model.id, "complete", None)
    return await registry.get(model.id)


async def test_an_ndb_artifact_is_served_from_the_cache_folder(
    world: tuple[ModelRegistry, LocalBlobStorage, Models], tmp_path: Path
) -> None:
    registry, storage, models = world
    model = await _complete(registry)
    built = tmp_path / "built"
    NdbModel.build(Settings(in_memory=False), CHUNKS).save(built)
    await _publish(storage, model.id, built)

    (found,) = await models.search(model, ["boiling water for black tea"], 2, None)
    assert found[0].id == "tea.txt#1"
    (bikes,) = await models.search(model, ["tea"], 5, {"kind": "bike"})
    assert [r.id for r in bikes] in ([], ["r1"])
    assert {(s.doc_id, s.chunk_count) for s in await models.sources(model)} == {
        ("tea.txt", 2),
        ("r1", 1),
    }
    assert await models.missing_references(model, ["r1", "nope", "tea.txt#0", "nope"]) == ["nope"]
    (folder,) = (tmp_path / "cache" / model.id).iterdir()

    # A new version replaces the old one (and its folder); forgetting removes the folder.
    NdbModel.build(Settings(), CHUNKS[:1]).save(tmp_path / "v2")
    await _publish(storage, model.id, tmp_path / "v2")
    assert [s.doc_id for s in await models.sources(model)] == ["tea.txt"]
    await wait_until(lambda: not folder.exists(), what="the old version's folder was kept")
    (current,) = (tmp_path / "cache" / model.id).iterdir()
    models.forget(model.id)
    await wait_until(lambda: not current.exists(), what="the forgotten model's folder was kept")


async def test_models_that_cannot_be_searched_are_refused_clearly(
    world: tuple[ModelRegistry, LocalBlobStorage, Models], tmp_path: Path
) -> None:
    registry, storage, models = world
    text = await _complete(registry, "nlp-text")
    with pytest.raises(FailedPrecondition, match="is a nlp-text model"):
        await models.search(text, ["q"], 5, None)
    unfinished = await registry.create(owner="alice", name="unfinished", type="ndb")
    with pytest.raises(FailedPrecondition, match="not complete"):
        await models.sources(unfinished)
    model = await _complete(registry)
    with pytest.raises(FailedPrecondition, match="no trained model artifact"):
        await models.search(model, ["q"], 5, None)
    await Artifacts(storage, f"models/{model.id}/").write(
        MODEL_ARTIFACT, {"manifest.json": b'{"format": "something else"}'}
    )
    with pytest.raises(FailedPrecondition, match="unreadable artifact") as caught:
        await models.search(model, ["q"], 5, None)
    assert str(tmp_path) not in caught.value.message
    assert list((tmp_path / "cache" / model.id).iterdir()) == []  # nothing left behind


async def test_feedback_is_taken_for_references_the_model_holds(
    world: tuple[ModelRegistry, LocalBlobStorage, Models], tmp_path: Path
) -> None:
    registry, storage, models = world
    feedback = FeedbackStore(registry._sessions, max_per_model=100)
    retrieval = Retrieval(registry, models, feedback)
    model = await _complete(registry)
    NdbModel.build(Settings(), CHUNKS).save(tmp_path / "built")
    await _publish(storage, model.id, tmp_path / "built")
    with pytest.raises(InvalidArgument, match="has no reference 'ghost#0'") as caught:
        await retrieval.upvote(
            model.id, "alice", [Upvote("q", "r1"), Upvote("q", "ghost#0"), Upvote("x", "ghost#0")]
        )
    assert [v.field for v in caught.value.violations] == [
        "text_id_pairs[1].reference_id",
        "text_id_pairs[2].reference_id",
    ]
    assert await retrieval.upvote(model.id, "alice", [Upvote("q", "r1")]) == 1
    assert await retrieval.associate(model.id, "alice", [Association("cycle", "bicycle")]) == 1
    collected = await feedback.collected(model.id)
    assert collected.upvotes == [Upvote("q", "r1")]
    assert collected.associations == [Association("cycle", "bicycle")]
