"""The datagen trainer's config, parsed into a frozen dataclass with every problem at once.

Two modes, both from the orchestrator:
- nlp-datagen: `task_prompt`, one of `token_options` / `text_options` (the request's, as
  proto JSON), `test_size`, `llm_provider`, `train_options`, `base_model`;
- nlp-token-retrain: `feedback_key` (a CSV under this model's own artifact folder, columns
  tokens/tags, written by the orchestrator from the base model's feedback), `feedback_weight`,
  `generate_sentences` (used when `llm_provider` is set), `test_size`, `train_options`,
  `base_model` (required).
The LLM provider's settings are not here: they are the platform's (`platform_llm()`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from trainyard.blobs import check_key
from trainyard.trainers.datagen.tasks import (
    OUTSIDE,
    Entity,
    TextTask,
    TokenRow,
    TokenTask,
    plain_tag,
)
from trainyard.workload import ConfigError

DEFAULT_SENTENCES = 1000
DEFAULT_TEMPLATES_PER_SAMPLE = 10
DEFAULT_TEST_SIZE = 0.1
#: The most rows one run generates (the orchestrator's validation has the same bound).
MAX_ROWS = 100_000
PROVIDERS = ("openai", "offline")


@dataclass(frozen=True)
class BaseModelRef:
    model_id: str
    artifacts_uri: str


@dataclass(frozen=True)
class DatagenConfig:
    model_id: str
    artifacts_uri: str
    base_model: BaseModelRef | None
    token: TokenTask | None
    text: TextTask | None
    test_size: float
    #: The provider the request named; None when it named none.
    llm_provider: str | None
    train_options: dict[str, Any]
    seed: int
    #: Key of the exported feedback under `models/<model_id>/` (a retraining).
    feedback_key: str = ""
    feedback_weight: int = 1
    generate_sentences: int = 0

    @property
    def retrain(self) -> bool:
        return bool(self.feedback_key)

    def as_dict(self) -> dict[str, Any]:
        """The base-model and storage part every trainer's config shares."""
        return {
            "model_id": self.model_id,
            "artifacts_uri": self.artifacts_uri,
            "base_model": (
                {
                    "model_id": self.base_model.model_id,
                    "artifacts_uri": self.base_model.artifacts_uri,
                }
                if self.base_model
                else None
            ),
        }

    @classmethod
    def parse(cls, raw: Mapping[str, Any], environ: Mapping[str, str]) -> DatagenConfig:
        problems: list[str] = []
        model_id = raw.get("model_id") or environ.get("TRAINYARD_JOB_ID") or ""
        if not isinstance(model_id, str) or not _is_segment(model_id):
            problems.append("model_id must be one path segment (no '/', '.', '..')")
        default_uri = PurePath(os.path.abspath("artifacts")).as_uri() + "/"
        artifacts_uri = raw.get("artifacts_uri") or default_uri
        if not isinstance(artifacts_uri, str) or not artifacts_uri.endswith("/"):
            problems.append("artifacts_uri must be a folder URI ending in '/'")
        base: BaseModelRef | None = None
        raw_base = raw.get("base_model")
        if raw_base is not None:
            if (
                not isinstance(raw_base, dict)
                or not isinstance(raw_base.get("model_id"), str)
                or not _is_segment(raw_base["model_id"])
                or not isinstance(raw_base.get("artifacts_uri"), str)
                or not raw_base["artifacts_uri"].endswith("/")
            ):
                problems.append("base_model must be null or {model_id, artifacts_uri}")
            else:
                base = BaseModelRef(raw_base["model_id"], raw_base["artifacts_uri"])
        test_size = _number(raw, "test_size", DEFAULT_TEST_SIZE, problems)
        if not 0 <= test_size < 1:
            problems.append("test_size must be in [0, 1)")
        provider = raw.get("llm_provider")
        if provider is not None and provider not in PROVIDERS:
            problems.append(f"llm_provider must be one of {', '.join(PROVIDERS)}")
        train_options = raw.get("train_options") or {}
        if not isinstance(train_options, dict):
            problems.append("train_options must be an object")
            train_options = {}
        seed = _integer(raw, "seed", 0, 0, 2**31 - 1, problems)
        prompt = raw.get("task_prompt") or ""
        if not isinstance(prompt, str):
            problems.append("task_prompt must be a string")
            prompt = ""

        feedback = raw.get("feedback_key") or ""
        if not isinstance(feedback, str) or (feedback and not _is_key(feedback)):
            problems.append("feedback_key must be a key under the model's folder")
            feedback = ""
        token: TokenTask | None = None
        text: TextTask | None = None
        token_raw, text_raw = raw.get("token_options"), raw.get("text_options")
        if feedback:
            if base is None:
                problems.append("a retraining from feedback needs base_model")
        elif (token_raw is None) == (text_raw is None):
            problems.append("exactly one of token_options and text_options must be given")
        elif token_raw is not None:
            token = _token_task(prompt, token_raw, problems)
        else:
            text = _text_task(prompt, text_raw, problems)
        weight = _integer(raw, "feedback_weight", 1, 1, 1000, problems)
        generate = _integer(raw, "generate_sentences", 0, 0, MAX_ROWS, problems)
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(
            model_id=str(model_id),
            artifacts_uri=str(artifacts_uri),
            base_model=base,
            token=token,
            text=text,
            test_size=test_size,
            llm_provider=provider,
            train_options=dict(train_options),
            seed=seed,
            feedback_key=feedback,
            feedback_weight=weight,
            generate_sentences=generate,
        )


