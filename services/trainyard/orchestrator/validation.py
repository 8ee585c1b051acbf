"""Field rules of the orchestrator's requests, checked once at the edge by the interceptor
(App.validators): each returns every violation at once. Rules that need state (does the upload
exist, may the caller read the base model, is the name free) stay in the domain (training.py).

The train endpoints answer a broken request with 422 and the Model Bazaar message
`unable to start <type> training, found the following errors: <problems joined by "; ">`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import struct_pb2
from google.protobuf.message import Message

from trainyard.api.orchestrator.v1 import messages_pb2 as msgs
from trainyard.orchestrator.registry import CALLBACK_STATUSES, MESSAGE_LEVELS, TRAIN_STATUSES
from trainyard.orchestrator.retrieval import MAX_SOURCES_PAGE
from trainyard.runtime.errors import FieldViolation
from trainyard.runtime.interceptors import Validator
from trainyard.runtime.pagination import page_size_violations

#: Where a file of a train request may live ("nfs" is a path under a configured root, as "local").
FILE_LOCATIONS = ("upload", "local", "nfs", "s3")
MODEL_TYPES = ("ndb", "nlp-token", "nlp-text", "nlp-datagen")
ACCESS_LEVELS = ("private", "public")
LLM_PROVIDERS = ("openai", "offline")
MAX_NAME_CHARS = 255
MAX_FILES = 10_000
MAX_PATH_CHARS = 4096
MAX_EPOCHS = 1000
MAX_PREDICT_QUERIES = 1000
MAX_QUERY_CHARS = 100_000
MAX_TOP_K = 100
MAX_LABELS = 10_000
#: Datagen and token feedback bounds (issue 11).
MAX_GENERATED_ROWS = 100_000
MAX_DATAGEN_TAGS = 256
MAX_DATAGEN_LABELS = 1000
MAX_DATAGEN_SAMPLES = 1000
MAX_TEMPLATES_PER_SAMPLE = 1000
MAX_FEEDBACK_TOKENS = 1000
MAX_FEEDBACK_TOKEN_CHARS = 200
OUTSIDE_TAG = "O"
MAX_PROMPT_CHARS = 10_000
MAX_EXAMPLES = 100
MAX_EXAMPLE_CHARS = 1000
MAX_DESCRIPTION_CHARS = 2000


@dataclass(frozen=True)
class Limits:
    """The settings a stateless rule needs (resource maxima)."""

    max_cores: int = 16
    max_memory_mb: int = 65_536


class TrainRule:
    """A train endpoint's rules, worded as Model Bazaar words them."""

    def __init__(
        self, kind: str, check: Callable[[Any, Limits], list[FieldViolation]], limits: Limits
    ) -> None:
        self.kind = kind
        self._check = check
        self._limits = limits

    def __call__(self, request: Any) -> list[FieldViolation]:
        return self._check(request, self._limits)

    def summary(self, violations: Sequence[FieldViolation]) -> str:
        problems = "; ".join(v.description for v in violations)
        return f"unable to start {self.kind} training, found the following errors: {problems}"


# ---- pieces ------------------------------------------------------------------------------


def _name(request: Any) -> list[FieldViolation]:
    name = request.model_name
    if not name.strip():
        return [FieldViolation("model_name", "model_name is required")]
    problems = []
    if len(name) > MAX_NAME_CHARS:
        problems.append(
            FieldViolation("model_name", f"model_name must be at most {MAX_NAME_CHARS} characters")
        )
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        problems.append(
            FieldViolation("model_name", "model_name must not contain control characters")
        )
    return problems


def _base_model(request: Any, *, required: bool) -> list[FieldViolation]:
    has = request.HasField("base_model_id") if _is_optional(request, "base_model_id") else True
    value = request.base_model_id if has else ""
    if required and not value.strip():
        return [FieldViolation("base_model_id", "base_model_id is required")]
    if has and not value.strip() and not required:
        return [FieldViolation("base_model_id", "base_model_id must not be empty when given")]
    if len(value) > MAX_NAME_CHARS:
        return [FieldViolation("base_model_id", "base_model_id is not a model id")]
    return []


