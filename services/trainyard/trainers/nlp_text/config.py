"""The nlp-text trainer's config, parsed into a frozen dataclass; every problem at once."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from trainyard.blobs import check_key
from trainyard.workload import ConfigError

MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 1_000_000
MAX_CHUNK_ROWS = 10_000_000
MAX_CLASSES = 10_000


@dataclass(frozen=True)
class BaseModel:
    model_id: str
    artifacts_uri: str


@dataclass(frozen=True)
class TextConfig:
    model_id: str
    supervised_files: tuple[str, ...]
    test_files: tuple[str, ...]
    doc_classification: bool
    text_column: str
    label_column: str
    delimiter: str
    n_target_classes: int
    epochs: int
    learning_rate: float
    batch_size: int
    max_in_memory_batches: int
    test_split: float
    artifacts_uri: str
    base_model: BaseModel | None

    @classmethod
    def parse(cls, raw: Mapping[str, Any], environ: Mapping[str, str]) -> TextConfig:
        problems: list[str] = []

        def uris(key: str, required: bool) -> tuple[str, ...]:
            value = raw.get(key, [])
            if value is None:
                value = []
            if not isinstance(value, list) or not all(isinstance(u, str) and u for u in value):
                problems.append(f"{key} must be a list of URIs")
                return ()
            if required and not value:
                problems.append(f"{key} must name at least one file")
            return tuple(value)

        def integer(
            section: Mapping[str, Any], name: str, default: int, low: int, high: int
        ) -> int:
            value = section.get(name, default)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{name} must be an integer")
                return default
            if not low <= value <= high:
                problems.append(f"{name} must be from {low} to {high}")
                return default
            return value

        model_id = raw.get("model_id") or environ.get("TRAINYARD_JOB_ID") or ""
        if not isinstance(model_id, str) or not _is_segment(model_id):
            problems.append("model_id must be one path segment (no '/', '.', '..')")
        supervised = uris("supervised_files", True)
        tests = uris("test_files", False)
        doc = raw.get("doc_classification", False)
        if not isinstance(doc, bool):
            problems.append("doc_classification must be true or false")
            doc = False

        mo = raw.get("model_options") or {}
        to = raw.get("train_options") or {}
        if not isinstance(mo, dict):
            problems.append("model_options must be an object")
            mo = {}
        if not isinstance(to, dict):
            problems.append("train_options must be an object")
            to = {}
        text_column = mo.get("text_column", "")
        label_column = mo.get("label_column", "")
        if not isinstance(text_column, str) or not isinstance(label_column, str):
            problems.append("model_options.text_column and label_column must be strings")
            text_column, label_column = "", ""
        if not doc:
            for name, value in (("text_column", text_column), ("label_column", label_column)):
                if not value.strip():
                    problems.append(f"model_options.{name} is required (unless doc_classification)")
            if text_column.strip() and text_column.strip() == label_column.strip():
                problems.append("model_options.text_column and label_column must differ")
        delimiter = mo.get("delimiter", ",")
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '\r\n"':
            problems.append(
                "model_options.delimiter must be one character (not a quote or newline)"
            )
            delimiter = ","
        if "n_target_classes" not in mo:
            problems.append("model_options.n_target_classes is required")
        n_classes = integer(mo, "n_target_classes", 2, 1, MAX_CLASSES)

        epochs = integer(to, "epochs", 5, 1, MAX_EPOCHS)
        batch_size = integer(to, "batch_size", 1000, 1, MAX_BATCH_SIZE)
        batches = integer(to, "max_in_memory_batches", 20, 1, MAX_CHUNK_ROWS)
        if batch_size * batches > MAX_CHUNK_ROWS:
            problems.append(f"batch_size * max_in_memory_batches must be at most {MAX_CHUNK_ROWS}")
        lr = to.get("learning_rate", 0.0001)
        if (
            isinstance(lr, bool)
            or not isinstance(lr, int | float)
            or not math.isfinite(lr)
            or not 0 < lr <= 1
        ):
            problems.append("learning_rate must be a number in (0, 1]")
            lr = 0.0001
        split = to.get("test_split", 0.0)
        if isinstance(split, bool) or not isinstance(split, int | float) or not 0 <= split < 1:
            problems.append("test_split must be a number in [0, 1)")
            split = 0.0

        default_uri = PurePath(os.path.abspath("artifacts")).as_uri() + "/"
        artifacts_uri = raw.get("artifacts_uri") or default_uri
        if not isinstance(artifacts_uri, str) or not artifacts_uri.endswith("/"):
            problems.append("artifacts_uri must be a folder URI ending in '/'")
        base_raw = raw.get("base_model")
        base: BaseModel | None = None
        if base_raw is not None:
            if (
                not isinstance(base_raw, dict)
                or not isinstance(base_raw.get("model_id"), str)
                or not _is_segment(base_raw["model_id"])
                or not isinstance(base_raw.get("artifacts_uri"), str)
                or not base_raw["artifacts_uri"].endswith("/")
            ):
                problems.append(
                    "base_model must be null or {model_id, artifacts_uri ending in '/'}"
                )
            else:
                base = BaseModel(base_raw["model_id"], base_raw["artifacts_uri"])
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(
            str(model_id),
            supervised,
            tests,
            doc,
            text_column.strip(),
            label_column.strip(),
            delimiter,
            n_classes,
            epochs,
            float(lr),
            batch_size,
            batches,
            float(split),
            str(artifacts_uri),
            base,
        )


def _is_segment(text: str) -> bool:
    if not text or "/" in text:
        return False
    try:
        check_key(text)
    except ValueError:
        return False
    return True