def _entities(value: Any, where: str, problems: list[str]) -> tuple[Entity, ...]:
    if not isinstance(value, list) or not value:
        problems.append(f"{where} must be a non-empty list")
        return ()
    out = []
    for i, item in enumerate(value):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            problems.append(f"{where}[{i}].name must be one word")
            continue
        examples = item.get("examples") or []
        if not isinstance(examples, list) or not all(isinstance(e, str) for e in examples):
            problems.append(f"{where}[{i}].examples must be a list of strings")
            examples = []
        description = item.get("description") or ""
        if not isinstance(description, str):
            description = ""
        out.append(Entity(name, tuple(examples), description))
    if len({e.name for e in out}) != len(out):
        problems.append(f"{where} repeats a name")
    return tuple(out)


def _token_task(prompt: str, raw: Any, problems: list[str]) -> TokenTask | None:
    if not isinstance(raw, dict):
        problems.append("token_options must be an object")
        return None
    tags = _entities(raw.get("tags"), "token_options.tags", problems)
    names = tuple(t.name for t in tags)
    if OUTSIDE in names:
        problems.append(f"token_options.tags may not use {OUTSIDE!r}, the outside tag")
    samples: list[TokenRow] = []
    for i, item in enumerate(raw.get("samples") or []):
        tokens = item.get("tokens") if isinstance(item, dict) else None
        tags_ = item.get("tags") if isinstance(item, dict) else None
        if (
            not isinstance(tokens, list)
            or not isinstance(tags_, list)
            or len(tokens) != len(tags_)
            or not all(isinstance(t, str) and t.split() == [t] for t in tokens)
        ):
            problems.append(f"token_options.samples[{i}] needs one tag per whitespace-free token")
            continue
        unknown = [t for t in tags_ if not isinstance(t, str) or plain_tag(t, names) is None]
        if unknown:
            problems.append(f"token_options.samples[{i}] uses unknown tags {unknown[:5]}")
            continue
        samples.append(TokenRow(tuple(tokens), tuple(tags_)))
    per_tag = _integer(raw, "num_samples_per_tag", 0, 0, MAX_ROWS, problems)
    sentences = _integer(raw, "num_sentences_to_generate", 0, 0, MAX_ROWS, problems)
    total = max(sentences or (0 if per_tag else DEFAULT_SENTENCES), per_tag * len(names))
    if total > MAX_ROWS:
        problems.append(f"at most {MAX_ROWS} sentences may be generated")
    templates = _integer(
        raw, "templates_per_sample", DEFAULT_TEMPLATES_PER_SAMPLE, 1, 1000, problems
    )
    return TokenTask(prompt, tags, tuple(samples), total, templates)


def _text_task(prompt: str, raw: Any, problems: list[str]) -> TextTask | None:
    if not isinstance(raw, dict):
        problems.append("text_options must be an object")
        return None
    labels = _entities(raw.get("labels"), "text_options.labels", problems)
    per_label = _integer(raw, "samples_per_label", 0, 1, MAX_ROWS, problems)
    if per_label * len(labels) > MAX_ROWS:
        problems.append(f"at most {MAX_ROWS} texts may be generated")
    return TextTask(prompt, labels, per_label)


def _is_key(text: str) -> bool:
    try:
        check_key(text)
    except ValueError:
        return False
    return True


def _is_segment(text: str) -> bool:
    if not text or "/" in text:
        return False
    try:
        check_key(text)
    except ValueError:
        return False
    return True


def _integer(
    raw: Mapping[str, Any], key: str, default: int, low: int, high: int, problems: list[str]
) -> int:
    value = raw.get(key)
    if value is None:
        if default < low:
            problems.append(f"{key} is required")
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(f"{key} must be an integer from {low} to {high}")
        return default
    return value


def _number(raw: Mapping[str, Any], key: str, default: float, problems: list[str]) -> float:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        problems.append(f"{key} must be a number")
        return default
    return float(value)