def _is_optional(message: Message, field: str) -> bool:
    descriptor = message.DESCRIPTOR.fields_by_name[field]
    return bool(descriptor.has_presence)


def _files(files: Iterable[msgs.FileInfo], where: str) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    items = list(files)
    if len(items) > MAX_FILES:
        return [FieldViolation(where, f"{where} may list at most {MAX_FILES} files")]
    for i, info in enumerate(items):
        path = f"{where}[{i}]"
        if info.location not in FILE_LOCATIONS:
            allowed = ", ".join(FILE_LOCATIONS)
            problems.append(
                FieldViolation(
                    f"{path}.location",
                    f"{path}.location {info.location!r} is not supported: use one of {allowed}",
                )
            )
        if not info.path.strip():
            problems.append(FieldViolation(f"{path}.path", f"{path}.path is required"))
        elif len(info.path) > MAX_PATH_CHARS or "\x00" in info.path:
            problems.append(FieldViolation(f"{path}.path", f"{path}.path is not a valid path"))
        elif info.location == "s3" and not _is_s3_uri(info.path):
            problems.append(
                FieldViolation(f"{path}.path", f"{path}.path must be s3://<bucket>/<key or prefix>")
            )
    return problems


def _is_s3_uri(path: str) -> bool:
    if not path.startswith("s3://"):
        return False
    bucket, _, key = path[5:].partition("/")
    return bool(bucket) and bool(key)


def _job_options(request: Any, limits: Limits) -> list[FieldViolation]:
    if not request.HasField("job_options"):
        return []
    opts = request.job_options
    problems = []
    if opts.HasField("allocation_cores"):
        if opts.allocation_cores < 1:
            problems.append(
                FieldViolation(
                    "job_options.allocation_cores",
                    "job_options.allocation_cores must be at least 1",
                )
            )
        elif opts.allocation_cores > limits.max_cores:
            problems.append(
                FieldViolation(
                    "job_options.allocation_cores",
                    f"job_options.allocation_cores must be at most {limits.max_cores}",
                )
            )
    if opts.HasField("allocation_memory"):
        if opts.allocation_memory < 1:
            problems.append(
                FieldViolation(
                    "job_options.allocation_memory",
                    "job_options.allocation_memory must be at least 1 (MB)",
                )
            )
        elif opts.allocation_memory > limits.max_memory_mb:
            problems.append(
                FieldViolation(
                    "job_options.allocation_memory",
                    f"job_options.allocation_memory must be at most {limits.max_memory_mb} (MB)",
                )
            )
    return problems


def _train_options(request: Any) -> list[FieldViolation]:
    if not request.HasField("train_options"):
        return []
    opts = request.train_options
    problems = []

    def bad(field: str, text: str) -> None:
        problems.append(FieldViolation(f"train_options.{field}", f"train_options.{field} {text}"))

    if opts.HasField("epochs") and not 1 <= opts.epochs <= MAX_EPOCHS:
        bad("epochs", f"must be from 1 to {MAX_EPOCHS}")
    if opts.HasField("learning_rate") and not (
        math.isfinite(opts.learning_rate) and opts.learning_rate > 0
    ):
        bad("learning_rate", "must be a number greater than 0")
    if opts.HasField("batch_size") and opts.batch_size < 1:
        bad("batch_size", "must be at least 1")
    if opts.HasField("max_in_memory_batches") and opts.max_in_memory_batches < 1:
        bad("max_in_memory_batches", "must be at least 1")
    if opts.HasField("test_split") and not (
        math.isfinite(opts.test_split) and 0 <= opts.test_split < 1
    ):
        bad("test_split", "must be in [0, 1)")
    return problems


def _test_size(request: Any) -> list[FieldViolation]:
    if request.HasField("test_size") and not (
        math.isfinite(request.test_size) and 0 <= request.test_size < 1
    ):
        return [FieldViolation("test_size", "test_size must be in [0, 1)")]
    return []


