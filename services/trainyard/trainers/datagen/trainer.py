"""The datagen trainer's run: config → generate rows (provider) → split → train the nlp-token or
nlp-text model on them with those trainers' own `train_and_write` → artifact
`generated-data` (train.csv, test.csv) → exit code.

The provider: `llm_provider: "offline"` is the offline one; `"openai"` or none is the openai
provider when the platform configured a key (`platform_llm()`), else the offline one. The first
warning of the training says which produced the data.
"""

from __future__ import annotations

import asyncio
import csv
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainyard.blobs import BlobNotFound
from trainyard.trainers.datagen.config import DatagenConfig
from trainyard.trainers.datagen.offline import OfflineProvider
from trainyard.trainers.datagen.openai_provider import OpenAIProvider, OpenAISettings
from trainyard.trainers.datagen.tasks import (
    OUTSIDE,
    Entity,
    Generated,
    GenerationError,
    TextRow,
    TextTask,
    TokenRow,
    TokenTask,
    split_rows,
)

# nlp-text's run lives in its __main__ module; importing it runs nothing.
from trainyard.trainers.nlp_text import __main__ as nlp_text
from trainyard.trainers.nlp_text.config import MAX_CLASSES, TextConfig
from trainyard.trainers.nlp_text.reading import DataError as TextDataError
from trainyard.trainers.nlp_token import trainer as nlp_token
from trainyard.trainers.nlp_token.config import NlpTokenConfig
from trainyard.trainers.nlp_token.data import DataError as TokenDataError
from trainyard.workload import (
    Artifacts,
    InputFile,
    Reporter,
    Written,
    run_trainer,
    storage_for,
)
from trainyard.workload.config import platform_llm

PROG = "trainyard.trainers.datagen"
GENERATED_ARTIFACT = "generated-data"
TRAIN_FILE, TEST_FILE = "train.csv", "test.csv"
TOKEN_COLUMNS = ("source", "target")
TEXT_COLUMNS = ("text", "label")
FEEDBACK_COLUMNS = ("tokens", "tags")


def openai_settings(llm: Mapping[str, str | int | float]) -> OpenAISettings | None:
    """The platform's openai settings; None when it configured no key."""
    key = str(llm.get("api_key") or "")
    if llm.get("provider") != "openai" or not key:
        return None
    return OpenAISettings(
        base_url=str(llm.get("base_url") or "https://api.openai.com/v1"),
        model=str(llm.get("model") or "gpt-4o-mini"),
        api_key=key,
        max_attempts=int(llm.get("max_attempts") or 4),
        retry_initial_seconds=float(llm.get("retry_initial_seconds") or 1.0),
        timeout_seconds=float(llm.get("timeout_seconds") or 60.0),
        concurrency=int(llm.get("concurrency") or 4),
    )


def choose_provider(
    requested: str | None, llm: Mapping[str, str | int | float], seed: int
) -> tuple[OfflineProvider | OpenAIProvider, str]:
    """The provider to use and a note for the owner when it is not the one asked for."""
    settings = openai_settings(llm)
    if requested == "offline":
        return OfflineProvider(seed), ""
    if settings is None:
        note = (
            "no OpenAI API key is configured on this platform, so the offline provider "
            "generated the data"
        )
        return OfflineProvider(seed), note
    return OpenAIProvider(settings, seed), ""


async def generate_tokens(
    provider: OfflineProvider | OpenAIProvider, task: TokenTask
) -> Generated[TokenRow]:
    if isinstance(provider, OfflineProvider):
        return await asyncio.to_thread(provider.tokens, task)
    return await provider.tokens(task)


async def generate_texts(
    provider: OfflineProvider | OpenAIProvider, task: TextTask
) -> Generated[TextRow]:
    if isinstance(provider, OfflineProvider):
        return await asyncio.to_thread(provider.texts, task)
    return await provider.texts(task)


def described(provider: OfflineProvider | OpenAIProvider) -> str:
    if isinstance(provider, OpenAIProvider):
        return provider.described
    return f"the offline provider (templates and Faker values, seed {provider.seed})"


def write_token_csv(path: Path, rows: Iterable[TokenRow], columns: Sequence[str]) -> int:
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow((" ".join(row.tokens), " ".join(row.tags)))
            n += 1
    return n


def write_text_csv(path: Path, rows: Iterable[TextRow]) -> int:
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(TEXT_COLUMNS)
        for row in rows:
            writer.writerow((row.text, row.label))
            n += 1
    return n


