"""How good a fine-tuned model is on the user's own database.

Held-out golden records are asked to the model; the SQL it writes and the golden SQL are both
run read-only (SQLite `PRAGMA query_only`, PostgreSQL and MySQL/MariaDB read-only transactions,
each statement bounded by `timeout_seconds`), at most `row_limit` rows read of each. A record
counts for execution accuracy when both results hold the same rows (as multisets; in order when
the golden query has an ORDER BY), and for exact match when both queries are equal after sqlglot
normalisation. Generated SQL that is not one read-only query is never run.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from trainyard.trainers.finetuning.schema import connection, database_url
from trainyard.trainers.finetuning.sql import check_read_only, normalise, sqlglot_dialect

MAX_FAILURES_SHOWN = 20
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


@dataclass
class Evaluation:
    total: int = 0
    execution_matches: int = 0
    exact_matches: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "execution_accuracy": self.execution_matches / self.total if self.total else None,
            "exact_match": self.exact_matches / self.total if self.total else None,
            "failures": self.failures[:MAX_FAILURES_SHOWN],
        }


def clean_answer(answer: str) -> str:
    """The SQL of a model's answer: code fences and a trailing semicolon dropped."""
    return _FENCE.sub("", answer.strip()).strip().rstrip(";").strip()


def session_read_only(conn: Connection, dialect: str, timeout_seconds: float) -> None:
    """Make every later transaction of a MySQL/MariaDB session read-only and time-bounded
    (SQLite and PostgreSQL are set per transaction in `_read_only`)."""
    if dialect not in ("mysql", "mariadb"):
        return
    conn.execute(text("SET SESSION TRANSACTION READ ONLY"))
    try:  # MariaDB: seconds
        conn.execute(text(f"SET SESSION max_statement_time = {timeout_seconds:.3f}"))
    except SQLAlchemyError:  # MySQL: milliseconds, SELECTs only
        conn.rollback()
        conn.execute(text("SET SESSION TRANSACTION READ ONLY"))
        conn.execute(text(f"SET SESSION max_execution_time = {int(timeout_seconds * 1000)}"))
    conn.commit()


def _read_only(conn: Connection, dialect: str, timeout_seconds: float) -> None:
    millis = max(1, int(timeout_seconds * 1000))
    if dialect == "sqlite":
        conn.execute(text("PRAGMA query_only = ON"))
    elif dialect == "postgresql":
        conn.execute(text("SET TRANSACTION READ ONLY"))
        conn.execute(text(f"SET LOCAL statement_timeout = {millis}"))


def run_query(
    conn: Connection, sql: str, dialect: str, row_limit: int, timeout_seconds: float
) -> list[tuple[Any, ...]]:
    """At most `row_limit` rows of one read-only query, in a read-only transaction."""
    problem = check_read_only(sql, dialect)
    if problem is not None:
        raise ValueError(problem)
    with conn.begin():
        _read_only(conn, dialect, timeout_seconds)
        result = conn.execute(text(sql))
        rows = [tuple(row) for row in result.fetchmany(row_limit)]
        result.close()
    return rows


def _ordered(sql: str, dialect: str) -> bool:
    try:
        tree = sqlglot.parse_one(sql, read=sqlglot_dialect(dialect))
    except sqlglot.errors.SqlglotError:
        return False
    return tree.args.get("order") is not None


def _same(golden: list[tuple[Any, ...]], generated: list[tuple[Any, ...]], ordered: bool) -> bool:
    norm = [tuple(str(v) for v in row) for row in golden]
    other = [tuple(str(v) for v in row) for row in generated]
    return norm == other if ordered else Counter(norm) == Counter(other)


def evaluate(
    connection_uri: str,
    records: Sequence[Mapping[str, Any]],
    ask: Callable[[Mapping[str, Any]], str],
    *,
    row_limit: int = 1000,
    timeout_seconds: float = 10.0,
) -> Evaluation:
    """Ask each record's question (`ask` returns the model's answer) and compare results."""
    dialect = database_url(connection_uri).get_backend_name()
    out = Evaluation(total=len(records))
    with connection(connection_uri, timeout_seconds) as conn:
        session_read_only(conn, dialect, timeout_seconds)
        for record in records:
            golden_sql = str(record["sql_query"])
            failure: dict[str, Any] = {
                "question": str(record["question"]),
                "golden_sql": golden_sql,
                "generated_sql": None,
                "error": None,
            }
            try:
                generated = clean_answer(ask(record))
            except Exception as exc:  # the provider refused one question: that one fails
                failure["error"] = f"the model gave no answer: {exc}"[:500]
                out.failures.append(failure)
                continue
            failure["generated_sql"] = generated
            if normalise(generated, dialect) == normalise(golden_sql, dialect):
                out.exact_matches += 1
            try:
                golden_rows = run_query(conn, golden_sql, dialect, row_limit, timeout_seconds)
                generated_rows = run_query(conn, generated, dialect, row_limit, timeout_seconds)
            except (ValueError, SQLAlchemyError) as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                failure["error"] = (reason[0] if reason else type(exc).__name__)[:500]
                out.failures.append(failure)
                continue
            if _same(golden_rows, generated_rows, _ordered(golden_sql, dialect)):
                out.execution_matches += 1
            else:
                failure["error"] = "the results differ"
                out.failures.append(failure)
    return out