def _llm_provider(request: Any) -> list[FieldViolation]:
    if request.HasField("llm_provider") and request.llm_provider not in LLM_PROVIDERS:
        allowed = ", ".join(LLM_PROVIDERS)
        return [
            FieldViolation(
                "llm_provider", f"llm_provider {request.llm_provider!r} is not one of {allowed}"
            )
        ]
    return []


def _label(value: str, field: str) -> list[FieldViolation]:
    if not value.strip():
        return [FieldViolation(field, f"{field} must not be empty")]
    if len(value) > MAX_NAME_CHARS or any(c.isspace() for c in value):
        return [
            FieldViolation(field, f"{field} must be one word of at most {MAX_NAME_CHARS} chars")
        ]
    return []


# ---- the endpoints -----------------------------------------------------------------------


@functools.cache
def _snowball_languages() -> list[str]:
    import Stemmer  # the ndb trainer's stemmer (PyStemmer): the languages it can index

    return sorted(str(name) for name in Stemmer.algorithms())


def _ndb(request: msgs.TrainNdbRequest, limits: Limits) -> list[FieldViolation]:
    problems = _name(request) + _base_model(request, required=False)
    if request.HasField("model_options") and request.HasField("base_model_id"):
        problems.append(
            FieldViolation(
                "model_options", "model_options cannot be specified together with base_model_id"
            )
        )
    options = request.model_options
    if options.HasField("language") and options.language not in _snowball_languages():
        problems.append(
            FieldViolation(
                "model_options.language",
                f"model_options.language {options.language[:40]!r} is not supported: use one of "
                + ", ".join(_snowball_languages()),
            )
        )
    data = request.data
    if not data.unsupervised_files and not data.supervised_files:
        problems.append(
            FieldViolation("data", "unsupervised_files and supervised_files cannot both be empty")
        )
    problems += _files(data.unsupervised_files, "data.unsupervised_files")
    problems += _files(data.supervised_files, "data.supervised_files")
    for i, doc_id in enumerate(data.deletions):
        if not doc_id.strip() or len(doc_id) > MAX_PATH_CHARS:
            problems.append(
                FieldViolation(f"data.deletions[{i}]", f"data.deletions[{i}] is not a doc id")
            )
    return problems + _train_options(request) + _job_options(request, limits)


def _ndb_retrain(request: msgs.RetrainNdbRequest, limits: Limits) -> list[FieldViolation]:
    return _name(request) + _base_model(request, required=True) + _job_options(request, limits)


def _nlp_token(request: msgs.TrainNlpTokenRequest, limits: Limits) -> list[FieldViolation]:
    problems = _name(request) + _base_model(request, required=False)
    opts = request.model_options
    if not opts.source_column.strip():
        problems.append(
            FieldViolation("model_options.source_column", "source_column must be specified")
        )
    if not opts.target_column.strip():
        problems.append(
            FieldViolation("model_options.target_column", "target_column must be specified")
        )
    if len(opts.target_labels) > MAX_LABELS:
        problems.append(
            FieldViolation(
                "model_options.target_labels", f"target_labels may list at most {MAX_LABELS}"
            )
        )
    for i, label in enumerate(opts.target_labels):
        problems += _label(label, f"model_options.target_labels[{i}]")
    if opts.HasField("default_tag"):
        problems += _label(opts.default_tag, "model_options.default_tag")
        if opts.default_tag in opts.target_labels:
            problems.append(
                FieldViolation(
                    "model_options.default_tag", "default_tag must not be one of target_labels"
                )
            )
    problems += _nlp_data(request.data)
    return problems + _train_options(request) + _job_options(request, limits)


def _nlp_data(data: msgs.NlpData) -> list[FieldViolation]:
    problems = []
    if not data.supervised_files:
        problems.append(
            FieldViolation("data.supervised_files", "data.supervised_files cannot be empty")
        )
    problems += _files(data.supervised_files, "data.supervised_files")
    problems += _files(data.test_files, "data.test_files")
    return problems


