"""Using trained models: predictions, reports and downloads, read from blob storage.

A model's artifact was written by a workload, so it is read as data only: the trainers'
`inference.load` builds a predictor from plain files (JSON, NumPy arrays without pickle) and
checks them. Loading and predicting run in a thread pool, never on the event loop; loaded
predictors are cached by model and artifact version under a memory bound (least recently used
dropped first) and loaded lazily, so a restarted orchestrator serves the same answers.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import zipfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from trainyard.blobs import BlobStorage
from trainyard.orchestrator.registry import ModelView
from trainyard.orchestrator.training import GENERATED_ARTIFACT, MODEL_ARTIFACT, TRAINERS
from trainyard.runtime.errors import FailedPrecondition, NotFound
from trainyard.workload import ArtifactCorrupt, ArtifactNotFound, Artifacts, Manifest

log = structlog.get_logger("trainyard.orchestrator.inference")

REPORT_ARTIFACT = "report"
REPORT_FILE = "report.json"
MAX_REPORT_BYTES = 16 * 1024 * 1024
ZIP_CHUNK = 256 * 1024


class Predictor(Protocol):
    nbytes: int

    def predict(self, queries: Sequence[str], top_k: int) -> list[dict[str, Any]]: ...


@dataclass
class _Entry:
    version: str
    predictor: Predictor
    nbytes: int


def _unusable(model: ModelView, what: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"model {model.id!r} cannot {what}: its training is {model.status}, not complete",
        reason="MODEL_NOT_COMPLETE",
        http_status=422,
    )


class Models:
    """Predictions, reports and downloads of trained models."""

    def __init__(
        self, storage: BlobStorage, *, cache_bytes: int, workers: int, max_model_bytes: int
    ) -> None:
        self._storage = storage
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._loading: dict[tuple[str, str], asyncio.Future[_Entry]] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predict")
        self._max_model_bytes = max_model_bytes

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._cache.clear()

    def _artifacts(self, model: ModelView) -> Artifacts:
        return Artifacts(self._storage, f"models/{model.id}/")

    def forget(self, model_id: str) -> None:
        self._cache.pop(model_id, None)

    # ---- predict ---------------------------------------------------------------------------

    async def predict(
        self, model: ModelView, queries: Sequence[str], top_k: int
    ) -> list[dict[str, Any]]:
        if model.status != "complete":
            raise _unusable(model, "predict")
        package = TRAINERS.get(model.type)
        if package is None:
            raise FailedPrecondition(
                f"predict is not supported for {model.type} models",
                reason="PREDICT_UNSUPPORTED",
                http_status=422,
            )
        predictor = await self._predictor(model, package)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, predictor.predict, list(queries), top_k)

    async def _predictor(self, model: ModelView, package: str) -> Predictor:
        artifacts = self._artifacts(model)
        try:
            manifest = await artifacts.manifest(MODEL_ARTIFACT)
        except ArtifactNotFound as exc:
            raise FailedPrecondition(
                f"model {model.id!r} has no trained model artifact",
                reason="MODEL_ARTIFACT_MISSING",
                http_status=422,
            ) from exc
        except (ArtifactCorrupt, ValueError) as exc:
            raise _corrupt(model, exc) from exc
        cached = self._cache.get(model.id)
        if cached is not None and cached.version == manifest.version:
            self._cache.move_to_end(model.id)
            return cached.predictor
        key = (model.id, manifest.version)
        future = self._loading.get(key)
        if future is None:
            future = asyncio.ensure_future(self._load(model, package, artifacts, manifest))
            self._loading[key] = future
            future.add_done_callback(lambda _: self._loading.pop(key, None))
        loaded = await asyncio.shield(future)
        return loaded.predictor

    async def _load(
        self, model: ModelView, package: str, artifacts: Artifacts, manifest: Manifest
    ) -> _Entry:
        total = sum(f.size for f in manifest.files)
        if total > self._max_model_bytes:
            raise FailedPrecondition(
                f"model {model.id!r} is too large to serve here ({total} bytes)",
                reason="MODEL_TOO_LARGE",
                http_status=422,
            )
        files: dict[str, bytes] = {}
        try:
            for item in manifest.files:
                files[item.path] = b"".join(
                    [chunk async for chunk in artifacts.stream(manifest, item.path)]
                )
        except (ArtifactCorrupt, ArtifactNotFound, ValueError) as exc:
            raise _corrupt(model, exc) from exc
        loader = importlib.import_module(f"trainyard.trainers.{package}.inference")
        loop = asyncio.get_running_loop()
        try:
            predictor: Predictor = await loop.run_in_executor(self._pool, loader.load, files)
        except ValueError as exc:
            raise _corrupt(model, exc) from exc
        nbytes = max(int(getattr(predictor, "nbytes", 0) or 0), total)
        entry = _Entry(manifest.version, predictor, nbytes)
        self._cache[model.id] = entry
        self._cache.move_to_end(model.id)
        while self._cache and sum(e.nbytes for e in self._cache.values()) > self._cache_bytes:
            dropped, _ = self._cache.popitem(last=False)
            log.info("predict.cache_evict", model_id=dropped)
        log.info("predict.loaded", model_id=model.id, version=manifest.version, bytes=nbytes)
        return entry

    # ---- report ----------------------------------------------------------------------------

    async def report(self, model: ModelView) -> bytes:
        """The report JSON of the model's latest training, as its trainer wrote it."""
        artifacts = self._artifacts(model)
        try:
            manifest = await artifacts.manifest(REPORT_ARTIFACT)
            entry = manifest.file(REPORT_FILE)
        except ArtifactNotFound as exc:
            if model.status != "complete":
                raise _unusable(model, "have a report yet") from exc
            raise NotFound(
                f"model {model.id!r} has no train report ({model.type} trainings may not "
                "write one)",
                reason="REPORT_NOT_FOUND",
            ) from exc
        except (ArtifactCorrupt, ValueError) as exc:
            raise _corrupt(model, exc) from exc
        if entry.size > MAX_REPORT_BYTES:
            raise _corrupt(model, ValueError("the report is too large"))
        try:
            raw = b"".join([chunk async for chunk in artifacts.stream(manifest, REPORT_FILE)])
            json.loads(raw)
        except (ArtifactCorrupt, ValueError) as exc:
            raise _corrupt(model, exc) from exc
        return raw

    # ---- download --------------------------------------------------------------------------

    async def manifest(self, model: ModelView) -> Manifest:
        if model.status != "complete":
            raise _unusable(model, "be downloaded")
        try:
            return await self._artifacts(model).manifest(MODEL_ARTIFACT)
        except ArtifactNotFound as exc:
            raise FailedPrecondition(
                f"model {model.id!r} has no trained model artifact",
                reason="MODEL_ARTIFACT_MISSING",
                http_status=422,
            ) from exc
        except (ArtifactCorrupt, ValueError) as exc:
            raise _corrupt(model, exc) from exc

    async def generated_manifest(self, model: ModelView) -> Manifest:
        """The manifest of the data a datagen training generated (NOT_FOUND without any)."""
        if model.status != "complete":
            raise _unusable(model, "have its generated data downloaded")
        try:
            return await self._artifacts(model).manifest(GENERATED_ARTIFACT)
        except ArtifactNotFound as exc:
            raise NotFound(
                f"model {model.id!r} was not trained on generated data (train it with "
                "/api/v2/train/nlp-datagen)",
                reason="GENERATED_DATA_NOT_FOUND",
            ) from exc
        except (ArtifactCorrupt, ValueError) as exc:
            raise _corrupt(model, exc) from exc

    async def token_tags(self, model: ModelView) -> tuple[frozenset[str], str]:
        """The tags an nlp-token model knows (its labels, their B-/I- forms and its outside
        tag) and that outside tag; 422 for a model that is not a complete nlp-token model."""
        if model.type != "nlp-token":
            raise FailedPrecondition(
                f"model {model.id!r} is a {model.type} model: token feedback is for nlp-token "
                "models",
                reason="FEEDBACK_UNSUPPORTED",
                http_status=422,
            )
        if model.status != "complete":
            raise _unusable(model, "take feedback")
        predictor = await self._predictor(model, TRAINERS[model.type])
        meta = getattr(predictor, "meta", {})
        labels = [str(x) for x in meta.get("target_labels", [])]
        outside = str(meta.get("default_tag") or "O")
        known = {outside, *labels, *(f"B-{x}" for x in labels), *(f"I-{x}" for x in labels)}
        return frozenset(known), outside

    async def zipped(self, model: ModelView, manifest: Manifest) -> AsyncIterator[bytes]:
        """The artifact's files (the model's, or its generated data's) as a zip archive,
        produced as it is sent (never whole in memory): the manifest first, then each file,
        checked against the manifest."""
        sink = _Sink()
        artifacts = self._artifacts(model)
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr("MANIFEST.json", manifest.to_json())
            for entry in manifest.files:
                with archive.open(entry.path, "w", force_zip64=True) as member:
                    async for chunk in artifacts.stream(manifest, entry.path):
                        member.write(chunk)
                        if sink.size >= ZIP_CHUNK:
                            yield sink.take()
                if sink.size:
                    yield sink.take()
        if sink.size:
            yield sink.take()


class _Sink:
    """A write-only, unseekable file for zipfile that hands out what was written so far."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0
        self._offset = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self.size += len(data)
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        self.size = 0
        return out


def _corrupt(model: ModelView, exc: BaseException) -> FailedPrecondition:
    log.warning("model.artifact_unreadable", model_id=model.id, error=str(exc)[:300])
    return FailedPrecondition(
        f"model {model.id!r} has an unreadable artifact; train it again",
        reason="MODEL_ARTIFACT_CORRUPT",
        http_status=422,
    )
