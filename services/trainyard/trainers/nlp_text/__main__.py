"""Entry point: config -> Reporter -> inputs -> training -> artifacts -> exit code (0 success,
2 bad config, 1 failure, reported to the orchestrator with a message a user can act on)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainyard.trainers.nlp_text.config import BaseModel, TextConfig
from trainyard.trainers.nlp_text.model import TextModel
from trainyard.trainers.nlp_text.reading import (
    CsvSource,
    DataError,
    JsonlSource,
    cache_documents,
)
from trainyard.trainers.nlp_text.training import TrainParams, train
from trainyard.workload import (
    ArtifactCorrupt,
    ArtifactNotFound,
    Artifacts,
    InputError,
    Reporter,
    ThrottledProgress,
    Written,
    fetch_inputs,
    publish_model,
    run_trainer,
    storage_for,
)
from trainyard.workload.inputs import InputFile

PROG = "trainyard.trainers.nlp_text"
MODEL_ARTIFACT = "model"
REPORT_ARTIFACT = "report"


class TrainingFailed(Exception):
    """A failure with a message for the user (bad data, unusable base model)."""


async def _base_model(base: BaseModel) -> TextModel:
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
    config: TextConfig,
    reporter: Reporter,
    work: Path,
    given: tuple[list[InputFile], list[InputFile]] | None = None,
) -> tuple[TextModel, dict[str, Any]]:
    warnings: list[str] = []
    try:
        if given is None:
            given = (
                await fetch_inputs(config.supervised_files, work),
                await fetch_inputs(config.test_files, work) if config.test_files else [],
            )
    except InputError as exc:
        raise TrainingFailed(f"cannot read the input files: {exc}") from exc
    supervised, tests = given
    base = await _base_model(config.base_model) if config.base_model else None
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


async def train_and_write(
    config: TextConfig,
    reporter: Reporter,
    inputs: tuple[list[InputFile], list[InputFile]] | None = None,
) -> Written:
    """One training, reported and written: the library entry of other trainers (datagen)
    too; `inputs`: the (supervised, test) files when the caller has them on local disk
    already (data it made)."""
    with tempfile.TemporaryDirectory(prefix="nlp-text-", dir=os.getcwd()) as tmp:
        model, report = await _train(config, reporter, Path(tmp), inputs)
    return await publish_model(
        reporter,
        config.artifacts_uri,
        config.model_id,
        model.to_files(),
        {"kind": "nlp-text", "labels": len(model.labels)},
        report,
    )


async def run(environ: Mapping[str, str]) -> int:
    return await run_trainer(
        PROG,
        environ,
        lambda raw: TextConfig.parse(raw, environ),
        train_and_write,
        user_errors=(DataError, TrainingFailed),
    )


def main() -> int:
    return asyncio.run(run(os.environ))


if __name__ == "__main__":
    sys.exit(main())
