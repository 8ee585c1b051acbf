"""Finetunings end to end, through Envoy, with the real workload (a job-runner job of
`python -m trainyard.trainers.finetuning`) and the real openai SDK against the test provider:
SQLite, PostgreSQL and MariaDB connections to `succeeded` with a model and an evaluation on the
user's own database; the provider's failure; no provider key; the service and the workload
killed mid-job, coming back to one provider job."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.finetuning.support import Finetuning, start_finetuning
from tests.support import nl2sql
from tests.support.openai_server import OpenAIServer
from tests.support.wait import eventually

PAIRS = nl2sql.TRAIN + nl2sql.EVAL
# Every question twice: a held-out one was also trained on through its twin, so the test
# provider (which answers a question with the SQL it was trained with) gets it right; unless
# chance held out both twins (see assert_trained_questions_right).
TWICE = nl2sql.TRAIN + nl2sql.TRAIN


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def ft(tmp_path: Path, openai_server: OpenAIServer) -> Iterator[Finetuning]:
    platform = start_finetuning(tmp_path, openai_server)
    try:
        yield platform
    finally:
        platform.close()


def training_lines(ft: Finetuning) -> list[dict[str, Any]]:
    (only,) = ft.provider.files.values()
    return [json.loads(line) for line in only.content.decode().splitlines() if line.strip()]


def assert_trained_and_evaluated(ft: Finetuning, finetuning_id: str) -> dict[str, Any]:
    done = ft.wait_status(finetuning_id)
    assert done["status"] == "succeeded", (done, ft.workload_logs()[-4000:])
    assert done["model_id"] and done["model_id"].startswith("ft:")
    assert done["finetuning_file_id"] in ft.provider.files
    assert done["finetuning_job_id"] in ft.provider.jobs
    assert ft.provider.jobs_created == 1
    evaluation = ft.wait_evaluation(finetuning_id)
    assert evaluation["status"] == "done", evaluation
    assert evaluation["total"] == len(evaluation["held_out"]) == 2
    # The held-out records were never trained on.
    held = set(evaluation["held_out"])
    lines = training_lines(ft)
    assert len(lines) == len(done["golden_records"]) - 2
    assert {m["role"] for m in lines[0]["messages"]} == {"system", "user", "assistant"}
    assert "CREATE TABLE" in lines[0]["messages"][0]["content"]
    kept = [r for r in ft.store_records(finetuning_id) if r["id"] not in held]
    assert [line["messages"][1]["content"] for line in lines] == [r["question"] for r in kept]
    final = ft.get(finetuning_id)
    assert final["metadata"]["evaluation_status"] == "done"
    assert float(final["metadata"]["evaluation_execution_accuracy"]) == pytest.approx(
        evaluation["execution_accuracy"], abs=1e-4
    )
    return evaluation


def assert_trained_questions_right(
    ft: Finetuning, finetuning_id: str, evaluation: dict[str, Any]
) -> None:
    """Of TWICE's records, every held-out question whose twin was trained is answered right;
    when none lost its twin (the held-out records are drawn at random, so both twins of one
    question are held out in about 1 run in 19), the evaluation is perfect."""
    held = set(evaluation["held_out"])
    records = ft.store_records(finetuning_id)
    trained = {r["question"] for r in records if r["id"] not in held}
    asked = [r["question"] for r in records if r["id"] in held]
    failed = {f["question"] for f in evaluation["failures"]}
    assert not failed & trained, evaluation
    assert evaluation["execution_accuracy"] == pytest.approx(
        1 - len(evaluation["failures"]) / evaluation["total"]
    )
    if all(q in trained for q in asked):
        assert evaluation["execution_accuracy"] == 1.0 and evaluation["exact_match"] == 1.0
        assert evaluation["failures"] == []


def test_sqlite_to_succeeded_with_an_evaluation(ft: Finetuning) -> None:
    conn = ft.connection()
    ft.golden_records(conn["id"], TWICE)
    created = ft.start(conn["id"], metadata={"team": "bi"})
    evaluation = assert_trained_and_evaluated(ft, created["id"])
    assert_trained_questions_right(ft, created["id"], evaluation)
    assert ft.get(created["id"])["metadata"]["team"] == "bi"
    # The provider got the hyperparameters, typed, with the defaults.
    (job,) = ft.provider.jobs.values()
    assert (job.hyperparameters["n_epochs"], job.hyperparameters["batch_size"]) == (3, 1)
    sent = [
        r.body
        for r in ft.openai.requests
        if r.method == "POST" and r.path == "/v1/fine_tuning/jobs"
    ]
    assert sent[-1]["hyperparameters"]["learning_rate_multiplier"] == "auto"
    assert job.metadata == {"trainyard_finetuning_id": created["id"]}


def test_a_wrong_answer_is_shown_with_the_sql_that_ran(ft: Finetuning) -> None:
    conn = ft.connection()
    # Questions asked once: a held-out one gets the SQL of the closest trained question.
    ft.golden_records(conn["id"], PAIRS)
    created = ft.start(conn["id"])
    evaluation = assert_trained_and_evaluated(ft, created["id"])
    wrong = evaluation["failures"]
    assert evaluation["execution_accuracy"] == pytest.approx(1 - len(wrong) / 2)
    for failure in wrong:
        assert failure["generated_sql"].upper().startswith("SELECT")
        assert failure["golden_sql"] in [sql for _, sql in PAIRS]


def seed_postgres(postgres_url: str, schema: str) -> None:
    """The test database's tables and rows, in `schema`."""
    engine = create_engine(make_url(postgres_url).set(drivername="postgresql+psycopg"))
    with engine.begin() as db:
        db.execute(text(f'SET search_path TO "{schema}"'))
        nl2sql.create(lambda statement: db.execute(text(statement)))
    engine.dispose()


