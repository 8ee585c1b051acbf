"""The nlp-token trainer's run: config → read and stream rows into crfsuite → train →
evaluate with the exported decoder → artifacts `model`, `data`, `report` → exit code.

The CPU work (reading, training, scoring) runs in one worker thread; the event loop meanwhile
forwards its progress to the orchestrator, at most twice a second.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import random
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainyard.trainers.nlp_token.config import NlpTokenConfig
from trainyard.trainers.nlp_token.data import (
    DataError,
    ReadStats,
    Sentence,
    TagScheme,
    read_sentences,
)
from trainyard.trainers.nlp_token.inference import MODEL_FILES, TokenPredictor, load
from trainyard.workload import (
    Artifacts,
    InputFile,
    Reporter,
    Written,
    fetch_inputs,
    run_trainer,
    storage_for,
)

if TYPE_CHECKING:
    from trainyard.trainers.nlp_token.model import Evaluation

PROG = "trainyard.trainers.nlp_token"
#: The module that brings the CRF's and the metrics' libraries (pycrfsuite, seqeval,
#: scikit-learn): about 1.5 s of a start, imported in a thread from the start by `__main__`
#: (workload.entry.Preload) and here, lazily, by `fit` (which waits for that import).
LIBRARIES = "trainyard.trainers.nlp_token.model"
MODEL, DATA, REPORT = "model", "data", "report"
DATA_FILE = "sentences.csv.gz"
DATA_COLUMNS = ("tokens", "tags")
#: The seed of the test_split hold-out (recorded in the report).
SEED = 0
#: Evaluation keeps each evaluated token's gold and predicted tag (for the metric library):
#: past this many tokens the rest of the test data is not scored (the report says so).
MAX_EVAL_TOKENS = 2_000_000


@dataclass
class Progress:
    """Written by the worker thread, read by the event loop: the latest fraction, and each
    phase's start kept until sent, so a phase shorter than the reporting interval still shows
    (list.append and the assignments are atomic under the GIL)."""

    fraction: float = 0.0
    phase: str = "reading"
    started: list[str] = field(default_factory=list)

    def set(self, phase: str, fraction: float) -> None:
        if phase != self.phase:
            self.started.append(phase)
        self.phase, self.fraction = phase, max(0.0, min(1.0, fraction))


@dataclass
class Base:
    """What a training continues from: the base model's predictor and options, and the
    sentences it was trained on (its `data` artifact, on local disk)."""

    predictor: TokenPredictor
    data_path: Path


@dataclass
class Outcome:
    files: dict[str, bytes]
    report: dict[str, Any]
    data_path: Path
    warnings: list[str] = field(default_factory=list)


def scheme_of(config: NlpTokenConfig, base: Base | None) -> tuple[TagScheme, str, str]:
    """The tag scheme and columns: the config's, falling back to the base model's; target
    labels of a continued model are the base's plus the new ones."""
    meta = base.predictor.meta if base else {}
    labels = list(meta.get("target_labels", []))
    labels += [x for x in config.target_labels if x not in labels]
    default = config.default_tag or meta.get("default_tag") or "O"
    source = config.source_column or meta.get("source_column")
    target = config.target_column or meta.get("target_column")
    if not labels or not isinstance(source, str) or not isinstance(target, str):
        raise DataError("the base model does not say its columns and labels; give model_options")
    return TagScheme(tuple(labels), str(default)), source, target


def _data_rows(path: Path, scheme: TagScheme, stats: ReadStats) -> Iterator[Sentence]:
    """The base model's training sentences (decompressed to disk first: the CSV reader
    takes a file, and the data may be larger than memory)."""
    plain = path.with_suffix("")
    with gzip.open(path, "rb") as gz, open(plain, "wb") as out:
        shutil.copyfileobj(gz, out, 1 << 20)
    yield from read_sentences(plain, "the base model's data", *DATA_COLUMNS, scheme, stats)


