"""Entry point: config -> Reporter -> inputs -> training -> artifacts -> exit code (0 success,
2 bad config, 1 failure, reported to the orchestrator with a message a user can act on)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainyard.trainers.nlp_text.config import BaseModel, TextConfig
from trainyard.trainers.nlp_text.reading import (
    CsvSource,
    DataError,
    JsonlSource,
    cache_documents,
)
from trainyard.workload import (
    ArtifactCorrupt,
    ArtifactNotFound,
    Artifacts,
    InputError,
    Preload,
    Reporter,
    Written,
    fetch_inputs,
    run_trainer,
    storage_for,
)

if TYPE_CHECKING:
    from trainyard.trainers.nlp_text.model import TextModel

PROG = "trainyard.trainers.nlp_text"
#: The module that brings the model's libraries (NumPy, SciPy, scikit-learn): most of a
#: trainer's start, about 2 s of imports, preloaded by `main` (see workload.entry.Preload).
LIBRARIES = "trainyard.trainers.nlp_text.training"
_preload: Preload | None = None


async def _loaded() -> None:
    """The model's libraries are imported (by the preload, or now)."""
    if _preload is not None:
        await _preload.ready()
    importlib.import_module(LIBRARIES)


MODEL_ARTIFACT = "model"
REPORT_ARTIFACT = "report"
PROGRESS_INTERVAL_S = 0.5


class TrainingFailed(Exception):
    """A failure with a message for the user (bad data, unusable base model)."""


class ThrottledProgress:
    """Progress from the training thread to the Reporter on the event loop, at most one report
    per PROGRESS_INTERVAL_S (and on each new phase)."""

    def __init__(self, reporter: Reporter, loop: asyncio.AbstractEventLoop) -> None:
        self._reporter = reporter
        self._loop = loop
        self._last = 0.0
        self._phase = ""
        self._lock = threading.Lock()
        self._pending: list[concurrent.futures.Future[None]] = []

    def __call__(self, fraction: float, phase: str) -> None:
        now = time.monotonic()
        with self._lock:
            if phase == self._phase and now - self._last < PROGRESS_INTERVAL_S:
                return
            self._last, self._phase = now, phase
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(
                asyncio.run_coroutine_threadsafe(
                    self._reporter.progress(min(max(fraction, 0.0), 1.0), phase), self._loop
                )
            )

    async def drain(self) -> None:
        for future in list(self._pending):
            await asyncio.wrap_future(future)


async def _base_model(base: BaseModel) -> TextModel:
    await _loaded()
    from trainyard.trainers.nlp_text.model import TextModel

    storage = storage_for(base.artifacts_uri)
    await storage.start()
    try:
        artifacts = Artifacts(storage, f"models/{base.model_id}/")
        manifest = await artifacts.manifest(MODEL_ARTIFACT)
        files = {f.path: await artifacts.read_bytes(MODEL_ARTIFACT, f.path) for f in manifest.files}
    except ArtifactNotFound as exc:
        raise TrainingFailed(f"base model {base.model_id}: no model artifact") from exc
    except (ArtifactCorrupt, ValueError) as exc:
        raise TrainingFailed(f"base model {base.model_id}: unusable artifact: {exc}") from exc
    finally:
        await storage.close()
    try:
        return TextModel.from_files(files)
    except ValueError as exc:
        raise TrainingFailed(f"base model {base.model_id} is not an nlp-text model: {exc}") from exc


async def _train(
    config: TextConfig, reporter: Reporter, work: Path
) -> tuple[TextModel, dict[str, Any]]:
    warnings: list[str] = []
    try:
        supervised = await fetch_inputs(config.supervised_files, work)
        tests = await fetch_inputs(config.test_files, work) if config.test_files else []
    except InputError as exc:
        raise TrainingFailed(f"cannot read the input files: {exc}") from exc
    base = await _base_model(config.base_model) if config.base_model else None
    await _loaded()
    from trainyard.trainers.nlp_text.training import TrainParams, train

    progress = ThrottledProgress(reporter, asyncio.get_running_loop())
    params = TrainParams(
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        max_in_memory_batches=config.max_in_memory_batches,
        test_split=config.test_split,
        n_target_classes=config.n_target_classes,
    )

    def run() -> tuple[TextModel, dict[str, Any]]:
        source: CsvSource | JsonlSource
        test_source: CsvSource | JsonlSource | None = None
        progress(0.0, "reading")
        if config.doc_classification:
            source = cache_documents(supervised, work / "supervised.jsonl", warnings.append)
            if tests:
                test_source = cache_documents(tests, work / "tests.jsonl", warnings.append)
        else:
            source = CsvSource(
                supervised, config.text_column, config.label_column, config.delimiter
            )
            if tests:
                test_source = CsvSource(
                    tests, config.text_column, config.label_column, config.delimiter
                )
        result = train(source, test_source, params, base, progress)
        skipped = {
            "rows": source.skipped.rows + (test_source.skipped.rows if test_source else 0),
            "documents": source.skipped.documents
            + (test_source.skipped.documents if test_source else 0),
            "examples": source.skipped.reasons[:20],
        }
        if skipped["rows"]:
            warnings.append(
                f"skipped {skipped['rows']} row(s) without text or label or with too few "
                "fields, e.g. " + "; ".join(source.skipped.reasons[:3])
            )
        result.report["skipped"] = skipped
        return result.model, result.report

    try:
        model, report = await asyncio.to_thread(run)
    finally:
        await progress.drain()
    for warning in warnings:
        await reporter.log("warning", warning)
    report["model_id"] = config.model_id
    report["data"] = {
        "supervised_files": [f.name for f in supervised][:1000],
        "test_files": [f.name for f in tests][:1000],
        "doc_classification": config.doc_classification,
    }
    if config.base_model:
        report["base_model_id"] = config.base_model.model_id
    return model, report


async def _train_and_write(config: TextConfig, reporter: Reporter) -> Written:
    with tempfile.TemporaryDirectory(prefix="nlp-text-", dir=os.getcwd()) as tmp:
        model, report = await _train(config, reporter, Path(tmp))
    await reporter.progress(0.0, "writing")
    storage = storage_for(config.artifacts_uri)
    await storage.start()
    try:
        artifacts = Artifacts(storage, f"models/{config.model_id}/")
        manifest = await artifacts.write(
            MODEL_ARTIFACT,
            model.to_files(),
            metadata={"kind": "nlp-text", "labels": len(model.labels)},
        )
        report["artifact_version"] = manifest.version
        await artifacts.write(
            REPORT_ARTIFACT,
            {"report.json": json.dumps(report, indent=1, sort_keys=True).encode()},
        )
        where = artifacts.uri(MODEL_ARTIFACT)
    finally:
        await storage.close()
    await reporter.progress(1.0, "writing")
    return Written(where, manifest.version)


async def run(environ: Mapping[str, str]) -> int:
    return await run_trainer(
        PROG,
        environ,
        lambda raw: TextConfig.parse(raw, environ),
        _train_and_write,
        user_errors=(DataError, TrainingFailed),
    )


def main() -> int:
    global _preload
    _preload = Preload(LIBRARIES)
    return asyncio.run(run(os.environ))


if __name__ == "__main__":
    sys.exit(main())
