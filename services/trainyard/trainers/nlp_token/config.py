"""The nlp-token trainer's config, parsed into a frozen dataclass with every problem at once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from trainyard.blobs import check_key
from trainyard.workload import ConfigError

MAX_LABELS = 256
#: L-BFGS iterations when `epochs` is not set: the proto's 5 epochs suit a neural net, not
#: L-BFGS, which needs tens of iterations to converge (crfsuite also stops early on its own
#: convergence test), so an unset `epochs` means crfsuite's usual 100.
DEFAULT_ITERATIONS = 100
RESERVED_LABELS = ("overall",)  # keys of the report's metrics


@dataclass(frozen=True)
class BaseModel:
    model_id: str
    artifacts_uri: str


@dataclass(frozen=True)
class NlpTokenConfig:
    model_id: str
    supervised_files: tuple[str, ...]
    test_files: tuple[str, ...]
    artifacts_uri: str
    base_model: BaseModel | None
    source_column: str | None
    target_column: str | None
    target_labels: tuple[str, ...]
    default_tag: str | None
    epochs: int | None
    learning_rate: float
    batch_size: int
    max_in_memory_batches: int
    test_split: float

    @property
    def max_iterations(self) -> int:
        return self.epochs if self.epochs is not None else DEFAULT_ITERATIONS

    @property
    def buffer_rows(self) -> int:
        return self.batch_size * self.max_in_memory_batches

    @classmethod
    def parse(cls, raw: Mapping[str, Any], environ: Mapping[str, str]) -> NlpTokenConfig:
        problems: list[str] = []

        def uris(key: str, required: bool) -> tuple[str, ...]:
            value = raw.get(key) or []
            if not isinstance(value, list) or not all(isinstance(u, str) and u for u in value):
                problems.append(f"{key} must be a list of URIs")
                return ()
            if required and not value:
                problems.append(f"{key} must name at least one file")
            return tuple(value)

        model_id = raw.get("model_id") or environ.get("TRAINYARD_JOB_ID") or ""
        if not isinstance(model_id, str) or not model_id or not _is_segment(model_id):
            problems.append("model_id must be one path segment (no '/', '.', '..')")
        supervised = uris("supervised_files", True)
        tests = uris("test_files", False)
        default_uri = PurePath(os.path.abspath("artifacts")).as_uri() + "/"
        artifacts_uri = raw.get("artifacts_uri") or default_uri
        if not isinstance(artifacts_uri, str) or not artifacts_uri.endswith("/"):
            problems.append("artifacts_uri must be a folder URI ending in '/'")
        base: BaseModel | None = None
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
                base = BaseModel(raw_base["model_id"], raw_base["artifacts_uri"])

        mo = raw.get("model_options") or {}
        if not isinstance(mo, dict):
            problems.append("model_options must be an object")
            mo = {}
        columns: dict[str, str | None] = {}
        for key in ("source_column", "target_column"):
            value = mo.get(key)
            if value in (None, ""):
                columns[key] = None
                if base is None:
                    problems.append(f"model_options.{key} is required")
            elif not isinstance(value, str):
                problems.append(f"model_options.{key} must be a string")
            else:
                columns[key] = value
        if columns.get("source_column") and columns.get("source_column") == columns.get(
            "target_column"
        ):
            problems.append("model_options.source_column and target_column must differ")
        labels_raw = mo.get("target_labels") or []
        labels: tuple[str, ...] = ()
        if not isinstance(labels_raw, list) or not all(
            isinstance(x, str) and x and not any(c.isspace() for c in x) for x in labels_raw
        ):
            problems.append("model_options.target_labels must be tags without spaces")
        elif len(set(labels_raw)) != len(labels_raw):
            problems.append("model_options.target_labels repeats a label")
        elif len(labels_raw) > MAX_LABELS:
            problems.append(f"model_options.target_labels may hold at most {MAX_LABELS} labels")
        elif reserved := sorted(set(labels_raw) & set(RESERVED_LABELS)):
            problems.append(f"model_options.target_labels may not use {reserved[0]!r}")
        else:
            labels = tuple(labels_raw)
            if not labels and base is None:
                problems.append("model_options.target_labels must name at least one label")
        default_tag = mo.get("default_tag")
        if default_tag is not None and (
            not isinstance(default_tag, str)
            or not default_tag
            or any(c.isspace() for c in default_tag)
        ):
            problems.append("model_options.default_tag must be a tag without spaces")
            default_tag = None
        if isinstance(default_tag, str) and default_tag in labels:
            problems.append("model_options.default_tag may not be one of the target_labels")

        to = raw.get("train_options") or {}
        if not isinstance(to, dict):
            problems.append("train_options must be an object")
            to = {}
        epochs = _int(to, "epochs", None, 1, 1000, problems)
        batch_size = _int(to, "batch_size", 1000, 1, 10_000_000, problems)
        batches = _int(to, "max_in_memory_batches", 20, 1, 1_000_000, problems)
        learning_rate = _float(to, "learning_rate", 0.0001, problems)
        if learning_rate <= 0:
            problems.append("train_options.learning_rate must be greater than 0")
        test_split = _float(to, "test_split", 0.0, problems)
        if not 0 <= test_split < 1:
            problems.append("train_options.test_split must be in [0, 1)")
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(
            model_id=str(model_id),
            supervised_files=supervised,
            test_files=tests,
            artifacts_uri=str(artifacts_uri),
            base_model=base,
            source_column=columns.get("source_column"),
            target_column=columns.get("target_column"),
            target_labels=labels,
            default_tag=default_tag,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size or 1000,
            max_in_memory_batches=batches or 20,
            test_split=test_split,
        )


def _is_segment(text: str) -> bool:
    if "/" in text:
        return False
    try:
        check_key(text)
    except ValueError:
        return False
    return True


def _int(
    options: Mapping[str, Any],
    key: str,
    default: int | None,
    low: int,
    high: int,
    problems: list[str],
) -> int | None:
    value = options.get(key)
    if value is None:
        return default
    # JSON numbers from a protobuf Struct may arrive as 5.0.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(f"train_options.{key} must be an integer from {low} to {high}")
        return default
    return value


def _float(options: Mapping[str, Any], key: str, default: float, problems: list[str]) -> float:
    value = options.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        problems.append(f"train_options.{key} must be a number")
        return default
    return float(value)
