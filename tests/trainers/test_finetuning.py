"""The finetuning workload's library against real databases (SQLite, PostgreSQL, MariaDB) and
the provider test server, reached by the real `openai` SDK."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from tests.support.openai_finetuning import FineTuningProvider
from tests.support.openai_server import OpenAIServer
from trainyard.trainers.finetuning import (
    DatabaseUnreachable,
    FinetuningError,
    check_read_only,
    describe_database,
    mask_password,
    run,
)
from trainyard.trainers.finetuning.evaluation import clean_answer
from trainyard.trainers.finetuning.prompt import PromptError, build_example, token_counter

MARIADB_URL = os.environ.get("TRAINYARD_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
HYPER = {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": "auto"}

SCHEMA_SQL = [
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(50), country VARCHAR(2))",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),"
    " total NUMERIC(10, 2), status VARCHAR(10))",
    "INSERT INTO customers VALUES (1, 'Ayşe', 'TR'), (2, 'Bob', 'US'), (3, 'Chen', 'CN')",
    "INSERT INTO orders VALUES (1, 1, 10.50, 'paid'), (2, 1, 5.00, 'open'), (3, 2, 99.99, 'paid'),"
    " (4, 3, 1.25, 'open')",
]

QUESTIONS = [
    ("How many customers are there?", "SELECT COUNT(*) FROM customers"),
    ("How many orders are there?", "SELECT COUNT(*) FROM orders"),
    ("List all customer names", "SELECT name FROM customers"),
    ("Which countries do customers come from?", "SELECT DISTINCT country FROM customers"),
    ("What is the total of all orders?", "SELECT SUM(total) FROM orders"),
    ("How many paid orders are there?", "SELECT COUNT(*) FROM orders WHERE status = 'paid'"),
    ("How many open orders are there?", "SELECT COUNT(*) FROM orders WHERE status = 'open'"),
    ("What is the largest order total?", "SELECT MAX(total) FROM orders"),
    ("What is the smallest order total?", "SELECT MIN(total) FROM orders"),
    (
        "How many orders does each customer have?",
        "SELECT c.name, COUNT(o.id) FROM customers c JOIN orders o ON o.customer_id = c.id"
        " GROUP BY c.name",
    ),
    ("Which customers are from Turkey?", "SELECT name FROM customers WHERE country = 'TR'"),
    ("What is the average order total?", "SELECT AVG(total) FROM orders"),
]


def records(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"id": str(n), "question": q, "sql_query": s} for n, (q, s) in enumerate(pairs)]


def make_sqlite(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        for statement in SCHEMA_SQL:
            conn.execute(statement)
    return f"sqlite:///{path}"


@pytest.fixture
def provider() -> Iterator[FineTuningProvider]:
    with OpenAIServer() as server:
        yield FineTuningProvider(server, step_seconds=0.15)


def config_for(
    uri: str, provider: FineTuningProvider, finetuning_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "finetuning_id": finetuning_id or str(uuid.uuid4()),
        "connection_uri": uri,
        "schemas": None,
        "train_records": records(QUESTIONS[:10]),
        "eval_records": records(QUESTIONS[10:]),
        "base_llm": {
            "model_provider": "openai",
            "model_name": "gpt-4o-mini-2024-07-18",
            "model_parameters": {
                "n_epochs": 3,
                "batch_size": 1,
                "learning_rate_multiplier": "auto",
            },
        },
        "provider": {"base_url": provider.server.base_url, "api_key": provider.server.api_key},
        "poll_interval_seconds": 0.05,
        **extra,
    }


def collect(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    updates: list[dict[str, Any]] = []
    run(config, lambda update: updates.append(dict(update)))
    return updates


# ---- SQL checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("SELECT name FROM customers", None),
        ("WITH t AS (SELECT 1 AS x) SELECT x FROM t", None),
        ("SELECT 1 UNION SELECT 2", None),
        ("-- a comment\nSELECT 1 /* more */", None),
        ("INSERT INTO customers VALUES (9, 'x', 'y')", "found INSERT"),
        ("DROP TABLE customers", "found DROP"),
        ("SELECT 1; DROP TABLE customers", "one statement, found 2"),
        ("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", "found DELETE"),
        ("SELECT * INTO copy FROM customers", "found INTO"),
        ("SELECT FROM WHERE", "does not parse"),
        ("   ", "empty"),
    ],
)
def test_only_one_read_only_query_passes(sql: str, problem: str | None) -> None:
    found = check_read_only(sql, "postgresql")
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_answers_lose_their_code_fences() -> None:
    assert clean_answer("```sql\nSELECT 1;\n```") == "SELECT 1"


# ---- schema reading -----------------------------------------------------------------------


def test_sqlite_schema_has_keys_values_and_samples(tmp_path: Path) -> None:
    schema = describe_database(make_sqlite(tmp_path / "shop.db"))
    assert schema.dialect == "sqlite"
    orders = schema.table("orders")
    assert orders is not None
    assert "FOREIGN KEY(customer_id) REFERENCES customers (id)" in orders.create_sql
    assert orders.low_cardinality["status"] == ["open", "paid"]
    assert len(orders.sample_rows) == 3
    customers = schema.table("customers")
    assert customers is not None and ["1", "Ayşe", "TR"] in customers.sample_rows


@pytest.fixture
def pg_tables(postgres_url: str) -> Iterator[str]:
    schema = f"ft_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(sqlalchemy.text(f'SET search_path TO "{schema}"'))
        for statement in SCHEMA_SQL:
            conn.execute(sqlalchemy.text(statement))
    try:
        yield schema
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def test_postgresql_schema_reads_the_named_schema(pg_tables: str) -> None:
    schema = describe_database(PG_URL, [pg_tables])
    assert (schema.dialect, schema.schemas) == ("postgresql", [pg_tables])
    assert sorted(t.name for t in schema.tables) == ["customers", "orders"]
    orders = schema.table("orders")
    assert orders is not None and "REFERENCES" in orders.create_sql


@pytest.fixture
def mariadb_table() -> Iterator[str]:
    name = f"ft_{uuid.uuid4().hex[:12]}"
    try:
        engine = sqlalchemy.create_engine(MARIADB_URL.replace("mysql://", "mysql+pymysql://"))
        with engine.begin() as conn:
            conn.execute(
                sqlalchemy.text(f"CREATE TABLE {name} (id INT PRIMARY KEY, kind VARCHAR(5))")
            )
            conn.execute(sqlalchemy.text(f"INSERT INTO {name} VALUES (1, 'a'), (2, 'b')"))
    except sqlalchemy.exc.OperationalError as exc:
        message = f"MariaDB at {MARIADB_URL} is not reachable ({exc.orig})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP TABLE {name}"))
        engine.dispose()


def test_mariadb_schema(mariadb_table: str) -> None:
    schema = describe_database(MARIADB_URL)
    assert schema.dialect == "mysql"
    table = schema.table(mariadb_table)
    assert table is not None and table.low_cardinality["kind"] == ["a", "b"]


def test_an_unreachable_database_says_why_without_the_password() -> None:
    uri = "postgresql://postgres:s3cret-pw@127.0.0.1:5432/no_such_database_here"
    with pytest.raises(DatabaseUnreachable) as caught:
        describe_database(uri, timeout_seconds=3)
    assert "no_such_database_here" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    assert mask_password(uri) == "postgresql://postgres:***@127.0.0.1:5432/no_such_database_here"
    with pytest.raises(DatabaseUnreachable, match="unsupported dialect 'oracle'"):
        describe_database("oracle://scott:tiger@db/orcl")


def test_a_record_that_cannot_fit_the_window_is_named(tmp_path: Path) -> None:
    schema = describe_database(make_sqlite(tmp_path / "shop.db"))
    count, _how = token_counter()
    record = {"id": "rec-7", "question": "q", "sql_query": "SELECT * FROM orders"}
    with pytest.raises(PromptError, match="golden record rec-7 cannot fit"):
        build_example(schema, record, 600, count)
    example = build_example(schema, record, 8192, count)
    assert "CREATE TABLE orders" in example.messages[0]["content"]


# ---- the provider flow ---------------------------------------------------------------------


def test_sqlite_finetuning_reaches_succeeded_and_is_evaluated(
    tmp_path: Path, provider: FineTuningProvider
) -> None:
    config = config_for(make_sqlite(tmp_path / "shop.db"), provider)
    updates = collect(config)
    statuses = [u["status"] for u in updates if "status" in u]
    assert statuses == ["validating_files", "validating_files", "queued", "running", "succeeded"]
    [done] = [u for u in updates if u.get("status") == "succeeded"]
    assert done["model_id"].startswith("ft:gpt-4o-mini-2024-07-18:")
    [evaluated] = [u for u in updates if "evaluation" in u]
    evaluation = evaluated["evaluation"]
    assert evaluation["total"] == 2
    assert 0.0 <= evaluation["execution_accuracy"] <= 1.0
    assert len(evaluation["failures"]) == 2 - round(evaluation["execution_accuracy"] * 2)
    assert provider.jobs_created == 1
    [job] = provider.jobs.values()
    assert job.hyperparameters == {
        "n_epochs": 3,
        "batch_size": 1,
        "learning_rate_multiplier": "auto",
    }
    assert len(job.examples) == 10, "held-out records are never trained on"


def test_a_restarted_run_follows_the_same_provider_job(
    tmp_path: Path, provider: FineTuningProvider
) -> None:
    config = config_for(make_sqlite(tmp_path / "shop.db"), provider)
    collect(config)
    again = collect(config)
    assert provider.jobs_created == 1
    assert [u["status"] for u in again if "status" in u] == ["succeeded"]


def test_a_provider_failure_is_reported_with_its_message(
    tmp_path: Path, provider: FineTuningProvider
) -> None:
    provider.fail_next("The job failed due to an invalid training file.")
    updates = collect(config_for(make_sqlite(tmp_path / "shop.db"), provider))
    [failed] = [u for u in updates if u.get("status") == "failed"]
    assert failed["error"] == "The job failed due to an invalid training file."
    assert not any("evaluation" in u for u in updates)


def test_too_few_records_and_no_key_fail_clearly(
    tmp_path: Path, provider: FineTuningProvider
) -> None:
    uri = make_sqlite(tmp_path / "shop.db")
    with pytest.raises(FinetuningError, match="at least 10 training examples, got 3"):
        collect(config_for(uri, provider, train_records=records(QUESTIONS[:3])))
    no_key = config_for(uri, provider)
    no_key["provider"] = {"base_url": provider.server.base_url, "api_key": None}
    with pytest.raises(FinetuningError, match="no provider key is configured"):
        collect(no_key)
    assert provider.jobs_created == 0


def test_postgresql_finetuning_end_to_end(pg_tables: str, provider: FineTuningProvider) -> None:
    # The user's queries name their tables unqualified: the URI sets the search path.
    uri = f"{PG_URL}?options=-csearch_path%3D{pg_tables}"
    updates = collect(config_for(uri, provider, schemas=[pg_tables]))
    assert [u["status"] for u in updates if "status" in u][-1] == "succeeded"
    [evaluated] = [u for u in updates if "evaluation" in u]
    failures = evaluated["evaluation"]["failures"]
    assert all(f["error"] == "the results differ" for f in failures), failures