def in_schema(pairs: list[tuple[str, str]], schema: str) -> list[tuple[str, str]]:
    """The golden SQL with its tables qualified by `schema`."""
    return [
        (q, sql.replace("FROM ", f'FROM "{schema}".').replace("JOIN ", f'JOIN "{schema}".'))
        for q, sql in pairs
    ]


def test_postgresql_to_succeeded(ft: Finetuning, postgres_url: str, pg_schema: str) -> None:
    seed_postgres(postgres_url, pg_schema)
    uri = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = ft.connection(uri, alias="pg", schemas=[pg_schema])
    assert conn["dialect"] == "postgresql" and conn["schemas"] == [pg_schema]
    qualified = in_schema(TWICE, pg_schema)
    ft.golden_records(conn["id"], qualified)
    created = ft.start(conn["id"])
    evaluation = assert_trained_and_evaluated(ft, created["id"])
    assert_trained_questions_right(ft, created["id"], evaluation)
    assert f"{pg_schema}.employees" in training_lines(ft)[0]["messages"][0]["content"]


@pytest.fixture
def mariadb_database(mariadb_url: str) -> Iterator[str]:
    name = f"ft_{uuid.uuid4().hex[:12]}"
    engine = create_engine(mariadb_url)
    with engine.begin() as db:
        db.execute(text(f"CREATE DATABASE {name}"))
    try:
        url = make_url(mariadb_url).set(database=name)
        with create_engine(url).begin() as db:
            nl2sql.create(lambda statement: db.execute(text(statement)))
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as db:
            db.execute(text(f"DROP DATABASE {name}"))
        engine.dispose()


def test_mariadb_schema_reading_and_training(ft: Finetuning, mariadb_database: str) -> None:
    conn = ft.connection(mariadb_database, alias="maria")
    assert conn["dialect"] in ("mysql", "mariadb")
    ft.golden_records(conn["id"], TWICE)
    created = ft.start(conn["id"])
    assert_trained_and_evaluated(ft, created["id"])
    system = training_lines(ft)[0]["messages"][0]["content"]
    assert "CREATE TABLE" in system and "departments" in system