def _nlp_text(request: msgs.TrainNlpTextRequest, limits: Limits) -> list[FieldViolation]:
    problems = _name(request) + _base_model(request, required=False)
    opts = request.model_options
    if not request.doc_classification:
        if not opts.text_column.strip():
            problems.append(
                FieldViolation("model_options.text_column", "text_column must be specified")
            )
        if not opts.label_column.strip():
            problems.append(
                FieldViolation("model_options.label_column", "label_column must be specified")
            )
    if opts.n_target_classes == 0:
        problems.append(
            FieldViolation("model_options.n_target_classes", "n_target_classes must be specified")
        )
    elif not 2 <= opts.n_target_classes <= MAX_LABELS:
        problems.append(
            FieldViolation(
                "model_options.n_target_classes",
                f"n_target_classes must be from 2 to {MAX_LABELS}",
            )
        )
    if opts.HasField("delimiter") and (len(opts.delimiter) != 1 or opts.delimiter in '\r\n"\x00'):
        problems.append(
            FieldViolation(
                "model_options.delimiter",
                "delimiter must be one character (not a quote or line break)",
            )
        )
    problems += _nlp_data(request.data)
    return problems + _train_options(request) + _job_options(request, limits)


def _entities(entities: Sequence[msgs.LabelEntity], where: str) -> list[FieldViolation]:
    problems = []
    if not entities:
        problems.append(FieldViolation(where, f"{where} cannot be empty"))
    names = [e.name for e in entities]
    for i, entity in enumerate(entities):
        problems += _label(entity.name, f"{where}[{i}].name")
        if len(entity.examples) > MAX_EXAMPLES or any(
            len(x) > MAX_EXAMPLE_CHARS for x in entity.examples
        ):
            problems.append(
                FieldViolation(
                    f"{where}[{i}].examples",
                    f"{where}[{i}].examples may hold at most {MAX_EXAMPLES} examples of at most "
                    f"{MAX_EXAMPLE_CHARS} characters",
                )
            )
        if len(entity.description) > MAX_DESCRIPTION_CHARS:
            problems.append(
                FieldViolation(
                    f"{where}[{i}].description",
                    f"{where}[{i}].description must be at most {MAX_DESCRIPTION_CHARS} characters",
                )
            )
    if len(set(names)) != len(names):
        problems.append(FieldViolation(where, f"{where} must not repeat a name"))
    return problems


def _nlp_datagen(request: msgs.TrainNlpDatagenRequest, limits: Limits) -> list[FieldViolation]:
    problems = _name(request) + _base_model(request, required=False)
    token, text = request.HasField("token_options"), request.HasField("text_options")
    if token == text:
        problems.append(
            FieldViolation(
                "token_options", "exactly one of token_options and text_options must be given"
            )
        )
    if not request.task_prompt.strip():
        problems.append(FieldViolation("task_prompt", "task_prompt is required"))
    elif len(request.task_prompt) > MAX_PROMPT_CHARS:
        problems.append(
            FieldViolation(
                "task_prompt", f"task_prompt must be at most {MAX_PROMPT_CHARS} characters"
            )
        )
    if token:
        problems += _token_datagen(request.token_options)
    if text:
        problems += _text_datagen(request.text_options, request.HasField("base_model_id"))
    problems += _test_size(request) + _llm_provider(request)
    return problems + _train_options(request) + _job_options(request, limits)


