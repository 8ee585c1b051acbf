"""check_read_only, normalise and tables_read (sqlglot)."""

from __future__ import annotations

import pytest

from trainyard.trainers.finetuning import check_read_only, normalise, tables_read


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "select name from employees where title = 'manager';",
        "WITH big AS (SELECT * FROM projects WHERE budget > 100) SELECT name FROM big",
        "SELECT name FROM a UNION SELECT name FROM b",
        "SELECT 1 -- ; DROP TABLE employees",
        "SELECT '; DROP TABLE employees' AS text",
        "(SELECT 1)",
    ],
)
@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_read_only_queries_pass(sql: str, dialect: str) -> None:
    assert check_read_only(sql, dialect) is None


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("INSERT INTO t VALUES (1)", "only SELECT/WITH queries are allowed, found INSERT"),
        ("DROP TABLE employees", "only SELECT/WITH queries are allowed, found DROP"),
        ("/* harmless */ DELETE FROM t", "only SELECT/WITH queries are allowed, found DELETE"),
        ("UPDATE t SET a = 1", "only SELECT/WITH queries are allowed, found UPDATE"),
        ("SELECT 1; DROP TABLE employees", "only a single statement is allowed, found 2"),
        ("SELECT 1 /* ; */; DELETE FROM t", "only a single statement is allowed, found 2"),
        (
            "WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone",
            "only SELECT/WITH queries are allowed, found DELETE",
        ),
        ("SELECT * INTO copy FROM t", "found SELECT INTO"),
        ("SELECT * FROM t FOR UPDATE", "found a locking clause"),
        ("GRANT ALL ON t TO someone", "found GRANT"),
        ("CREATE TABLE x (a INT)", "found CREATE"),
        ("SELEC name FROM t", "does not parse"),
        ("SELECT (1", "does not parse"),
        ("   ", "the query is empty"),
        ("-- only a comment", "the query is empty"),
    ],
)
def test_writes_and_tricks_are_refused(sql: str, problem: str) -> None:
    found = check_read_only(sql, "postgresql")
    assert found is not None and problem in found


def test_normalise_ignores_case_spacing_and_semicolon() -> None:
    a = normalise("select  Name from EMPLOYEES\n where salary>100;", "sqlite")
    b = normalise("SELECT name FROM employees WHERE salary > 100", "sqlite")
    assert a == b
    assert normalise("SELECT a FROM t", "sqlite") != normalise("SELECT b FROM t", "sqlite")


def test_tables_read() -> None:
    sql = (
        "WITH top AS (SELECT * FROM hr.Employees) SELECT * FROM top "
        "JOIN departments d ON d.id = top.department_id"
    )
    assert tables_read(sql, "postgresql") == {"hr.employees", "departments"}
    assert tables_read("not sql at all (", "postgresql") == set()