def fit(
    config: NlpTokenConfig,
    supervised: list[InputFile],
    tests: list[InputFile],
    base: Base | None,
    workdir: Path,
    progress: Progress,
) -> Outcome:
    """Everything but I/O with the platform: read, train, evaluate, build the report."""
    from trainyard.trainers.nlp_token.model import CrfParams, CrfTraining, evaluate

    started = time.monotonic()
    scheme, source, target = scheme_of(config, base)
    stats = ReadStats()
    rng = random.Random(SEED)
    holdout_path = workdir / "holdout.csv"
    data_path = workdir / DATA_FILE
    params = CrfParams(max_iterations=config.max_iterations)
    training = CrfTraining(
        params,
        on_iteration=lambda n: progress.set("training", n / params.max_iterations),
    )
    total_bytes = sum(f.path.stat().st_size for f in supervised) or 1
    done_bytes = 0
    held_out = 0
    buffer: list[Sentence] = []
    with (
        open(holdout_path, "w", newline="", encoding="utf-8") as hf,
        gzip.open(data_path, "wt", newline="", encoding="utf-8") as df,
    ):
        holdout, data = csv.writer(hf), csv.writer(df)
        holdout.writerow(DATA_COLUMNS)
        data.writerow(DATA_COLUMNS)

        def flush() -> None:
            # Rows wait here, at most batch_size * max_in_memory_batches of them, before
            # crfsuite takes them into its own training set.
            for s in buffer:
                training.append(s)
                data.writerow((" ".join(s.tokens), " ".join(s.tags)))
            buffer.clear()

        def take(sentences: Iterator[Sentence], split: bool) -> None:
            nonlocal held_out
            for s in sentences:
                if split and config.test_split and rng.random() < config.test_split:
                    holdout.writerow((" ".join(s.tokens), " ".join(s.tags)))
                    held_out += 1
                    continue
                buffer.append(s)
                if len(buffer) >= config.buffer_rows:
                    flush()

        if base is not None:
            take(_data_rows(base.data_path, scheme, stats), split=False)
        for f in supervised:

            def on_bytes(n: int, before: int = done_bytes) -> None:
                progress.set("reading", (before + n) / total_bytes)

            take(
                read_sentences(
                    f.path,
                    f.name,
                    source,
                    target,
                    scheme,
                    stats,
                    on_bytes=on_bytes,
                ),
                split=True,
            )
            done_bytes += f.path.stat().st_size
        flush()
    if training.sentences == 0:
        raise DataError(
            "no usable rows in the supervised files: "
            + ("; ".join(stats.warnings()) or "every row is empty")
        )
    read_seconds = time.monotonic() - started
    progress.set("training", 0.0)
    weights = training.train(workdir)
    train_seconds = time.monotonic() - started - read_seconds
    meta = {
        "source_column": source,
        "target_column": target,
        "target_labels": list(scheme.target_labels),
        "default_tag": scheme.default_tag,
    }
    files = weights.files(meta)
    predictor = load(files)

    progress.set("evaluating", 0.0)
    test_stats = ReadStats()
    evaluated_on: str
    if tests:
        evaluated_on = "test_files"
        sources = [(f.path, f.name, source, target) for f in tests]
    elif held_out:
        evaluated_on = f"test_split hold-out ({held_out} rows, seed {SEED})"
        sources = [(holdout_path, "the hold-out", *DATA_COLUMNS)]
    else:
        evaluated_on = "none (no test_files and no test_split)"
        sources = []
    truncated = False

    def eval_sentences() -> Iterator[Sentence]:
        nonlocal truncated
        seen = 0
        for path, name, src, tgt in sources:
            for s in read_sentences(path, name, src, tgt, scheme, test_stats):
                if seen + len(s.tokens) > MAX_EVAL_TOKENS:
                    truncated = True
                    return
                seen += len(s.tokens)
                yield s

    after = evaluate(predictor, eval_sentences(), scheme)
    before: Evaluation | None = None
    if base is not None and sources:
        before = evaluate(base.predictor, eval_sentences(), scheme)
    progress.set("evaluating", 1.0)
    warnings = stats.warnings() + [f"test data: {w}" for w in test_stats.warnings()]
    if truncated:
        warnings.append(f"only the first {MAX_EVAL_TOKENS} test tokens were scored")
    zero = {
        label: {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0} for label in scheme.target_labels
    }
    report = {
        # A new model has no "before": its metrics are all zero (it tags nothing yet).
        "before_train_metrics": before.metrics() if before else zero,
        "after_train_metrics": after.metrics() if sources else {},
        "after_train_examples": after.examples,
        "evaluated_on": evaluated_on,
        "evaluated_sentences": len(after.gold),
        "training": {
            "algorithm": "lbfgs",
            "max_iterations": params.max_iterations,
            "c1": params.c1,
            "c2": params.c2,
            "learning_rate": {"value": config.learning_rate, "used": False},
            "sentences": training.sentences,
            "tokens": stats.tokens,
            "rows_read": stats.rows,
            "base_model": config.base_model.model_id if config.base_model else None,
            "labels": weights.labels,
            "attributes": len(weights.attributes),
            "seed": SEED,
            "read_seconds": round(read_seconds, 3),
            "train_seconds": round(train_seconds, 3),
        },
        "warnings": warnings,
    }
    return Outcome(files, report, data_path, warnings)