def _token_datagen(opts: msgs.TokenDatagenOptions) -> list[FieldViolation]:
    problems = _entities(opts.tags, "token_options.tags")
    names = {t.name for t in opts.tags}
    if len(opts.tags) > MAX_DATAGEN_TAGS:
        problems.append(
            FieldViolation(
                "token_options.tags", f"token_options.tags may hold at most {MAX_DATAGEN_TAGS}"
            )
        )
    if OUTSIDE_TAG in names:
        problems.append(
            FieldViolation(
                "token_options.tags",
                f"token_options.tags may not use {OUTSIDE_TAG!r}: it is the tag of tokens "
                "outside any entity",
            )
        )
    bounds = {
        "num_sentences_to_generate": MAX_GENERATED_ROWS,
        "num_samples_per_tag": MAX_GENERATED_ROWS,
        "templates_per_sample": MAX_TEMPLATES_PER_SAMPLE,
    }
    for field, high in bounds.items():
        if opts.HasField(cast(Any, field)) and not 1 <= getattr(opts, field) <= high:
            problems.append(
                FieldViolation(
                    f"token_options.{field}", f"token_options.{field} must be from 1 to {high}"
                )
            )
    per_tag = opts.num_samples_per_tag if opts.HasField("num_samples_per_tag") else 0
    if 0 < per_tag <= MAX_GENERATED_ROWS and per_tag * len(opts.tags) > MAX_GENERATED_ROWS:
        problems.append(
            FieldViolation(
                "token_options.num_samples_per_tag",
                f"num_samples_per_tag x tags must be at most {MAX_GENERATED_ROWS} sentences",
            )
        )
    if len(opts.samples) > MAX_DATAGEN_SAMPLES:
        problems.append(
            FieldViolation(
                "token_options.samples",
                f"token_options.samples may hold at most {MAX_DATAGEN_SAMPLES} sentences",
            )
        )
    for i, sample in enumerate(opts.samples[:MAX_DATAGEN_SAMPLES]):
        where = f"token_options.samples[{i}]"
        if len(sample.tokens) != len(sample.tags) or not sample.tokens:
            problems.append(FieldViolation(where, f"{where} needs one tag per token"))
            continue
        problems += _tokens(sample.tokens, f"{where}.tokens")
        unknown = sorted(
            {t for t in sample.tags if t != OUTSIDE_TAG and _entity_of(t) not in names}
        )
        if unknown:
            problems.append(
                FieldViolation(
                    f"{where}.tags",
                    f"{where}.tags uses tags that are not in token_options.tags: "
                    + ", ".join(repr(t[:40]) for t in unknown[:10]),
                )
            )
    return problems


def _entity_of(tag: str) -> str:
    return tag[2:] if tag[:2] in ("B-", "I-") else tag


def _tokens(tokens: Sequence[str], where: str) -> list[FieldViolation]:
    if any(
        not t or len(t) > MAX_FEEDBACK_TOKEN_CHARS or any(c.isspace() for c in t) for t in tokens
    ):
        return [
            FieldViolation(
                where,
                f"{where}: each token must be 1 to {MAX_FEEDBACK_TOKEN_CHARS} characters "
                "without whitespace",
            )
        ]
    return []


def _text_datagen(opts: msgs.TextDatagenOptions, has_base: bool) -> list[FieldViolation]:
    problems = _entities(opts.labels, "text_options.labels")
    if len(opts.labels) == 1 and not has_base:
        problems.append(
            FieldViolation(
                "text_options.labels",
                "text_options.labels needs at least 2 labels to train a classifier (or a "
                "base_model_id that has others)",
            )
        )
    if len(opts.labels) > MAX_DATAGEN_LABELS:
        problems.append(
            FieldViolation(
                "text_options.labels",
                f"text_options.labels may hold at most {MAX_DATAGEN_LABELS}",
            )
        )
    if not opts.HasField("samples_per_label"):
        problems.append(
            FieldViolation(
                "text_options.samples_per_label", "text_options.samples_per_label is required"
            )
        )
    elif opts.samples_per_label < 1:
        problems.append(
            FieldViolation(
                "text_options.samples_per_label",
                "text_options.samples_per_label must be at least 1",
            )
        )
    elif opts.samples_per_label * len(opts.labels) > MAX_GENERATED_ROWS:
        problems.append(
            FieldViolation(
                "text_options.samples_per_label",
                f"samples_per_label x labels must be at most {MAX_GENERATED_ROWS} texts",
            )
        )
    return problems