def test_a_provider_failure_surfaces_as_failed_with_its_message(ft: Finetuning) -> None:
    conn = ft.connection()
    ft.golden_records(conn["id"], PAIRS)
    ft.provider.fail_next_job("The job failed due to an invalid training file.")
    created = ft.start(conn["id"])
    done = ft.wait_status(created["id"])
    assert done["status"] == "failed"
    assert done["error"] == "The job failed due to an invalid training file."
    assert done["model_id"] is None
    evaluation = ft.evaluation(created["id"])
    assert evaluation["status"] == "failed" and "ended failed" in evaluation["error"]


def test_without_a_provider_key_the_finetuning_fails_saying_so(
    tmp_path: Path, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    platform = start_finetuning(tmp_path, openai_server, api_key=None)
    try:
        conn = platform.connection()
        platform.golden_records(conn["id"], PAIRS)
        created = platform.start(conn["id"])
        assert created["status"] == "queued"
        done = platform.wait_status(created["id"])
        assert done["status"] == "failed"
        assert "no provider key is configured" in done["error"]
        assert platform.provider.jobs_created == 0
    finally:
        platform.close()


def test_the_service_killed_mid_job_comes_back_to_one_provider_job(ft: Finetuning) -> None:
    ft.provider.step_seconds = 1.0
    conn = ft.connection()
    ft.golden_records(conn["id"], TWICE)
    created = ft.start(conn["id"])
    ft.wait_status(created["id"], ("queued", "running"), timeout=60)
    ft.restart()
    assert_trained_and_evaluated(ft, created["id"])


def _workloads(data: Path) -> list[psutil.Process]:
    """This platform's finetuning workloads: their own interpreters (not the job-runner's shim
    that starts them), working in a job directory under `data`."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = process.info.get("cmdline") or []
        cwd = process.info.get("cwd") or ""
        if cmdline[1:] == ["-m", "trainyard.trainers.finetuning"] and cwd.startswith(str(data)):
            found.append(process)
    return found


def test_a_killed_workload_is_started_again_and_resumes_the_same_job(ft: Finetuning) -> None:
    ft.provider.step_seconds = 1.0
    conn = ft.connection()
    ft.golden_records(conn["id"], TWICE)
    created = ft.start(conn["id"])
    ft.wait_status(created["id"], ("queued", "running"), timeout=60)
    (workload,) = eventually(
        lambda: _workloads(ft.data), timeout=30, message="no finetuning workload runs"
    )
    workload.send_signal(signal.SIGKILL)
    assert_trained_and_evaluated(ft, created["id"])
    view = ft.harness.loop.run(ft.store.finetuning("alice", created["id"]))
    assert view.attempts == 2


def test_the_password_is_in_no_answer_and_no_log(
    ft: Finetuning, postgres_url: str, pg_schema: str, capfd: pytest.CaptureFixture[str]
) -> None:
    seed_postgres(postgres_url, pg_schema)
    secret = "pw-" + uuid.uuid4().hex
    uri = make_url(postgres_url).set(drivername="postgresql", password=secret)
    conn = ft.connection(uri.render_as_string(hide_password=False), alias="pg", schemas=[pg_schema])
    qualified = in_schema(TWICE, pg_schema)
    ft.golden_records(conn["id"], qualified)
    created = ft.start(conn["id"])
    assert_trained_and_evaluated(ft, created["id"])
    answers = [
        ft.call("GET", "/database-connections").text,
        ft.call("GET", f"/database-connections/{conn['id']}").text,
        ft.call("GET", "/finetunings").text,
        ft.call("GET", f"/finetunings/{created['id']}/evaluation").text,
    ]
    assert all(secret not in answer for answer in answers)
    out, err = capfd.readouterr()
    assert secret not in out and secret not in err
    assert secret not in ft.workload_logs()
    # Nor in anything the job-runner stored about the workload.
    assert secret.encode() not in (ft.data / "jr.db").read_bytes()
