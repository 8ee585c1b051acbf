"""The test provider (tests/support/openai_finetuning.py) as the real SDK sees it: it must check
what the real provider checks, or the workload's tests would prove nothing."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support import nl2sql
from tests.support.openai_finetuning import FineTuningProvider
from tests.support.openai_server import OpenAIServer
from tests.support.wait import eventually
from trainyard.trainers.finetuning import run


@pytest.fixture
def provider() -> Iterator[FineTuningProvider]:
    with OpenAIServer() as server:
        yield FineTuningProvider.register(server, step_seconds=0.05, file_processing_seconds=0.05)


@pytest.fixture
def client(provider: FineTuningProvider) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=provider.server.base_url, api_key=provider.server.api_key, max_retries=0
    )


def jsonl(examples: list[Any]) -> io.BytesIO:
    return io.BytesIO("\n".join(json.dumps(example) for example in examples).encode())


def example(question: str, sql: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "schema"},
            {"role": "user", "content": question},
            {"role": "assistant", "content": sql},
        ]
    }


GOOD = [example(question, sql) for question, sql in nl2sql.TRAIN]


def processed(client: openai.OpenAI, file_id: str) -> str:
    def done() -> str | None:
        status = client.files.retrieve(file_id).status
        return None if status == "uploaded" else str(status)

    return eventually(done, message=f"file {file_id} processed")


@pytest.mark.parametrize(
    ("examples", "details"),
    [
        (GOOD[:9], "must have at least 10 examples"),
        ([*GOOD[:9], {"messages": [{"role": "robot", "content": "x"}]}], "role must be one of"),
        ([*GOOD[:9], {"messages": [{"role": "user", "content": 3}]}], "content must be a"),
        ([*GOOD[:9], {"prompt": "x"}], '"messages": missing'),
        (
            [*GOOD[:9], example("q", "a") | {"messages": [{"role": "user", "content": "q"}]}],
            "no assistant message",
        ),
    ],
)
def test_invalid_files_end_in_error(
    client: openai.OpenAI, examples: list[Any], details: str
) -> None:
    uploaded = client.files.create(file=("t.jsonl", jsonl(examples)), purpose="fine-tune")
    assert uploaded.status == "uploaded"
    assert processed(client, uploaded.id) == "error"
    assert details in str(client.files.retrieve(uploaded.id).status_details)


def test_a_job_needs_a_processed_file_and_a_known_model(
    client: openai.OpenAI, provider: FineTuningProvider
) -> None:
    provider.file_processing_seconds = 3600
    waiting = client.files.create(file=("t.jsonl", jsonl(GOOD)), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match="is not ready"):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=waiting.id)
    provider.file_processing_seconds = 0
    with pytest.raises(openai.BadRequestError, match="not available for fine-tuning"):
        client.fine_tuning.jobs.create(model="llama-nope", training_file=waiting.id)
    assert provider.jobs_created == 0


def test_jobs_listed_by_metadata_cancelled_and_their_events(
    client: openai.OpenAI, provider: FineTuningProvider
) -> None:
    provider.step_seconds = 3600  # stays validating_files until cancelled
    provider.file_processing_seconds = 0
    file = client.files.create(file=("t.jsonl", jsonl(GOOD)), purpose="fine-tune")
    ids = [
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=file.id, metadata={"owner": owner}
        ).id
        for owner in ("a", "b", "a")
    ]
    listed = client.fine_tuning.jobs.list(metadata={"owner": "a"})
    assert [job.id for job in listed] == [ids[2], ids[0]]
    first = client.fine_tuning.jobs.list(limit=1)
    assert [job.id for job in first.data] == [ids[2]] and first.has_more
    cancelled = client.fine_tuning.jobs.cancel(ids[1])
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="already completed"):
        client.fine_tuning.jobs.cancel(ids[1])
    events = client.fine_tuning.jobs.list_events(ids[1])
    assert [event.message for event in events.data] == [
        "The job was cancelled",
        f"Validating training file: {file.id}",
    ]


def test_a_job_cancelled_while_followed_is_reported_cancelled(
    client: openai.OpenAI, provider: FineTuningProvider, tmp_path: Path
) -> None:
    path = tmp_path / "company.db"
    with sqlite3.connect(path) as conn:
        nl2sql.create(conn.execute)
    provider.step_seconds = 3600
    reports: list[Any] = []

    def report(update: Any) -> None:
        reports.append(update)
        if "provider_job_id" in update and len(reports) < 3:
            client.fine_tuning.jobs.cancel(update["provider_job_id"])

    run(
        {
            "finetuning_id": "ft-cancel",
            "connection_uri": f"sqlite:///{path}",
            "schemas": None,
            "train_records": nl2sql.records(nl2sql.TRAIN, "train"),
            "eval_records": [],
            "base_llm": {"model_provider": "openai", "model_name": "gpt-4o-mini"},
            "provider": {"base_url": provider.server.base_url, "api_key": provider.server.api_key},
            "poll_interval_seconds": 0.02,
        },
        report,
    )
    assert [u["status"] for u in reports if "status" in u] == ["validating_files", "cancelled"]


def test_fine_tuned_models_answer_from_their_training_file(
    client: openai.OpenAI, provider: FineTuningProvider
) -> None:
    provider.step_seconds = 0
    provider.file_processing_seconds = 0
    file = client.files.create(file=("t.jsonl", jsonl(GOOD)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id, suffix="s")
    model = client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model
    assert model == f"ft:gpt-4o-mini:org-trainyard-test:s:{job.id.split('-')[-1]}"

    def ask(question: str, model: str = str(model)) -> str:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}]
        )
        return str(reply.choices[0].message.content)

    assert ask("How many managers are there?") == nl2sql.TRAIN[4][1]
    assert ask("how many managers exist") == nl2sql.TRAIN[4][1]
    assert ask("hello", model="gpt-4o-mini") == "ok"
