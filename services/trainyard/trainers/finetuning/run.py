"""A finetuning from golden records to a fine-tuned model and its evaluation, through any
OpenAI-compatible provider (the official `openai` SDK; its own retries with backoff cover
connection errors, 408/409/429 and 5xx).

`run(config, report)` is the workload's core and knows nothing of the platform: `report` gets
each update (status, provider ids, model id, error, evaluation, metadata) as it happens.
It is idempotent on the finetuning id: the provider job is created with the metadata
`trainyard_finetuning_id`, and a run that finds such a job (a restarted workload) follows it
instead of creating another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import openai

from trainyard.trainers.finetuning.evaluation import evaluate
from trainyard.trainers.finetuning.prompt import (
    PromptError,
    build_example,
    context_window,
    token_counter,
    training_file,
)
from trainyard.trainers.finetuning.schema import DatabaseUnreachable, describe_database

Report = Callable[[Mapping[str, Any]], None]
METADATA_KEY = "trainyard_finetuning_id"
TERMINAL = ("succeeded", "failed", "cancelled")
#: Provider statuses, as the finetuning object shows them.
STATUSES = ("validating_files", "queued", "running", *TERMINAL)
FILE_WAIT_SECONDS = 600.0


class FinetuningError(Exception):
    """A failure the user can act on; its message becomes the finetuning's error."""


def _client(config: Mapping[str, Any]) -> openai.OpenAI:
    provider = config.get("provider") or {}
    key = provider.get("api_key")
    if not key:
        raise FinetuningError(
            "no provider key is configured: the operator sets OPENAI_API_KEY (or "
            "TRAINYARD_FINETUNING_PROVIDER_API_KEY) for the finetuning service"
        )
    return openai.OpenAI(
        api_key=str(key),
        base_url=provider.get("base_url") or None,
        max_retries=int(provider.get("max_retries", 5)),
        timeout=float(provider.get("timeout_seconds", 60.0)),
    )


def _provider_error(exc: openai.APIError) -> FinetuningError:
    message = getattr(exc, "message", None) or str(exc)
    return FinetuningError(f"the provider refused: {message}"[:1000])


def _hyperparameters(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("n_epochs", "batch_size", "learning_rate_multiplier"):
        value = params.get(key)
        if value is not None and value != "":
            out[key] = value
    return out


def _existing_job(client: openai.OpenAI, finetuning_id: str) -> Any | None:
    page = client.fine_tuning.jobs.list(metadata={METADATA_KEY: finetuning_id}, limit=10)
    jobs = [j for j in page.data if (j.metadata or {}).get(METADATA_KEY) == finetuning_id]
    return max(jobs, key=lambda j: j.created_at) if jobs else None


def _start_job(
    client: openai.OpenAI, config: Mapping[str, Any], report: Report, sleep: Callable[[float], None]
) -> Any:
    finetuning_id = str(config["finetuning_id"])
    base = config.get("base_llm") or {}
    model_name = str(base.get("model_name") or "")
    try:
        schema = describe_database(
            str(config["connection_uri"]), config.get("schemas") or None, timeout_seconds=10.0
        )
    except DatabaseUnreachable as exc:
        raise FinetuningError(f"the database cannot be read: {exc}") from exc
    count, how = token_counter()
    window = context_window(model_name)
    try:
        examples = [
            build_example(schema, r, window, count) for r in config.get("train_records") or []
        ]
        body = training_file(examples)
    except PromptError as exc:
        raise FinetuningError(str(exc)) from exc
    report(
        {
            "status": "validating_files",
            "metadata": {
                "training_examples": len(examples),
                "training_tokens": sum(e.tokens for e in examples),
                "token_count": how,
            },
        }
    )
    uploaded = client.files.create(
        file=(f"trainyard-{finetuning_id}.jsonl", body, "application/jsonl"), purpose="fine-tune"
    )
    report({"provider_file_id": uploaded.id})
    deadline = time.monotonic() + FILE_WAIT_SECONDS
    poll = float(config.get("poll_interval_seconds", 5.0))
    while uploaded.status not in ("processed", "error"):
        if time.monotonic() > deadline:
            raise FinetuningError(f"the provider did not process file {uploaded.id} in time")
        sleep(poll)
        uploaded = client.files.retrieve(uploaded.id)
    if uploaded.status == "error":
        raise FinetuningError(
            f"the provider refused the training file: {uploaded.status_details or 'no reason'}"
        )
    hyper = _hyperparameters(base.get("model_parameters") or {})
    return client.fine_tuning.jobs.create(
        model=model_name,
        training_file=uploaded.id,
        hyperparameters=hyper,  # type: ignore[arg-type]
        suffix=f"ty-{finetuning_id[:8]}",
        metadata={METADATA_KEY: finetuning_id},
    )


def _job_update(job: Any) -> dict[str, Any]:
    update: dict[str, Any] = {"status": job.status, "provider_job_id": job.id}
    if job.fine_tuned_model:
        update["model_id"] = job.fine_tuned_model
    if job.status == "failed":
        error = getattr(job, "error", None)
        update["error"] = (getattr(error, "message", None) or "the provider's job failed")[:1000]
    return update


def run(
    config: Mapping[str, Any], report: Report, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Finetune, follow the provider's job to its end, then evaluate the model."""
    client = _client(config)
    finetuning_id = str(config["finetuning_id"])
    poll = float(config.get("poll_interval_seconds", 5.0))
    try:
        job = _existing_job(client, finetuning_id)
        if job is None:
            job = _start_job(client, config, report, sleep)
        last = ""
        while True:
            update = _job_update(job)
            if update["status"] != last:
                report(update)
                last = update["status"]
            if job.status in TERMINAL:
                break
            sleep(poll)
            job = client.fine_tuning.jobs.retrieve(job.id)
    except openai.APIError as exc:
        raise _provider_error(exc) from exc
    if job.status != "succeeded" or not job.fine_tuned_model or not config.get("eval_records"):
        return
    _evaluate(client, config, str(job.fine_tuned_model), report)


def _evaluate(client: openai.OpenAI, config: Mapping[str, Any], model: str, report: Report) -> None:
    uri = str(config["connection_uri"])
    settings = config.get("eval") or {}
    try:
        schema = describe_database(uri, config.get("schemas") or None)
    except DatabaseUnreachable as exc:
        report({"metadata": {"evaluation_error": f"the database cannot be read: {exc}"}})
        return
    count, _how = token_counter()
    window = context_window(str((config.get("base_llm") or {}).get("model_name") or ""))

    def ask(record: Mapping[str, Any]) -> str:
        example = build_example(schema, record, window, count, with_answer=False)
        answer = client.chat.completions.create(
            model=model,
            messages=example.messages,  # type: ignore[arg-type]
            temperature=0,
        )
        return answer.choices[0].message.content or ""

    result = evaluate(
        uri,
        list(config["eval_records"]),
        ask,
        row_limit=int(settings.get("row_limit", 1000)),
        timeout_seconds=float(settings.get("timeout_seconds", 10.0)),
    )
    summary = result.to_json()
    report(
        {
            "evaluation": summary,
            "metadata": {
                "execution_accuracy": summary["execution_accuracy"],
                "exact_match": summary["exact_match"],
                "evaluated_records": summary["total"],
            },
        }
    )
