"""The evaluation runs both queries read-only, with a row limit and a timeout, on real databases."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support import nl2sql
from trainyard.trainers.finetuning.evaluation import Case, evaluate
from trainyard.trainers.finetuning.prompt import _encoder, count_tokens


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    path = tmp_path / "company.db"
    with sqlite3.connect(path) as conn:
        nl2sql.create(conn.execute)
    return f"sqlite:///{path}"


def employees(uri: str) -> int:
    engine = create_engine(uri)
    with engine.connect() as conn:
        count = conn.execute(text("SELECT COUNT(*) FROM employees")).scalar_one()
    engine.dispose()
    return int(count)


def one(
    uri: str,
    dialect: str,
    golden: str,
    generated: str,
    *,
    row_limit: int = 1000,
    timeout_seconds: float = 10.0,
) -> dict[str, object]:
    """Evaluate one case whose model always answers `generated`."""
    return evaluate(
        uri,
        dialect,
        [Case("q", golden)],
        lambda question: generated,
        row_limit=row_limit,
        timeout_seconds=timeout_seconds,
    )


def test_a_write_is_refused_before_it_runs(sqlite_uri: str) -> None:
    result = one(sqlite_uri, "sqlite", "SELECT COUNT(*) FROM employees", "DELETE FROM employees")
    assert result["execution_accuracy"] == 0.0
    failures = result["failures"]
    assert isinstance(failures, list)
    assert failures[0]["error"] == (
        "the generated query failed: only SELECT/WITH queries are allowed, found DELETE"
    )
    assert employees(sqlite_uri) == 6


def test_equal_results_in_any_order_unless_ordered(sqlite_uri: str) -> None:
    unordered = one(
        sqlite_uri,
        "sqlite",
        "SELECT name FROM employees WHERE salary > 100",
        "SELECT name FROM employees WHERE salary > 100 ORDER BY name DESC",
    )
    assert unordered["execution_accuracy"] == 1.0
    assert unordered["exact_match"] == 0.0
    ordered = one(
        sqlite_uri,
        "sqlite",
        "SELECT name FROM employees ORDER BY salary DESC",
        "SELECT name FROM employees ORDER BY salary",
    )
    assert ordered["execution_accuracy"] == 0.0


def test_an_endless_sqlite_query_is_interrupted(sqlite_uri: str) -> None:
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n"
    result = one(sqlite_uri, "sqlite", "SELECT 1", endless, timeout_seconds=0.5)
    failures = result["failures"]
    assert isinstance(failures, list)
    assert failures[0]["error"] == "the generated query failed: interrupted"


def test_the_row_limit_applies(sqlite_uri: str) -> None:
    # Both read only 2 of the 6 rows: equal under the limit, as documented.
    result = one(
        sqlite_uri,
        "sqlite",
        "SELECT id FROM employees ORDER BY id",
        "SELECT id FROM employees WHERE id < 3 ORDER BY id",
        row_limit=2,
    )
    assert result["execution_accuracy"] == 1.0


@pytest.fixture
def pg_uri(postgres_url: str, pg_schema: str) -> str:
    sync = make_url(postgres_url).set(drivername="postgresql+psycopg")
    engine = create_engine(sync)
    with engine.begin() as conn:
        conn.execute(text(f'SET search_path TO "{pg_schema}"'))
        nl2sql.create(lambda sql: conn.execute(text(sql)))
        conn.execute(text("CREATE SEQUENCE counter"))
    engine.dispose()
    return f"{sync.render_as_string(hide_password=False)}?options=-csearch_path%3D{pg_schema}"


def test_postgresql_runs_in_a_read_only_transaction(pg_uri: str) -> None:
    # nextval() writes though it is a SELECT: the read-only transaction refuses it.
    result = one(pg_uri, "postgresql", "SELECT 1", "SELECT nextval('counter')")
    failures = result["failures"]
    assert isinstance(failures, list)
    assert "read-only transaction" in str(failures[0]["error"])


def test_postgresql_statement_timeout(pg_uri: str) -> None:
    result = one(pg_uri, "postgresql", "SELECT 1", "SELECT pg_sleep(30)", timeout_seconds=0.5)
    failures = result["failures"]
    assert isinstance(failures, list)
    assert "statement timeout" in str(failures[0]["error"])


def test_tokens_are_counted_with_the_offline_encoding() -> None:
    assert _encoder() is not None
    assert count_tokens("SELECT name FROM employees") == 4


def test_mariadb_evaluation_runs_read_only(mariadb_url: str) -> None:
    table = f"t{uuid.uuid4().hex[:10]}_items"
    engine = create_engine(mariadb_url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id INTEGER NOT NULL, PRIMARY KEY (id))"))
        conn.execute(text(f"INSERT INTO {table} VALUES (1), (2), (3)"))
    try:
        result = evaluate(
            mariadb_url,
            "mysql",
            [
                Case("how many", f"SELECT COUNT(*) FROM {table}"),
                Case("smallest", f"SELECT MIN(id) FROM {table}"),
            ],
            lambda question: f"SELECT COUNT(id) FROM {table}",
            timeout_seconds=5,
        )
        assert result["execution_accuracy"] == 0.5
        failures = result["failures"]
        assert isinstance(failures, list) and failures[0]["error"] == "the results differ"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()
