"""The finetuning workload: build the training file, run the provider's fine-tuning job to its
end, then evaluate the fine-tuned model on the user's database.

`run(config, report)` reports each change as it happens (see `report`'s keys in the module's
package docstring). It returns normally once the provider's job is terminal: a job that failed or
was cancelled at the provider is reported as `status` failed/cancelled with the provider's message
as `error`. Failures before a job exists (no key, the database unreachable, a record too long
for the base model, a file the provider rejects) raise `FinetuningError`, whose message is meant
for the finetuning's owner; the caller stores it as the error and the status failed.

Idempotent on `finetuning_id`: the job is created with metadata {"trainyard_finetuning_id": id};
before creating one, the provider's jobs are listed with that metadata filter and an existing job
is followed instead, so a restarted workload never creates a second job.
"""

from __future__ import annotations

import io
import json
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import openai
from openai.types.fine_tuning import FineTuningJob
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from trainyard.trainers.finetuning.evaluation import Case, evaluate
from trainyard.trainers.finetuning.prompt import (
    MIN_EXAMPLES,
    PromptTooLong,
    context_window,
    count_tokens,
    messages_tokens,
    sql_from_reply,
    system_prompt,
    validate_training_file,
)
from trainyard.trainers.finetuning.schema import (
    DatabaseSchema,
    DatabaseUnreachable,
    describe_database,
)
from trainyard.trainers.finetuning.sql import tables_read

METADATA_KEY = "trainyard_finetuning_id"
STATUSES = frozenset({"validating_files", "queued", "running", "succeeded", "failed", "cancelled"})
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
# The provider's transient failures, retried with backoff.
TRANSIENT: tuple[type[Exception], ...] = (
    openai.APIConnectionError,
    openai.APITimeoutError,
    openai.RateLimitError,
    openai.InternalServerError,
)
RETRY_ATTEMPTS = 6
# Jobs looked at when searching an existing one (a provider that ignores the metadata filter).
MAX_JOBS_SCANNED = 1000
# Waiting for the uploaded file to be processed, at most.
FILE_PROCESSING_TIMEOUT_SECONDS = 3600.0

Report = Callable[[Mapping[str, Any]], None]
T = TypeVar("T")


class FinetuningError(Exception):
    """A user-facing failure: the message is stored as the finetuning's error."""


@dataclass(frozen=True)
class Record:
    id: str
    question: str
    sql_query: str


@dataclass(frozen=True)
class Config:
    finetuning_id: str
    connection_uri: str
    schemas: list[str] | None
    train_records: list[Record]
    eval_records: list[Record]
    model_name: str
    hyperparameters: dict[str, Any]
    base_url: str | None
    api_key: str | None
    poll_interval_seconds: float
    row_limit: int
    eval_timeout_seconds: float
    # The per-example token limit; None: the base model's (prompt.context_window).
    context_window_tokens: int | None


def _records(value: Any, key: str) -> list[Record]:
    if not isinstance(value, list):
        raise FinetuningError(f"config {key} must be a list")
    records = []
    for item in value:
        if not isinstance(item, Mapping):
            raise FinetuningError(f"config {key} must hold objects")
        question, sql = item.get("question"), item.get("sql_query")
        if not isinstance(question, str) or not isinstance(sql, str):
            raise FinetuningError(f"config {key} records need a question and a sql_query")
        records.append(Record(id=str(item.get("id", "")), question=question, sql_query=sql))
    return records


def parse_config(config: Mapping[str, Any]) -> Config:
    base = config.get("base_llm") or {}
    provider = config.get("provider") or {}
    evaluation = config.get("eval") or {}
    if not isinstance(base, Mapping) or not isinstance(provider, Mapping):
        raise FinetuningError("config base_llm and provider must be objects")
    if base.get("model_provider", "openai") != "openai":
        raise FinetuningError(f"model provider {base.get('model_provider')!r} is not supported")
    model_name = base.get("model_name")
    if not isinstance(model_name, str) or not model_name:
        raise FinetuningError("config base_llm.model_name is required")
    parameters = base.get("model_parameters") or {}
    hyper = {
        "n_epochs": parameters.get("n_epochs", 3),
        "batch_size": parameters.get("batch_size", 1),
        "learning_rate_multiplier": parameters.get("learning_rate_multiplier", "auto"),
    }
    for key, value in hyper.items():
        if value is None or value == "auto":
            hyper[key] = "auto"
            continue
        number_ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        if not number_ok or (key != "learning_rate_multiplier" and not isinstance(value, int)):
            kind = (
                "a positive number" if key == "learning_rate_multiplier" else "a positive integer"
            )
            raise FinetuningError(f'model_parameters.{key} must be {kind} or "auto", not {value!r}')
    schemas = config.get("schemas")
    window = config.get("context_window_tokens")
    return Config(
        finetuning_id=str(config["finetuning_id"]),
        connection_uri=str(config["connection_uri"]),
        schemas=[str(s) for s in schemas] if schemas else None,
        train_records=_records(config.get("train_records", []), "train_records"),
        eval_records=_records(config.get("eval_records", []), "eval_records"),
        model_name=model_name,
        hyperparameters=hyper,
        base_url=provider.get("base_url") or None,
        api_key=provider.get("api_key") or None,
        poll_interval_seconds=float(config.get("poll_interval_seconds", 5.0)),
        row_limit=int(evaluation.get("row_limit", 1000)),
        eval_timeout_seconds=float(evaluation.get("timeout_seconds", 10.0)),
        context_window_tokens=int(window) if window else None,
    )


