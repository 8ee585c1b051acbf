"""SQL checks for golden records and generated queries, with sqlglot in the connection's dialect.

`check_read_only` accepts one read-only statement (SELECT, a set operation of SELECTs, or WITH
... SELECT) and nothing that writes, creates or changes state anywhere in its tree (a data-
modifying CTE, SELECT ... INTO, a command sqlglot cannot parse into a query). It is a first
gate with a clear message; queries are also run in read-only transactions (evaluation.py), so a
function with side effects that parses as a SELECT still cannot write.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

#: SQLAlchemy dialect names -> sqlglot's.
_DIALECTS = {"postgresql": "postgres", "mariadb": "mysql", "mysql": "mysql", "sqlite": "sqlite"}
#: The statements a query may be (its root, after WITH).
_QUERIES = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery)
#: Nodes that write or change state, wherever they appear.
_WRITES = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Command,
    exp.Into,
    exp.Set,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Grant,
    exp.Copy,
    exp.LoadData,
    exp.Pragma,
)


def sqlglot_dialect(dialect: str) -> str:
    return _DIALECTS.get(dialect, dialect)


def _parse(sql: str, dialect: str) -> list[exp.Expr]:
    return [s for s in sqlglot.parse(sql, read=sqlglot_dialect(dialect)) if s is not None]


def check_read_only(sql: str, dialect: str) -> str | None:
    """None when `sql` is one read-only query; else the problem, in words for the user."""
    if not sql.strip():
        return "the query is empty"
    try:
        statements = _parse(sql, dialect)
    except SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"the query does not parse as {dialect} SQL: {first[:300]}"
    if not statements:
        return "the query is empty"
    if len(statements) > 1:
        return f"the query must be one statement, found {len(statements)}"
    [root] = statements
    query = root.this if isinstance(root, exp.With) else root
    if not isinstance(query, _QUERIES):
        return f"only SELECT or WITH queries are allowed, found {root.key.upper()}"
    for node in root.walk():
        if isinstance(node, _WRITES):
            return f"only read-only queries are allowed, found {node.key.upper()}"
    return None


def normalise(sql: str, dialect: str) -> str:
    """A canonical form for exact-match comparison: parsed and printed by sqlglot with
    identifiers normalised, comments and formatting dropped."""
    target = sqlglot_dialect(dialect)
    try:
        tree = sqlglot.parse_one(sql, read=target)
    except SqlglotError:
        return " ".join(sql.split()).rstrip(";").lower()
    return tree.sql(dialect=target, normalize=True, comments=False)


def tables_read(sql: str, dialect: str) -> set[str]:
    """The tables a query reads (lower-cased names, CTEs excluded); empty if it does not parse."""
    try:
        tree = sqlglot.parse_one(sql, read=sqlglot_dialect(dialect))
    except SqlglotError:
        return set()
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    return {t.name.lower() for t in tree.find_all(exp.Table) if t.name.lower() not in ctes}
