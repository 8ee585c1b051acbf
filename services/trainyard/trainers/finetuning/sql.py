"""SQL checks with sqlglot: read-only queries only, normalisation for exact match, tables read."""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError

# SQLAlchemy dialect names → sqlglot's.
_DIALECTS = {
    "postgresql": "postgres",
    "postgres": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
    "mssql": "tsql",
    "oracle": "oracle",
    "duckdb": "duckdb",
    "bigquery": "bigquery",
    "snowflake": "snowflake",
}

# Anywhere in a query these make it a write, a lock or something other than a read.
_FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Command,
    exp.Into,
    exp.Lock,
    exp.Set,
    exp.Use,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Copy,
    exp.LoadData,
    exp.Grant,
    exp.TruncateTable,
)


def sqlglot_dialect(dialect: str) -> str | None:
    """sqlglot's name for a SQLAlchemy dialect name (None: sqlglot's generic SQL)."""
    return _DIALECTS.get(dialect.lower().split("+", 1)[0])


def _describe(node: exp.Expr) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper() or "a command"
    if isinstance(node, exp.Into):
        return "SELECT INTO"
    if isinstance(node, exp.Lock):
        return "a locking clause (FOR UPDATE/SHARE)"
    if isinstance(node, exp.TruncateTable):
        return "TRUNCATE"
    return node.key.upper()


def _parse(sql: str, dialect: str) -> list[exp.Expr]:
    return [
        statement
        for statement in sqlglot.parse(sql, read=sqlglot_dialect(dialect))
        if statement is not None
    ]


def check_read_only(sql: str, dialect: str) -> str | None:
    """None when `sql` is one read-only query (SELECT, WITH … SELECT, set operations of those);
    else what is wrong, e.g. "does not parse: …" or "only SELECT/WITH queries are allowed, found
    INSERT"."""
    if not sql.strip():
        return "the query is empty"
    try:
        statements = _parse(sql, dialect)
    except ParseError as exc:
        errors = exc.errors
        detail = str(errors[0].get("description") or exc) if errors else str(exc)
        return f"does not parse: {detail.splitlines()[0]}"
    except SqlglotError as exc:
        return f"does not parse: {str(exc).splitlines()[0]}"
    if not statements:
        return "the query is empty"
    if len(statements) > 1:
        return f"only a single statement is allowed, found {len(statements)}"
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        return f"only SELECT/WITH queries are allowed, found {_describe(statement)}"
    for node in statement.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            return f"only SELECT/WITH queries are allowed, found {_describe(node)}"
    return None


def normalise(sql: str, dialect: str) -> str:
    """A canonical text of the query for exact-match comparison: sqlglot's rendering with
    unquoted identifiers lower-cased, keywords upper-cased, whitespace and a trailing ';' gone.
    Text that does not parse is returned with whitespace collapsed."""
    name = sqlglot_dialect(dialect)
    try:
        statements = _parse(sql, dialect)
    except SqlglotError:
        statements = []
    if len(statements) != 1:
        return re.sub(r"\s+", " ", sql).strip().rstrip(";").strip()
    return statements[0].sql(dialect=name, normalize=True, pretty=False)


def tables_read(sql: str, dialect: str) -> set[str]:
    """The tables a query reads, lower-cased, `schema.table` when qualified; CTE names excluded.
    Empty for text that does not parse."""
    try:
        statements = _parse(sql, dialect)
    except SqlglotError:
        return set()
    names: set[str] = set()
    for statement in statements:
        ctes = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
        for table in statement.find_all(exp.Table):
            name = table.name.lower()
            if not name:
                continue
            schema = table.db.lower()
            if not schema and name in ctes:
                continue
            names.add(f"{schema}.{name}" if schema else name)
    return names
