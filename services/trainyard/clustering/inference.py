"""Published clustering models: loaded from their artifact into memory, serving assign calls,
and unpublished after an idle period.

A model's artifact was written by a workload: it is downloaded (each file checked against its
manifest) and loaded by the clustering library's `load_model`, in a thread pool, never on the
event loop; assigning runs in the same pool. Publication states: Pending (loading), Running
(serving), Unpublished (the idle timeout freed it: assign answers 503 until a train request
republishes it). State is per process, in memory: a restarted service publishes a model again
on its next progress call.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from trainyard.blobs import BlobStorage
from trainyard.runtime.errors import FailedPrecondition, Unavailable
from trainyard.workload import ArtifactCorrupt, ArtifactNotFound, Artifacts

log = structlog.get_logger("trainyard.clustering.inference")

MODEL_ARTIFACT = "model"
PENDING = "Pending"
RUNNING = "Running"
UNPUBLISHED = "Unpublished"
IDLE_MESSAGE = "Published model is currently unavailable due to inactivity timeout"


def _library() -> Any:
    # Imported when first needed: the service starts (and answers validation errors) without
    # the ML stack loaded.
    return importlib.import_module("trainyard.trainers.clustering")


@dataclass
class _Entry:
    prefix: str
    state: str
    model: Any = None
    #: The folder the model was loaded from (kept while it serves: a model may read its files
    #: lazily).
    folder: Path | None = None
    last_used: float = 0.0
    task: asyncio.Task[None] | None = None
    error: str | None = None


class Published:
    def __init__(
        self,
        storage: BlobStorage,
        *,
        workers: int,
        idle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clustering")
        self._idle = idle_seconds
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def close(self) -> None:
        for entry in self._entries.values():
            if entry.task is not None:
                entry.task.cancel()
            _remove(entry.folder)
        self._entries.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def state(self, model_id: str, prefix: str | None = None) -> str | None:
        """Pending, Running, Unpublished or None (never published, or another artifact)."""
        entry = self._entries.get(model_id)
        if entry is None or (prefix is not None and entry.prefix != prefix):
            return None
        return entry.state

    def ready(self, model_id: str) -> bool:
        entry = self._entries.get(model_id)
        return entry is not None and entry.state == RUNNING

    def publish(self, model_id: str, prefix: str, *, again: bool = False) -> str:
        """Start publishing the artifact under `prefix` unless it already is (or, without
        `again`, was unpublished for idleness); the state after the call."""
        entry = self._entries.get(model_id)
        if (
            entry is not None
            and entry.prefix == prefix
            and (entry.state in (PENDING, RUNNING) or not again)
        ):
            return entry.state
        new = _Entry(prefix=prefix, state=PENDING, last_used=self._clock())
        if entry is not None and entry.state == RUNNING:
            # Keep serving the previous artifact while the new one loads.
            new.model, new.folder = entry.model, entry.folder
        elif entry is not None:
            _remove(entry.folder)
        self._entries[model_id] = new
        new.task = asyncio.get_running_loop().create_task(self._load(model_id, new))
        return PENDING

    async def _load(self, model_id: str, entry: _Entry) -> None:
        try:
            model, folder = await self._read(entry.prefix)
        except Exception as exc:  # a broken artifact must not take the service down
            log.warning("clustering.publish_failed", model_id=model_id, error=str(exc))
            entry.error = str(exc)
            entry.state = UNPUBLISHED if entry.model is None else RUNNING
            return
        previous = entry.folder
        entry.model, entry.folder = model, folder
        _remove(previous)
        entry.state = RUNNING
        entry.last_used = self._clock()
        log.info("clustering.published", model_id=model_id, prefix=entry.prefix)

    async def _read(self, prefix: str) -> tuple[Any, Path]:
        """The model under `prefix` and the local folder it was loaded from (the caller
        removes it when done)."""
        folder = Path(tempfile.mkdtemp(prefix="clustering-model-"))
        try:
            await Artifacts(self._storage, prefix).download(MODEL_ARTIFACT, folder)
            loop = asyncio.get_running_loop()
            model = await loop.run_in_executor(self._pool, _library().load_model, folder)
        except BaseException:
            _remove(folder)
            raise
        return model, folder

    async def assign(self, model_id: str, texts: Sequence[str]) -> list[Any]:
        entry = self._entries.get(model_id)
        if entry is None or entry.model is None:
            if entry is not None and entry.state == UNPUBLISHED:
                raise Unavailable(IDLE_MESSAGE, reason="MODEL_UNPUBLISHED")
            raise FailedPrecondition(
                f"model {model_id!r} is not published yet; call GET .../{model_id}/progress "
                "once its training completed and wait until GET .../ready is true",
                reason="MODEL_NOT_PUBLISHED",
            )
        entry.last_used = self._clock()
        model = entry.model
        loop = asyncio.get_running_loop()
        result: list[Any] = await loop.run_in_executor(self._pool, model.assign, list(texts))
        entry.last_used = self._clock()
        return result

    async def clusters(self, model_id: str, prefix: str) -> list[Any]:
        """The clusters of the artifact under `prefix` (the published model's when it is that
        one, else read for this call only)."""
        entry = self._entries.get(model_id)
        loop = asyncio.get_running_loop()
        if entry is not None and entry.prefix == prefix and entry.model is not None:
            served: list[Any] = await loop.run_in_executor(self._pool, entry.model.clusters)
            return served
        try:
            model, folder = await self._read(prefix)
        except (ArtifactNotFound, ArtifactCorrupt) as exc:
            raise FailedPrecondition(
                f"model {model_id!r} has no usable clusters: {exc}",
                reason="MODEL_ARTIFACT_UNUSABLE",
            ) from exc
        try:
            result: list[Any] = await loop.run_in_executor(self._pool, model.clusters)
        finally:
            _remove(folder)
        return result

    async def sweep_idle(self) -> None:
        """Unpublish models that served nothing for the idle period."""
        now = self._clock()
        for model_id, entry in list(self._entries.items()):
            if entry.state == RUNNING and now - entry.last_used >= self._idle:
                entry.state = UNPUBLISHED
                entry.model = None
                _remove(entry.folder)
                entry.folder = None
                log.info("clustering.unpublished_idle", model_id=model_id)


def _remove(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
