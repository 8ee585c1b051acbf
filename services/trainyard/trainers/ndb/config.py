"""The NDB trainer's config, parsed into a frozen dataclass; every problem at once.

Keys (the orchestrator writes them, see orchestrator/training.py):
    model_id, artifacts_uri, base_model {model_id, artifacts_uri} | null
    unsupervised_files, supervised_files   lists of URIs
    file_entries   {"unsupervised_files": [{"uris": [...], "options": {...}, "metadata": {...},
                   "doc_id": ...}], ...}: the request's file entries with their options; when
                   absent every URI is an entry without options
    model_options  {in_memory, advanced_search, language}
    deletions      doc ids to remove
    test_split     share of the supervised pairs held out (default 0.2; also read from
                   train_options.test_split)
    feedback       {"upvotes": [{query_text, reference_id}], "associations": [{source,
                   target}], "implicit": [{query_text, reference_id, event}]} (ndb-retrain)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainyard.trainers.ndb.analysis import DEFAULT_LANGUAGE, languages
from trainyard.trainers.ndb.training import DEFAULT_TEST_SPLIT, Feedback, feedback_of
from trainyard.workload import ConfigError

MAX_DELETIONS = 1_000_000


@dataclass(frozen=True)
class BaseModel:
    model_id: str
    artifacts_uri: str


@dataclass(frozen=True)
class EntrySpec:
    uris: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    doc_id: str | None = None


@dataclass(frozen=True)
class NdbConfig:
    model_id: str
    artifacts_uri: str
    base_model: BaseModel | None
    unsupervised: tuple[EntrySpec, ...]
    supervised: tuple[str, ...]
    in_memory: bool
    advanced_search: bool
    language: str
    deletions: tuple[str, ...]
    test_split: float
    feedback: Feedback
    model_options_given: bool

    @classmethod
    def parse(cls, raw: Mapping[str, Any], environ: Mapping[str, str]) -> NdbConfig:
        problems: list[str] = []

        def uris(key: str) -> tuple[str, ...]:
            value = raw.get(key) or []
            if not isinstance(value, list) or not all(isinstance(u, str) and u for u in value):
                problems.append(f"{key} must be a list of URIs")
                return ()
            return tuple(value)

        model_id = raw.get("model_id") or environ.get("TRAINYARD_JOB_ID") or ""
        if (
            not isinstance(model_id, str)
            or not model_id
            or "/" in model_id
            or model_id
            in (
                ".",
                "..",
            )
        ):
            problems.append("model_id must be one path segment (no '/', '.', '..')")
        artifacts_uri = raw.get("artifacts_uri") or ""
        if not isinstance(artifacts_uri, str) or not artifacts_uri:
            problems.append("artifacts_uri is required")
            artifacts_uri = ""
        base = raw.get("base_model")
        base_model = None
        if base is not None:
            if (
                not isinstance(base, dict)
                or not isinstance(base.get("model_id"), str)
                or not isinstance(base.get("artifacts_uri"), str)
            ):
                problems.append("base_model must be {model_id, artifacts_uri}")
            else:
                base_model = BaseModel(base["model_id"], base["artifacts_uri"])

        flat = uris("unsupervised_files")
        supervised = uris("supervised_files")
        entries: list[EntrySpec] = []
        given = (
            (raw.get("file_entries") or {}).get("unsupervised_files")
            if isinstance(raw.get("file_entries"), dict)
            else None
        )
        if given is not None:
            if not isinstance(given, list):
                problems.append("file_entries.unsupervised_files must be a list")
            else:
                for i, item in enumerate(given):
                    where = f"file_entries.unsupervised_files[{i}]"
                    if not isinstance(item, dict):
                        problems.append(f"{where} must be an object")
                        continue
                    u = item.get("uris") or []
                    opts = item.get("options") or {}
                    meta = item.get("metadata") or {}
                    doc_id = item.get("doc_id")
                    if not isinstance(u, list) or not all(isinstance(x, str) for x in u):
                        problems.append(f"{where}.uris must be a list of URIs")
                        continue
                    if not isinstance(opts, dict) or not isinstance(meta, dict):
                        problems.append(f"{where}: options and metadata must be objects")
                        continue
                    if doc_id is not None and not isinstance(doc_id, str):
                        problems.append(f"{where}.doc_id must be a string")
                        continue
                    entries.append(EntrySpec(tuple(u), opts, meta, doc_id or None))
        else:
            entries = [EntrySpec((u,)) for u in flat]

        mo = raw.get("model_options") or {}
        if not isinstance(mo, dict):
            problems.append("model_options must be an object")
            mo = {}
        flags: dict[str, bool] = {}
        for name, default in (("in_memory", False), ("advanced_search", False)):
            value = mo.get(name, default)
            if not isinstance(value, bool):
                problems.append(f"model_options.{name} must be true or false")
                value = default
            flags[name] = value
        language = mo.get("language", DEFAULT_LANGUAGE)
        if not isinstance(language, str) or language not in languages():
            problems.append(f"model_options.language must be one of {', '.join(languages())}")
            language = DEFAULT_LANGUAGE

        deletions = raw.get("deletions") or []
        if not isinstance(deletions, list) or not all(isinstance(d, str) for d in deletions):
            problems.append("deletions must be a list of doc ids")
            deletions = []
        elif len(deletions) > MAX_DELETIONS:
            problems.append(f"deletions: at most {MAX_DELETIONS} doc ids")

        to = raw.get("train_options") or {}
        split = raw.get("test_split", to.get("test_split") if isinstance(to, dict) else None)
        if split is None:
            split = DEFAULT_TEST_SPLIT
        if (
            isinstance(split, bool)
            or not isinstance(split, int | float)
            or not math.isfinite(split)
            or not 0 <= split < 1
        ):
            problems.append("test_split must be a number in [0, 1)")
            split = DEFAULT_TEST_SPLIT

        try:
            feedback = feedback_of(raw.get("feedback"))
        except ValueError as exc:
            problems.append(str(exc))
            feedback = Feedback()

        if not entries and not supervised and not deletions and feedback.empty:
            problems.append("nothing to train: no unsupervised or supervised files")
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(
            model_id=str(model_id),
            artifacts_uri=artifacts_uri,
            base_model=base_model,
            unsupervised=tuple(entries),
            supervised=supervised,
            in_memory=flags["in_memory"],
            advanced_search=flags["advanced_search"],
            language=language,
            deletions=tuple(deletions),
            test_split=float(split),
            feedback=feedback,
            model_options_given=bool(mo),
        )
