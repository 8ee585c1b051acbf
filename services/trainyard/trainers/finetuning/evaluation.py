"""Evaluate a fine-tuned model on the user's own database.

Each held-out record's question is asked to the model; its SQL and the golden SQL are both run
read-only (`check_read_only` first, then a read-only transaction or a read-only sqlite file, a
row limit and a statement timeout) and their results compared: execution accuracy counts equal
result sets (as multisets of rows, or as lists when the golden query has an ORDER BY), exact
match counts equal `normalise`d texts.
"""

from __future__ import annotations

import datetime
import decimal
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlglot import exp

from trainyard.trainers.finetuning.schema import (
    DatabaseUnreachable,
    _reason,
    open_engine,
    read_only_session,
)
from trainyard.trainers.finetuning.sql import check_read_only, normalise, sqlglot_dialect

# At most this many failing examples are kept in the report.
MAX_FAILURES = 50


class QueryFailed(Exception):
    """A query was refused or failed on the database; the message says why."""


@dataclass(frozen=True)
class Result:
    rows: list[tuple[Any, ...]]
    truncated: bool


def _value(value: Any) -> Any:
    if isinstance(value, decimal.Decimal | float):
        number = float(value)
        if math.isnan(number):
            return "NaN"
        return round(number, 6) if not number.is_integer() else int(number)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return value


def run_query(
    conn: Connection, sql: str, dialect: str, *, row_limit: int, timeout_seconds: float
) -> Result:
    problem = check_read_only(sql, dialect)
    if problem is not None:
        raise QueryFailed(problem)
    try:
        with read_only_session(conn, timeout_seconds):
            result = conn.exec_driver_sql(sql.strip().rstrip(";"))
            rows = result.fetchmany(row_limit + 1)
            result.close()
    except SQLAlchemyError as exc:
        conn.rollback()
        raise QueryFailed(_reason(exc, conn.engine.url)) from exc
    values = [tuple(_value(value) for value in row) for row in rows[:row_limit]]
    return Result(rows=values, truncated=len(rows) > row_limit)


def _ordered(sql: str, dialect: str) -> bool:
    try:
        statement = sqlglot.parse_one(sql, read=sqlglot_dialect(dialect))
    except sqlglot.errors.SqlglotError:
        return False
    return statement.args.get("order") is not None or isinstance(statement, exp.Order)


def same_results(golden: Result, generated: Result, ordered: bool) -> bool:
    if ordered:
        return golden.rows == generated.rows
    return Counter(map(repr, golden.rows)) == Counter(map(repr, generated.rows))


@dataclass(frozen=True)
class Case:
    question: str
    golden_sql: str


def evaluate(
    connection_uri: str,
    dialect: str,
    cases: Sequence[Case],
    ask: Callable[[str], str],
    *,
    row_limit: int = 1000,
    timeout_seconds: float = 10.0,
) -> dict[str, Any]:
    """The `evaluation` report: execution_accuracy, exact_match, total, failures."""
    failures: list[dict[str, Any]] = []
    correct = exact = 0
    with open_engine(connection_uri, timeout_seconds=timeout_seconds, read_only=True) as engine:
        try:
            conn_cm = engine.connect()
            conn = conn_cm.__enter__()
        except SQLAlchemyError as exc:
            raise DatabaseUnreachable(_reason(exc, engine.url)) from exc
        try:
            for case in cases:
                generated = ""
                error: str | None = None
                try:
                    generated = ask(case.question)
                    if normalise(generated, dialect) == normalise(case.golden_sql, dialect):
                        exact += 1
                    try:
                        golden = run_query(
                            conn,
                            case.golden_sql,
                            dialect,
                            row_limit=row_limit,
                            timeout_seconds=timeout_seconds,
                        )
                    except QueryFailed as exc:
                        raise QueryFailed(f"the golden query failed: {exc}") from exc
                    try:
                        answer = run_query(
                            conn,
                            generated,
                            dialect,
                            row_limit=row_limit,
                            timeout_seconds=timeout_seconds,
                        )
                    except QueryFailed as exc:
                        raise QueryFailed(f"the generated query failed: {exc}") from exc
                    if same_results(golden, answer, _ordered(case.golden_sql, dialect)):
                        correct += 1
                        continue
                    error = "the results differ"
                except QueryFailed as exc:
                    error = str(exc)
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                if len(failures) < MAX_FAILURES:
                    failures.append(
                        {
                            "question": case.question,
                            "golden_sql": case.golden_sql,
                            "generated_sql": generated,
                            "error": error,
                        }
                    )
        finally:
            conn_cm.__exit__(None, None, None)
    total = len(cases)
    return {
        "execution_accuracy": correct / total if total else 0.0,
        "exact_match": exact / total if total else 0.0,
        "total": total,
        "failures": failures,
    }
