"""run() end to end: the real openai SDK against the test provider, real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support import nl2sql
from tests.support.openai_finetuning import FineTuningProvider
from tests.support.openai_server import ApiError, OpenAIServer
from trainyard.trainers.finetuning import FinetuningError, run

MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def provider() -> Iterator[FineTuningProvider]:
    with OpenAIServer() as server:
        yield FineTuningProvider.register(server, step_seconds=0.05, file_processing_seconds=0.05)


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    path = tmp_path / "company.db"
    with sqlite3.connect(path) as conn:
        nl2sql.create(conn.execute)
    return f"sqlite:///{path}"


def config(fake: FineTuningProvider, uri: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "finetuning_id": "ft-0001",
        "connection_uri": uri,
        "schemas": None,
        "train_records": nl2sql.records(nl2sql.TRAIN, "train"),
        "eval_records": nl2sql.records(nl2sql.EVAL, "eval"),
        "base_llm": {
            "model_provider": "openai",
            "model_name": MODEL,
            "model_parameters": {
                "n_epochs": 2,
                "batch_size": 1,
                "learning_rate_multiplier": "auto",
            },
        },
        "provider": {"base_url": fake.server.base_url, "api_key": fake.server.api_key},
        "poll_interval_seconds": 0.02,
        "eval": {"row_limit": 100, "timeout_seconds": 5},
    }
    base.update(overrides)
    return base


def ignore(update: Mapping[str, Any]) -> None:
    """A report callback that keeps nothing."""


def merged(reports: list[Mapping[str, Any]]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for update in reports:
        state.update(update)
    return state


def statuses(reports: list[Mapping[str, Any]]) -> list[str]:
    return [str(update["status"]) for update in reports if "status" in update]


ORDER = ["validating_files", "queued", "running", "succeeded"]


def assert_in_order(seen: list[str], last: str) -> None:
    """Each status reported once, in the provider's order (a loaded machine may skip some)."""
    assert seen[-1] == last
    assert seen == sorted(set(seen), key=[*ORDER, "failed", "cancelled"].index)


def assert_succeeded_with_evaluation(provider: FineTuningProvider, reports: list[Any]) -> None:
    assert_in_order(statuses(reports), "succeeded")
    state = merged(reports)
    job = next(iter(provider.jobs.values()))
    assert provider.jobs_created == 1
    assert state["provider_job_id"] == job.id
    assert state["provider_file_id"] == job.training_file
    assert state["model_id"] == f"ft:{MODEL}:org-trainyard-test:ty-ft-0001:{job.id.split('-')[-1]}"
    assert job.metadata == {"trainyard_finetuning_id": "ft-0001"}
    assert job.hyperparameters == {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 1.8}
    # The exact training question is answered right; the unseen one gets the closest question's
    # SQL (MAX instead of MIN), whose result differs.
    evaluation = state["evaluation"]
    assert evaluation["total"] == 2
    assert evaluation["execution_accuracy"] == 0.5
    assert evaluation["exact_match"] == 0.5
    assert evaluation["failures"] == [
        {
            "question": "What is the lowest salary?",
            "golden_sql": "SELECT MIN(salary) FROM employees",
            "generated_sql": "SELECT MAX(salary) FROM employees",
            "error": "the results differ",
        }
    ]
    assert state["metadata"] == {
        "evaluation": {"execution_accuracy": 0.5, "exact_match": 0.5, "total": 2}
    }


def test_sqlite_end_to_end(provider: FineTuningProvider, sqlite_uri: str) -> None:
    reports: list[Mapping[str, Any]] = []
    run(config(provider, sqlite_uri), reports.append)
    assert_succeeded_with_evaluation(provider, reports)
    # The training file: one example per train record, the schema as the system prompt.
    file = provider.files[merged(reports)["provider_file_id"]]
    lines = [json.loads(line) for line in file.content.decode().splitlines()]
    assert len(lines) == len(nl2sql.TRAIN)
    for line, (question, sql) in zip(lines, nl2sql.TRAIN, strict=True):
        system, user, assistant = line["messages"]
        assert system["role"] == "system" and "CREATE TABLE employees" in system["content"]
        assert "departments.region is one of: north, south" in system["content"]
        assert user == {"role": "user", "content": question}
        assert assistant == {"role": "assistant", "content": sql}


@pytest.fixture
def pg_uri(postgres_url: str, pg_schema: str) -> str:
    sync = make_url(postgres_url).set(drivername="postgresql+psycopg")
    engine = create_engine(sync)
    with engine.begin() as conn:
        conn.execute(text(f'SET search_path TO "{pg_schema}"'))
        nl2sql.create(lambda sql: conn.execute(text(sql)))
    engine.dispose()
    # The user's URI sets the search path, so the golden SQL's unqualified names resolve.
    options = quote(f"-csearch_path={pg_schema}")
    return f"{sync.render_as_string(hide_password=False)}?options={options}"


def test_postgresql_end_to_end(provider: FineTuningProvider, pg_uri: str, pg_schema: str) -> None:
    reports: list[Mapping[str, Any]] = []
    run(config(provider, pg_uri, schemas=[pg_schema]), reports.append)
    assert_succeeded_with_evaluation(provider, reports)
    file = provider.files[merged(reports)["provider_file_id"]]
    assert f"CREATE TABLE {pg_schema}.employees" in file.content.decode()


