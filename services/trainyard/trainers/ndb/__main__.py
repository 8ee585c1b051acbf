"""`python -m trainyard.trainers.ndb`: config -> Reporter -> inputs (+ base model) -> training
-> the `model` artifact (the model's files, see model.py) and the `report` artifact
(report.json) under models/<model_id>/. Exit codes as every trainer's (workload.entry)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from trainyard.trainers import embeddings
from trainyard.trainers.ndb.config import BaseModel, NdbConfig
from trainyard.trainers.ndb.model import NdbModel, Settings, load_model
from trainyard.trainers.ndb.parsing import FileEntry, FileEntryError
from trainyard.trainers.ndb.training import DataError, TrainParams, train
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

PROG = "trainyard.trainers.ndb"
MODEL_ARTIFACT = "model"
REPORT_ARTIFACT = "report"


class TrainingFailed(Exception):
    """A failure with a message for the user (unreadable inputs, unusable base model)."""


async def _base_model(base: BaseModel, dest: Path) -> NdbModel:
    storage = storage_for(base.artifacts_uri)
    await storage.start()
    try:
        await Artifacts(storage, f"models/{base.model_id}/").download(MODEL_ARTIFACT, dest)
    except ArtifactNotFound as exc:
        raise TrainingFailed(f"base model {base.model_id}: no model artifact") from exc
    except (ArtifactCorrupt, ValueError) as exc:
        raise TrainingFailed(f"base model {base.model_id}: unusable artifact: {exc}") from exc
    finally:
        await storage.close()
    try:
        return await asyncio.to_thread(load_model, dest)
    except ValueError as exc:
        raise TrainingFailed(f"base model {base.model_id} is not an NDB model: {exc}") from exc


async def _train_and_write(config: NdbConfig, reporter: Reporter) -> Written:
    with tempfile.TemporaryDirectory(prefix="ndb-", dir=os.getcwd()) as tmp:
        work = Path(tmp)
        warnings: list[str] = []
        try:
            entries = []
            for i, spec in enumerate(config.unsupervised):
                files = await fetch_inputs(spec.uris, work / f"inputs-{i}")
                entries.append(
                    FileEntry.of(
                        files, spec.options, spec.metadata, spec.doc_id, f"unsupervised_files[{i}]"
                    )
                )
            supervised = await fetch_inputs(config.supervised, work / "supervised")
        except InputError as exc:
            raise TrainingFailed(f"cannot read the input files: {exc}") from exc
        except FileEntryError as exc:
            raise TrainingFailed(str(exc)) from exc
        base = await _base_model(config.base_model, work / "base") if config.base_model else None
        if base is not None:
            if config.model_options_given:
                warnings.append("model_options are ignored with a base model: its own are kept")
            settings = replace(base.settings, field_weights=dict(base.settings.field_weights))
        else:
            settings = Settings(
                language=config.language,
                advanced_search=config.advanced_search,
                in_memory=config.in_memory,
            )
        encoder = None
        missing = None
        if settings.advanced_search:
            encoder = await asyncio.to_thread(embeddings.load_encoder)
            if encoder is None:
                missing = embeddings.unavailable_reason()
        params = TrainParams(settings, test_split=config.test_split, deletions=config.deletions)
        progress = ThrottledProgress(reporter, asyncio.get_running_loop())
        try:
            result = await asyncio.to_thread(
                lambda: train(
                    entries,
                    supervised,
                    params,
                    base=base,
                    feedback=config.feedback,
                    encoder=encoder,
                    encoder_missing=missing,
                    warn=warnings.append,
                    progress=progress,
                )
            )
        finally:
            await progress.drain()
            for warning in warnings:  # also when the training failed: they may say why
                await reporter.log("warning", warning)
        report = result.report
        report["model_id"] = config.model_id
        report["warnings"] = warnings[:100]
        if config.base_model:
            report["base_model_id"] = config.base_model.model_id
        out = work / "model"
        await asyncio.to_thread(result.model.save, out, [c.fields for c in result.chunks])
        return await publish_model(
            reporter,
            config.artifacts_uri,
            config.model_id,
            {path.name: path for path in sorted(out.iterdir())},
            {"kind": "ndb", "chunks": len(result.chunks), "documents": report["documents"]},
            report,
        )


async def run(environ: Mapping[str, str]) -> int:
    return await run_trainer(
        PROG,
        environ,
        lambda raw: NdbConfig.parse(raw, environ),
        _train_and_write,
        user_errors=(DataError, TrainingFailed),
    )


def main() -> int:
    return asyncio.run(run(os.environ))


if __name__ == "__main__":
    sys.exit(main())