def read_feedback(paths: Sequence[Path]) -> list[TokenRow]:
    """The feedback sentences the orchestrator exported (tokens/tags CSV)."""
    rows = []
    for path in paths:
        with open(path, newline="", encoding="utf-8") as fh:
            for record in csv.DictReader(fh):
                tokens = (record.get(FEEDBACK_COLUMNS[0]) or "").split()
                tags = (record.get(FEEDBACK_COLUMNS[1]) or "").split()
                if tokens and len(tokens) == len(tags):
                    rows.append(TokenRow(tuple(tokens), tuple(tags)))
    return rows


class _Run:
    def __init__(self, config: DatagenConfig, reporter: Reporter, workdir: Path) -> None:
        self.config = config
        self.reporter = reporter
        self.workdir = workdir
        self.notes: list[str] = []
        self.attributes: dict[str, Any] = {}

    def _options(self) -> dict[str, Any]:
        # test_size splits the generated data; no second hold-out inside the trainer.
        return {**self.config.train_options, "test_split": 0.0}

    def _uris(self, train: Path, test: Path, n_test: int) -> dict[str, list[str]]:
        return {
            "supervised_files": [train.as_uri()],
            "test_files": [test.as_uri()] if n_test else [],
        }

    @staticmethod
    def _local(train: Path, test: Path, n_test: int) -> tuple[list[InputFile], list[InputFile]]:
        """The files this run made, handed to the trainer as they are (nothing to fetch)."""
        return (
            [InputFile(train, train.name, train.as_uri())],
            [InputFile(test, test.name, test.as_uri())] if n_test else [],
        )

    async def _feedback(self) -> list[TokenRow]:
        """The feedback the orchestrator exported into this model's folder."""
        storage = storage_for(self.config.artifacts_uri)
        await storage.start()
        path = self.workdir / "feedback.csv"
        fh = await asyncio.to_thread(open, path, "wb")
        try:
            async for chunk in storage.read(
                f"models/{self.config.model_id}/{self.config.feedback_key}"
            ):
                await asyncio.to_thread(fh.write, chunk)
        except BlobNotFound as exc:
            raise GenerationError("the base model's exported feedback is missing") from exc
        finally:
            fh.close()
            await storage.close()
        return read_feedback([path])

    async def tokens(self) -> Written:
        config = self.config
        base = None
        if config.base_model is not None:
            # Only its base_model counts here; the training's own config comes below.
            reading = {**config.as_dict(), "supervised_files": ["file:///-"], "model_options": {}}
            base = await nlp_token.load_base(NlpTokenConfig.parse(reading, {}), self.workdir)
        feedback: list[TokenRow] = []
        task = config.token
        if config.retrain:
            assert base is not None  # the config requires it
            feedback = await self._feedback()
            if not feedback:
                raise GenerationError("the base model's feedback holds no usable sentence")
            labels = [str(x) for x in base.predictor.meta.get("target_labels", [])]
            task = (
                TokenTask(
                    "Sentences like the samples, with the same kinds of entities.",
                    tuple(Entity(label) for label in labels),
                    tuple(feedback),
                    config.generate_sentences,
                )
                if config.llm_provider and config.generate_sentences
                else None
            )
        rows: list[TokenRow] = []
        labels_new: list[str] = []
        if task is not None:
            generated = await self._generate(task)
            rows = generated.rows
            labels_new = list(task.tag_names)
        train, test = split_rows(rows, config.test_size, config.seed)
        fb_train, fb_test = split_rows(feedback, config.test_size, config.seed)
        train_path, test_path = self.workdir / TRAIN_FILE, self.workdir / TEST_FILE
        n_train = write_token_csv(train_path, fb_train + train, TOKEN_COLUMNS)
        n_test = write_token_csv(test_path, fb_test + test, TOKEN_COLUMNS)
        fit_path = train_path
        if fb_train and config.feedback_weight > 1:
            # Feedback corrects the base model: each sentence counts feedback_weight times.
            fit_path = self.workdir / "train-weighted.csv"
            write_token_csv(fit_path, [*fb_train * config.feedback_weight, *train], TOKEN_COLUMNS)
        if feedback:
            self.attributes["feedback"] = {
                "sentences": len(feedback),
                "weight": config.feedback_weight,
            }
        token_config = NlpTokenConfig.parse(
            {
                **config.as_dict(),
                **self._uris(fit_path, test_path, n_test),
                "model_options": {
                    "source_column": TOKEN_COLUMNS[0],
                    "target_column": TOKEN_COLUMNS[1],
                    "target_labels": labels_new,
                    "default_tag": OUTSIDE,
                },
                "train_options": self._options(),
            },
            {},
        )
        written = await nlp_token.train_and_write(
            token_config,
            self.reporter,
            self.workdir,
            base,
            self._local(fit_path, test_path, n_test),
        )
        return await self._finish(written, train_path, test_path, n_train, n_test)

    async def texts(self) -> Written:
        config = self.config
        assert config.text is not None
        generated = await self._generate(config.text)
        train, test = split_rows(generated.rows, config.test_size, config.seed)
        train_path, test_path = self.workdir / TRAIN_FILE, self.workdir / TEST_FILE
        n_train = write_text_csv(train_path, train)
        n_test = write_text_csv(test_path, test)
        n_labels = len(config.text.labels)
        text_config = TextConfig.parse(
            {
                **config.as_dict(),
                **self._uris(train_path, test_path, n_test),
                "model_options": {
                    "text_column": TEXT_COLUMNS[0],
                    "label_column": TEXT_COLUMNS[1],
                    # A base model brings its own labels: room for them too.
                    "n_target_classes": (
                        max(n_labels, 2) if config.base_model is None else MAX_CLASSES
                    ),
                },
                "train_options": self._options(),
            },
            {},
        )
        written = await nlp_text.train_and_write(
            text_config, self.reporter, self._local(train_path, test_path, n_test)
        )
        return await self._finish(written, train_path, test_path, n_train, n_test)

    async def _generate(self, task: TokenTask | TextTask) -> Generated[Any]:
        provider, note = choose_provider(self.config.llm_provider, platform_llm(), self.config.seed)
        await self.reporter.progress(0.0, "generating")
        try:
            if isinstance(task, TokenTask):
                generated: Generated[Any] = await generate_tokens(provider, task)
            else:
                generated = await generate_texts(provider, task)
        finally:
            if isinstance(provider, OpenAIProvider):
                await provider.close()
        who = described(provider)
        await self.reporter.log(
            "warning",
            f"the training data was generated by {who}: {len(generated.rows)} rows"
            + (f" ({note})" if note else ""),
        )
        for warning in generated.warnings:
            await self.reporter.log("warning", warning)
        self.attributes["datagen"] = {
            "provider": provider.name,
            "rows": len(generated.rows),
            "seed": self.config.seed,
        }
        return generated

    async def _finish(
        self, written: Written, train: Path, test: Path, n_train: int, n_test: int
    ) -> Written:
        storage = storage_for(self.config.artifacts_uri)
        await storage.start()
        try:
            artifacts = Artifacts(storage, f"models/{self.config.model_id}/")
            async with artifacts.writer(GENERATED_ARTIFACT) as writer:
                await writer.add_file(TRAIN_FILE, train)
                await writer.add_file(TEST_FILE, test)
                await writer.commit({"train_rows": n_train, "test_rows": n_test})
        finally:
            await storage.close()
        self.attributes.setdefault("datagen", {}).update(
            {"train_rows": n_train, "test_rows": n_test, "test_size": self.config.test_size}
        )
        return Written(
            written.where, written.version, {**(written.attributes or {}), **self.attributes}
        )


async def train_and_write(config: DatagenConfig, reporter: Reporter, workdir: Path) -> Written:
    run = _Run(config, reporter, workdir)
    if config.text is not None:
        return await run.texts()
    return await run.tokens()


async def run(environ: Mapping[str, str]) -> int:
    async def train(config: DatagenConfig, reporter: Reporter) -> Written:
        with tempfile.TemporaryDirectory(prefix="datagen-", dir=os.getcwd()) as tmp:
            return await train_and_write(config, reporter, Path(tmp))

    return await run_trainer(
        PROG,
        environ,
        lambda raw: DatagenConfig.parse(raw, environ),
        train,
        user_errors=(
            GenerationError,
            TokenDataError,
            TextDataError,
            nlp_text.TrainingFailed,
        ),
    )


def main() -> int:
    return asyncio.run(run(os.environ))


__all__ = ["GENERATED_ARTIFACT", "PROG", "main", "run", "train_and_write"]