def _nlp_token_retrain(
    request: msgs.RetrainNlpTokenRequest, limits: Limits
) -> list[FieldViolation]:
    problems = _name(request) + _base_model(request, required=True)
    problems += _test_size(request) + _llm_provider(request)
    return problems + _train_options(request) + _job_options(request, limits)


# ---- the rest ----------------------------------------------------------------------------


def _update_train_status(request: msgs.UpdateTrainStatusRequest) -> list[FieldViolation]:
    if request.status in CALLBACK_STATUSES:
        return []
    allowed = ", ".join(CALLBACK_STATUSES)
    return [
        FieldViolation("status", f"unknown status {request.status!r}: must be one of {allowed}")
    ]


def _log_train_message(request: msgs.LogTrainMessageRequest) -> list[FieldViolation]:
    violations = []
    if request.level not in MESSAGE_LEVELS:
        violations.append(FieldViolation("level", "must be 'warning' or 'error'"))
    if not request.message.strip():
        violations.append(FieldViolation("message", "must not be empty"))
    return violations


def _set_access(request: msgs.SetModelAccessRequest) -> list[FieldViolation]:
    if request.access in ACCESS_LEVELS:
        return []
    return [FieldViolation("access", "access must be 'private' or 'public'")]


def _list_models(request: msgs.ListModelsRequest) -> list[FieldViolation]:
    problems = []
    if request.type and request.type not in MODEL_TYPES:
        problems.append(FieldViolation("type", f"type must be one of {', '.join(MODEL_TYPES)}"))
    if request.status and request.status not in TRAIN_STATUSES:
        problems.append(
            FieldViolation("status", f"status must be one of {', '.join(TRAIN_STATUSES)}")
        )
    return problems


def _predict(request: msgs.PredictRequest) -> list[FieldViolation]:
    problems = []
    has_query = request.HasField("query")
    if has_query == bool(request.queries):
        problems.append(FieldViolation("query", "give either query or queries (not both)"))
    if len(request.queries) > MAX_PREDICT_QUERIES:
        problems.append(
            FieldViolation("queries", f"queries may hold at most {MAX_PREDICT_QUERIES} entries")
        )
    texts = [request.query] if has_query else list(request.queries)
    if any(len(q) > MAX_QUERY_CHARS for q in texts):
        problems.append(
            FieldViolation("queries", f"a query must be at most {MAX_QUERY_CHARS} characters")
        )
    if request.HasField("top_k") and not 1 <= request.top_k <= MAX_TOP_K:
        problems.append(FieldViolation("top_k", f"top_k must be from 1 to {MAX_TOP_K}"))
    return problems


def _token_feedback(request: msgs.AddTokenFeedbackRequest) -> list[FieldViolation]:
    problems = []
    if not request.tokens:
        problems.append(FieldViolation("tokens", "tokens must hold at least one token"))
    elif len(request.tokens) > MAX_FEEDBACK_TOKENS:
        problems.append(
            FieldViolation("tokens", f"tokens may hold at most {MAX_FEEDBACK_TOKENS} tokens")
        )
    else:
        problems += _tokens(request.tokens, "tokens")
    if len(request.tags) != len(request.tokens):
        problems.append(
            FieldViolation(
                "tags",
                f"tags must hold one tag per token: {len(request.tokens)} tokens and "
                f"{len(request.tags)} tags",
            )
        )
    elif any(not t or len(t) > MAX_NAME_CHARS or any(c.isspace() for c in t) for t in request.tags):
        problems.append(FieldViolation("tags", "each tag must be one word"))
    return problems


# ---- ndb search and feedback -------------------------------------------------------------

MAX_SEARCH_REFERENCES = 10_000
MAX_CONSTRAINT_KEYS = 100
MAX_CONSTRAINT_VALUES = 1000
MAX_FEEDBACK_PAIRS = 1000
MAX_FEEDBACK_TEXT_CHARS = 1000
MAX_REFERENCE_ID_CHARS = 4096
MAX_EVENT_CHARS = 64