def test_a_failed_job_reports_the_providers_message(
    provider: FineTuningProvider, sqlite_uri: str
) -> None:
    provider.fail_next_job("Training file has examples too short to learn from.")
    reports: list[Mapping[str, Any]] = []
    run(config(provider, sqlite_uri), reports.append)
    assert_in_order(statuses(reports), "failed")
    state = merged(reports)
    assert state["error"] == "Training file has examples too short to learn from."
    assert "model_id" not in state and "evaluation" not in state


class Crash(Exception):
    pass


def test_a_restarted_run_resumes_the_same_job(
    provider: FineTuningProvider, sqlite_uri: str
) -> None:
    def crash_once_the_job_exists(update: Mapping[str, Any]) -> None:
        first.append(update)
        if "provider_job_id" in update:
            raise Crash  # the workload dies once the job exists

    first: list[Mapping[str, Any]] = []
    with pytest.raises(Crash):
        run(config(provider, sqlite_uri), crash_once_the_job_exists)
    assert provider.jobs_created == 1
    second: list[Mapping[str, Any]] = []
    run(config(provider, sqlite_uri), second.append)
    assert provider.jobs_created == 1
    assert len(provider.files) == 1
    assert merged(second)["provider_job_id"] == merged(first)["provider_job_id"]
    assert statuses(second)[-1] == "succeeded"
    # A third run of a finished finetuning creates nothing either.
    run(config(provider, sqlite_uri), ignore)
    assert provider.jobs_created == 1


def test_no_provider_key(provider: FineTuningProvider, sqlite_uri: str) -> None:
    with pytest.raises(FinetuningError, match="no provider key is configured"):
        run(config(provider, sqlite_uri, provider={"base_url": None, "api_key": None}), ignore)
    assert provider.jobs_created == 0


def test_a_record_that_cannot_fit_is_named(provider: FineTuningProvider, sqlite_uri: str) -> None:
    with pytest.raises(FinetuningError, match="golden record train-0 cannot fit"):
        run(config(provider, sqlite_uri, context_window_tokens=60), ignore)
    assert provider.files == {} and provider.jobs_created == 0


def test_fewer_than_ten_records(provider: FineTuningProvider, sqlite_uri: str) -> None:
    records = nl2sql.records(nl2sql.TRAIN[:9], "train")
    with pytest.raises(FinetuningError, match="at least 10 golden records"):
        run(config(provider, sqlite_uri, train_records=records), ignore)


def test_an_unreachable_database(provider: FineTuningProvider, tmp_path: Path) -> None:
    with pytest.raises(FinetuningError, match="the database cannot be read"):
        run(config(provider, f"sqlite:///{tmp_path / 'gone.db'}"), ignore)


def test_a_wrong_key_is_the_providers_refusal(
    provider: FineTuningProvider, sqlite_uri: str
) -> None:
    bad = {"base_url": provider.server.base_url, "api_key": "sk-wrong"}
    with pytest.raises(FinetuningError, match="Incorrect API key provided"):
        run(config(provider, sqlite_uri, provider=bad), ignore)


def test_transient_errors_are_retried_and_a_lost_answer_creates_no_second_job(
    provider: FineTuningProvider, sqlite_uri: str
) -> None:
    server = provider.server
    server.fail_next("POST", r"^/v1/files$", ApiError(503, "overloaded", "server_error"))
    # The job is created but its answer is lost: the retry must find it, not create another.
    server.fail_next(
        "POST",
        r"^/v1/fine_tuning/jobs$",
        ApiError(500, "oops", "server_error"),
        after_handling=True,
    )
    events = r"^/v1/fine_tuning/jobs/[^/]+/events$"
    server.fail_next("GET", events, ApiError(429, "slow down"), times=2)
    reports: list[Mapping[str, Any]] = []
    run(config(provider, sqlite_uri), reports.append)
    assert statuses(reports)[-1] == "succeeded"
    assert provider.jobs_created == 1
    assert len(provider.files) == 1
    assert server.faults == []


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"n_epochs": 0}, "model_parameters.n_epochs must be a positive integer"),
        ({"batch_size": 1.5}, "model_parameters.batch_size must be a positive integer"),
        (
            {"learning_rate_multiplier": "fast"},
            "learning_rate_multiplier must be a positive number",
        ),
    ],
)
def test_bad_hyperparameters(
    provider: FineTuningProvider, sqlite_uri: str, parameters: dict[str, Any], message: str
) -> None:
    base = {"model_provider": "openai", "model_name": MODEL, "model_parameters": parameters}
    with pytest.raises(FinetuningError, match=message):
        run(config(provider, sqlite_uri, base_llm=base), ignore)
    assert provider.jobs_created == 0


def test_a_resumed_job_is_followed_while_the_database_is_down(
    provider: FineTuningProvider, sqlite_uri: str
) -> None:
    with pytest.raises(Crash):
        run(config(provider, sqlite_uri), crash_once_the_job_exists)
    Path(sqlite_uri.removeprefix("sqlite:///")).unlink()
    reports: list[Mapping[str, Any]] = []
    run(config(provider, sqlite_uri), reports.append)
    state = merged(reports)
    assert statuses(reports)[-1] == "succeeded" and state["model_id"]
    assert "the database cannot be read" in state["metadata"]["evaluation"]["error"]
    assert provider.jobs_created == 1


def crash_once_the_job_exists(update: Mapping[str, Any]) -> None:
    if "provider_job_id" in update:
        raise Crash