async def _load_base(config: NlpTokenConfig, workdir: Path) -> Base | None:
    if config.base_model is None:
        return None
    storage = storage_for(config.base_model.artifacts_uri)
    await storage.start()
    try:
        artifacts = Artifacts(storage, f"models/{config.base_model.model_id}/")
        manifest = await artifacts.manifest(MODEL)
        files = {f.path: await artifacts.read_bytes(MODEL, f.path) for f in manifest.files}
        predictor = await asyncio.to_thread(load, files)
        folder = workdir / "base-data"
        await artifacts.download(DATA, folder)
    finally:
        await storage.close()
    return Base(predictor, folder / DATA_FILE)


async def load_base(config: NlpTokenConfig, workdir: Path) -> Base | None:
    """The config's base model (its predictor and training sentences); None without one."""
    return await _load_base(config, workdir)


async def _pump(reporter: Reporter, progress: Progress, stop: threading.Event) -> None:
    last: tuple[str, float] | None = None
    while True:
        stopping = stop.is_set()
        while progress.started:
            phase = progress.started.pop(0)
            if phase != progress.phase:
                await reporter.progress(0.0, phase)
        now = (progress.phase, round(progress.fraction, 3))
        if now != last:
            await reporter.progress(now[1], now[0])
            last = now
        if stopping:
            return
        await asyncio.sleep(0.5)


async def train_and_write(
    config: NlpTokenConfig,
    reporter: Reporter,
    workdir: Path,
    base: Base | None = None,
    inputs: tuple[list[InputFile], list[InputFile]] | None = None,
) -> Written:
    """One training, reported and written: the library entry of other trainers (datagen)
    too. `base`: the config's base model when the caller loaded it already; `inputs`: the
    (supervised, test) files when the caller has them on local disk already (data it made)."""
    await reporter.progress(0.0, "reading")
    if inputs is None:
        supervised = await fetch_inputs(config.supervised_files, workdir)
        tests = await fetch_inputs(config.test_files, workdir)
    else:
        supervised, tests = inputs
    if base is None:
        base = await _load_base(config, workdir)
    progress = Progress()
    stop = threading.Event()
    pump = asyncio.create_task(_pump(reporter, progress, stop))
    try:
        outcome = await asyncio.to_thread(fit, config, supervised, tests, base, workdir, progress)
    finally:
        stop.set()
        await pump
    for warning in outcome.warnings:
        await reporter.log("warning", warning)
    await reporter.progress(0.0, "writing")
    where, version = await _write(config, outcome)
    await reporter.progress(1.0, "writing")
    return Written(where, version)


async def run(environ: Mapping[str, str], workdir: Path) -> int:
    return await run_trainer(
        PROG,
        environ,
        lambda raw: NlpTokenConfig.parse(raw, environ),
        lambda config, reporter: train_and_write(config, reporter, workdir),
        user_errors=(DataError,),
    )


async def _write(config: NlpTokenConfig, outcome: Outcome) -> tuple[str, str]:
    storage = storage_for(config.artifacts_uri)
    await storage.start()
    try:
        artifacts = Artifacts(storage, f"models/{config.model_id}/")
        async with artifacts.writer(DATA) as writer:
            await writer.add_file(DATA_FILE, outcome.data_path)
            await writer.commit({"columns": list(DATA_COLUMNS)})
        manifest = await artifacts.write(
            MODEL,
            {name: outcome.files[name] for name in MODEL_FILES},
            metadata={"model_format": json.loads(outcome.files["model.json"])["format"]},
        )
        report = json.dumps(outcome.report, sort_keys=True, ensure_ascii=False).encode()
        await artifacts.write(REPORT, {"report.json": report})
        return artifacts.uri(MODEL), manifest.version
    finally:
        await storage.close()


__all__ = ["DATA_COLUMNS", "PROG", "Base", "fit", "load_base", "run", "train_and_write"]