def _search(request: msgs.SearchRequest) -> list[FieldViolation]:
    problems = []
    has_query = request.HasField("query")
    if has_query == bool(request.queries):
        problems.append(FieldViolation("query", "give either query or queries (not both)"))
    if len(request.queries) > MAX_PREDICT_QUERIES:
        problems.append(
            FieldViolation("queries", f"queries may hold at most {MAX_PREDICT_QUERIES} entries")
        )
    texts = [request.query] if has_query else list(request.queries)
    if any(len(q) > MAX_QUERY_CHARS for q in texts):
        problems.append(
            FieldViolation("queries", f"a query must be at most {MAX_QUERY_CHARS} characters")
        )
    top_k = request.top_k if request.HasField("top_k") else 5
    if not 1 <= top_k <= MAX_TOP_K:
        problems.append(FieldViolation("top_k", f"top_k must be from 1 to {MAX_TOP_K}"))
    elif len(texts) * top_k > MAX_SEARCH_REFERENCES:
        problems.append(
            FieldViolation(
                "top_k",
                f"a call returns at most {MAX_SEARCH_REFERENCES} references (queries x top_k): "
                "lower top_k or send fewer queries",
            )
        )
    if request.HasField("constraints"):
        problems += _constraints(request.constraints)
    return problems


def _constraints(constraints: struct_pb2.Struct) -> list[FieldViolation]:
    fields = constraints.fields
    if len(fields) > MAX_CONSTRAINT_KEYS:
        return [
            FieldViolation(
                "constraints", f"constraints may name at most {MAX_CONSTRAINT_KEYS} metadata keys"
            )
        ]
    problems = []
    for key, value in fields.items():
        where = f"constraints.{key[:80]}"
        if not key.strip() or len(key) > MAX_NAME_CHARS:
            problems.append(
                FieldViolation(
                    "constraints", f"a constraint key must be 1 to {MAX_NAME_CHARS} characters"
                )
            )
            continue
        kind = value.WhichOneof("kind")
        if kind == "list_value":
            values = value.list_value.values
            if not values:
                problems.append(FieldViolation(where, f"{where} must list at least one value"))
            elif len(values) > MAX_CONSTRAINT_VALUES:
                problems.append(
                    FieldViolation(
                        where, f"{where} may list at most {MAX_CONSTRAINT_VALUES} values"
                    )
                )
            elif any(v.WhichOneof("kind") not in _SCALARS for v in values):
                problems.append(
                    FieldViolation(where, f"{where} may list only strings, numbers or booleans")
                )
        elif kind not in _SCALARS:
            problems.append(
                FieldViolation(
                    where,
                    f"{where} must be a string, number or boolean (equality), or a list of "
                    "them (any of)",
                )
            )
    return problems


_SCALARS = ("string_value", "number_value", "bool_value")


def _feedback_text(value: str, field: str, maximum: int = MAX_FEEDBACK_TEXT_CHARS) -> list[str]:
    """What is wrong with a stored feedback string (as descriptions of `field`)."""
    if not value.strip():
        return [f"{field} must not be empty"]
    if len(value) > maximum:
        return [f"{field} must be at most {maximum} characters"]
    if "\x00" in value:
        return [f"{field} must not contain NUL characters"]
    return []


def _pairs(count: int, field: str) -> list[FieldViolation]:
    if count == 0:
        return [FieldViolation(field, f"{field} must hold at least one pair")]
    if count > MAX_FEEDBACK_PAIRS:
        return [
            FieldViolation(field, f"{field} may hold at most {MAX_FEEDBACK_PAIRS} pairs a call")
        ]
    return []


def _upvote(request: msgs.UpvoteRequest) -> list[FieldViolation]:
    problems = _pairs(len(request.text_id_pairs), "text_id_pairs")
    if problems:
        return problems
    for i, pair in enumerate(request.text_id_pairs):
        for name, value, maximum in (
            ("query_text", pair.query_text, MAX_FEEDBACK_TEXT_CHARS),
            ("reference_id", pair.reference_id, MAX_REFERENCE_ID_CHARS),
        ):
            field = f"text_id_pairs[{i}].{name}"
            problems += [FieldViolation(field, d) for d in _feedback_text(value, field, maximum)]
    return problems