def _provider_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return exc.message


def _call(what: str, function: Callable[[], T]) -> T:
    """`function()` with transient provider errors retried; others → FinetuningError."""
    try:
        for attempt in Retrying(
            retry=retry_if_exception_type(TRANSIENT),
            stop=stop_after_attempt(RETRY_ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=20),
            reraise=True,
        ):
            with attempt:
                return function()
    except openai.APIStatusError as exc:
        raise FinetuningError(
            f"the provider refused to {what} ({exc.status_code}): {_provider_message(exc)}"
        ) from exc
    except openai.APIConnectionError as exc:
        raise FinetuningError(f"the provider could not be reached to {what}: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _say(message: str) -> None:
    print(f"finetuning: {message}", file=sys.stderr, flush=True)


def build_training_file(config: Config, schema: DatabaseSchema) -> bytes:
    """The JSONL training file: one example per train record, validated as the provider will."""
    limit = config.context_window_tokens or context_window(config.model_name)
    lines = []
    for index, record in enumerate(config.train_records):
        conversation = [
            {"role": "user", "content": record.question},
            {"role": "assistant", "content": record.sql_query},
        ]
        budget = limit - messages_tokens(conversation) - 4  # the system message's own overhead
        label = f"golden record {record.id or index}"
        try:
            prompt = system_prompt(schema, budget, tables_read(record.sql_query, schema.dialect))
        except PromptTooLong as exc:
            raise FinetuningError(
                f"{label} cannot fit the context window of {config.model_name} "
                f"({limit} tokens): {exc}"
            ) from exc
        messages = [{"role": "system", "content": prompt.system}, *conversation]
        lines.append(json.dumps({"messages": messages}, ensure_ascii=False))
    content = ("\n".join(lines) + "\n").encode()
    problem = validate_training_file(content, limit)
    if problem is not None:
        raise FinetuningError(f"the training file is not valid for the provider: {problem}")
    return content


def evaluation_prompt(config: Config, schema: DatabaseSchema) -> str:
    """The system prompt of the evaluation's questions: the schema's tables in order while they
    fit half the context window (the golden SQL, unknown at question time, chooses none)."""
    limit = config.context_window_tokens or context_window(config.model_name)
    return system_prompt(schema, limit // 2).system


def _suffix(finetuning_id: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", finetuning_id.lower()).strip("-")
    return ("ty-" + cleaned)[:18].rstrip("-")


def find_job(client: openai.OpenAI, finetuning_id: str) -> FineTuningJob | None:
    """The newest provider job created for this finetuning, if any."""

    def search() -> FineTuningJob | None:
        found: FineTuningJob | None = None
        page = client.fine_tuning.jobs.list(metadata={METADATA_KEY: finetuning_id}, limit=100)
        for scanned, job in enumerate(page):
            if scanned >= MAX_JOBS_SCANNED:
                break
            if (job.metadata or {}).get(METADATA_KEY) != finetuning_id:
                continue
            if found is None or job.created_at > found.created_at:
                found = job
        return found

    return _call("list its fine-tuning jobs", search)


def _upload(client: openai.OpenAI, content: bytes, config: Config, report: Report) -> str:
    uploaded = _call(
        "accept the training file",
        lambda: client.files.create(
            file=(f"{config.finetuning_id}.jsonl", io.BytesIO(content), "application/jsonl"),
            purpose="fine-tune",
        ),
    )
    report({"provider_file_id": uploaded.id})
    deadline = time.monotonic() + FILE_PROCESSING_TIMEOUT_SECONDS
    current = uploaded
    while current.status not in {"processed", "error"}:
        if time.monotonic() > deadline:
            raise FinetuningError("the provider did not process the training file in time")
        time.sleep(config.poll_interval_seconds)
        current = _call("report on the training file", lambda: client.files.retrieve(uploaded.id))
    if current.status == "error":
        reason = current.status_details or "no reason given"
        raise FinetuningError(f"the provider rejected the training file: {reason}")
    return uploaded.id


def _create_job(client: openai.OpenAI, file_id: str, config: Config) -> FineTuningJob:
    """Create the job; a retry looks for a job a lost answer may have created first."""

    def create() -> FineTuningJob:
        existing = find_job(client, config.finetuning_id)
        if existing is not None:
            return existing
        return client.fine_tuning.jobs.create(
            model=config.model_name,
            training_file=file_id,
            hyperparameters=config.hyperparameters,  # type: ignore[arg-type]
            suffix=_suffix(config.finetuning_id),
            metadata={METADATA_KEY: config.finetuning_id},
        )

    return _call("create the fine-tuning job", create)


def _error_message(job: FineTuningJob) -> str:
    error = job.error
    if error is not None and error.message:
        return error.message
    return f"the provider's job ended {job.status}"


def _follow(
    client: openai.OpenAI, job: FineTuningJob, config: Config, report: Report
) -> FineTuningJob:
    last_status: str | None = None
    seen_events: set[str] = set()
    job_id = job.id
    while True:
        status = job.status if job.status in STATUSES else "running"
        if status != last_status:
            update: dict[str, Any] = {"status": status, "provider_job_id": job.id}
            if job.training_file:
                update["provider_file_id"] = job.training_file
            if status == "succeeded":
                update["model_id"] = job.fine_tuned_model
            if status in {"failed", "cancelled"}:
                update["error"] = (
                    _error_message(job)
                    if status == "failed"
                    else (
                        job.error.message if job.error is not None and job.error.message else None
                    )
                )
            report(update)
            last_status = status
        events = _call(
            "list the job's events",
            lambda: client.fine_tuning.jobs.list_events(job_id, limit=50),
        )
        for event in reversed(events.data):
            if event.id not in seen_events:
                seen_events.add(event.id)
                _say(f"{job.id}: {event.message}")
        if status in TERMINAL:
            return job
        time.sleep(config.poll_interval_seconds)
        job = _call(
            "report on the fine-tuning job", lambda: client.fine_tuning.jobs.retrieve(job_id)
        )


def _evaluate(
    client: openai.OpenAI,
    config: Config,
    schema: DatabaseSchema,
    model_id: str,
    report: Report,
) -> None:
    if not config.eval_records:
        return
    system = evaluation_prompt(config, schema)

    def ask(question: str) -> str:
        reply = _call(
            "answer with the fine-tuned model",
            lambda: client.chat.completions.create(
                model=model_id,
                temperature=0,
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": question},
                ],
            ),
        )
        return sql_from_reply(reply.choices[0].message.content or "")

    cases = [Case(record.question, record.sql_query) for record in config.eval_records]
    try:
        result = evaluate(
            config.connection_uri,
            schema.dialect,
            cases,
            ask,
            row_limit=config.row_limit,
            timeout_seconds=config.eval_timeout_seconds,
        )
    except DatabaseUnreachable as exc:
        report({"metadata": {"evaluation": {"error": f"the database is unreachable: {exc}"}}})
        return
    summary = {key: result[key] for key in ("execution_accuracy", "exact_match", "total")}
    report({"evaluation": result, "metadata": {"evaluation": summary}})


def run(config: Mapping[str, Any], report: Report) -> None:
    """Run one finetuning to its end (see the module docstring)."""
    settings = parse_config(config)
    if not settings.api_key:
        raise FinetuningError(
            "no provider key is configured: set OPENAI_API_KEY (or the finetuning service's "
            "provider api key setting) and start the finetuning again"
        )
    client = openai.OpenAI(
        api_key=settings.api_key, base_url=settings.base_url, max_retries=0, timeout=60.0
    )
    job = find_job(client, settings.finetuning_id)
    schema: DatabaseSchema | None = None
    if job is None:
        if len(settings.train_records) < MIN_EXAMPLES:
            raise FinetuningError(
                f"at least {MIN_EXAMPLES} golden records are required for training, "
                f"found {len(settings.train_records)}"
            )
        try:
            schema = describe_database(settings.connection_uri, settings.schemas)
        except DatabaseUnreachable as exc:
            raise FinetuningError(f"the database cannot be read: {exc}") from exc
        content = build_training_file(settings, schema)
        file_id = _upload(client, content, settings, report)
        job = _create_job(client, file_id, settings)
    else:
        _say(f"resuming the provider job {job.id}")
    # A resumed job is followed even while the database is down; only the evaluation needs it.
    job = _follow(client, job, settings, report)
    if job.status == "succeeded" and job.fine_tuned_model and settings.eval_records:
        if schema is None:
            try:
                schema = describe_database(settings.connection_uri, settings.schemas)
            except DatabaseUnreachable as exc:
                error = f"the database cannot be read: {exc}"
                report({"metadata": {"evaluation": {"error": error}}})
                return
        _evaluate(client, settings, schema, job.fine_tuned_model, report)


__all__ = ["Config", "FinetuningError", "Record", "count_tokens", "parse_config", "run"]