def _associate(request: msgs.AssociateRequest) -> list[FieldViolation]:
    problems = _pairs(len(request.text_pairs), "text_pairs")
    if problems:
        return problems
    for i, pair in enumerate(request.text_pairs):
        for name, value in (("source", pair.source), ("target", pair.target)):
            field = f"text_pairs[{i}].{name}"
            problems += [FieldViolation(field, d) for d in _feedback_text(value, field)]
        if pair.source.strip() and pair.source.strip() == pair.target.strip():
            problems.append(
                FieldViolation(
                    f"text_pairs[{i}]", f"text_pairs[{i}] associates a phrase with itself"
                )
            )
    return problems


def _implicit_feedback(request: msgs.ImplicitFeedbackRequest) -> list[FieldViolation]:
    problems = [
        FieldViolation(field, d)
        for field, value, maximum in (
            ("query_text", request.query_text, MAX_FEEDBACK_TEXT_CHARS),
            ("reference_id", request.reference_id, MAX_REFERENCE_ID_CHARS),
        )
        for d in _feedback_text(value, field, maximum)
    ]
    event = request.event
    if not event:
        problems.append(FieldViolation("event", 'event is required, e.g. "click"'))
    elif len(event) > MAX_EVENT_CHARS or not all(
        c.isascii() and (c.isalnum() or c in "_-.") for c in event
    ):
        problems.append(
            FieldViolation(
                "event",
                f"event must be 1 to {MAX_EVENT_CHARS} letters, digits, '_', '-' or '.'",
            )
        )
    return problems


def _list_sources(request: msgs.ListSourcesRequest) -> list[FieldViolation]:
    return page_size_violations(request.page_size, maximum=MAX_SOURCES_PAGE)


def validators(limits: Limits | None = None) -> Mapping[str, Validator]:
    """The request rules by message name, with the resource maxima from settings."""
    lim = limits or Limits()
    train: list[tuple[type[Message], str, Callable[[Any, Limits], list[FieldViolation]]]] = [
        (msgs.TrainNdbRequest, "ndb", _ndb),
        (msgs.RetrainNdbRequest, "ndb", _ndb_retrain),
        (msgs.TrainNlpTokenRequest, "nlp-token", _nlp_token),
        (msgs.TrainNlpTextRequest, "nlp-text", _nlp_text),
        (msgs.TrainNlpDatagenRequest, "nlp-datagen", _nlp_datagen),
        (msgs.RetrainNlpTokenRequest, "nlp-token", _nlp_token_retrain),
    ]
    rules: dict[str, Validator] = {
        message.DESCRIPTOR.full_name: TrainRule(kind, check, lim) for message, kind, check in train
    }
    rules.update(
        {
            msgs.UpdateTrainStatusRequest.DESCRIPTOR.full_name: _update_train_status,
            msgs.LogTrainMessageRequest.DESCRIPTOR.full_name: _log_train_message,
            msgs.SetModelAccessRequest.DESCRIPTOR.full_name: _set_access,
            msgs.ListModelsRequest.DESCRIPTOR.full_name: _list_models,
            msgs.PredictRequest.DESCRIPTOR.full_name: _predict,
            msgs.AddTokenFeedbackRequest.DESCRIPTOR.full_name: _token_feedback,
            msgs.SearchRequest.DESCRIPTOR.full_name: _search,
            msgs.UpvoteRequest.DESCRIPTOR.full_name: _upvote,
            msgs.AssociateRequest.DESCRIPTOR.full_name: _associate,
            msgs.ImplicitFeedbackRequest.DESCRIPTOR.full_name: _implicit_feedback,
            msgs.ListSourcesRequest.DESCRIPTOR.full_name: _list_sources,
        }
    )
    return rules


#: The rules with the default limits (tests, tools); the app builds its own from settings.
VALIDATORS: Mapping[str, Validator] = validators()
