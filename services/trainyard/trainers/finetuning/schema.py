"""Reading a user's database schema for the training prompt, with SQLAlchemy's inspector.

`describe_database` connects once (bounded by `timeout_seconds`), reflects the tables of the
requested schemas (the default schema when none), and keeps for each table its CREATE TABLE
statement (columns, primary and foreign keys, as the dialect prints it), a few sample rows, and
the distinct values of low-cardinality text columns (at most `LOW_CARDINALITY` values among the
first `DISTINCT_SCAN_ROWS` rows), which teach a model the literals its WHERE clauses need.

Connection URIs: any SQLAlchemy URL of sqlite, postgresql or mysql/mariadb. A URL without a
driver gets the one the project installs (psycopg for PostgreSQL, PyMySQL for MySQL/MariaDB).
Errors are `DatabaseUnreachable` with the driver's reason and never the password.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import MetaData, String, Table, create_engine, select, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateTable

#: Dialects a connection may use.
DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb")
#: Default drivers, installed by the project.
_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}
LOW_CARDINALITY = 20
DISTINCT_SCAN_ROWS = 1000
MAX_TABLES = 500
MAX_VALUE_CHARS = 80


class DatabaseUnreachable(Exception):
    """The database cannot be reached or read (the message is the driver's reason, masked)."""


@dataclass(frozen=True)
class TableInfo:
    schema: str | None
    name: str
    create_sql: str
    columns: list[str] = field(default_factory=list)
    sample_rows: list[list[str]] = field(default_factory=list)
    low_cardinality: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class DatabaseSchema:
    dialect: str
    schemas: list[str]
    tables: list[TableInfo]

    def table(self, name: str) -> TableInfo | None:
        wanted = name.lower()
        return next((t for t in self.tables if t.name.lower() == wanted), None)


def database_url(connection_uri: str) -> URL:
    """The URL with the project's driver filled in; DatabaseUnreachable for a malformed URI or
    an unsupported dialect."""
    try:
        url = make_url(connection_uri)
    except (ArgumentError, ValueError) as exc:
        raise DatabaseUnreachable(f"the connection URI is not a database URL: {exc}") from exc
    backend = url.get_backend_name()
    if backend not in DIALECTS:
        raise DatabaseUnreachable(
            f"unsupported dialect {backend!r}: use one of {', '.join(DIALECTS)}"
        )
    if backend in _DRIVERS and "+" not in url.drivername:
        url = url.set(drivername=f"{backend}+{_DRIVERS[backend]}")
    return url


def dialect_of(connection_uri: str) -> str:
    return database_url(connection_uri).get_backend_name()


def mask_password(connection_uri: str) -> str:
    """The URI with its password replaced by ***; a malformed one is not echoed at all."""
    try:
        return make_url(connection_uri).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<not a database URL>"


def _masked_reason(exc: BaseException, url: URL) -> str:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    message = reason[0] if reason else type(exc).__name__
    if url.password:
        message = message.replace(str(url.password), "***")
    return message[:500]


def connect_args(url: URL, timeout_seconds: float) -> dict[str, Any]:
    backend = url.get_backend_name()
    seconds = max(1, int(timeout_seconds))
    if backend == "sqlite":
        return {"timeout": timeout_seconds}
    if backend == "postgresql":
        return {"connect_timeout": seconds}
    return {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}


@contextmanager
def connection(connection_uri: str, timeout_seconds: float = 10.0) -> Iterator[Connection]:
    """One short-lived connection (no pool); DatabaseUnreachable with the masked reason."""
    url = database_url(connection_uri)
    engine: Engine | None = None
    try:
        engine = create_engine(
            url, poolclass=NullPool, connect_args=connect_args(url, timeout_seconds)
        )
        with engine.connect() as conn:
            yield conn
    except (SQLAlchemyError, NoSuchModuleError, OSError) as exc:
        raise DatabaseUnreachable(_masked_reason(exc, url)) from exc
    finally:
        if engine is not None:
            engine.dispose()


def _cell(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "<binary>"
    if isinstance(value, (datetime.date, datetime.time, decimal.Decimal)):
        return str(value)
    shown = "NULL" if value is None else str(value)
    return shown if len(shown) <= MAX_VALUE_CHARS else shown[: MAX_VALUE_CHARS - 3] + "..."


def _describe_table(conn: Connection, table: Table, sample_rows: int) -> TableInfo:
    create_sql = str(CreateTable(table).compile(conn.engine)).strip()
    rows = [[_cell(v) for v in row] for row in conn.execute(select(table).limit(sample_rows))]
    low: dict[str, list[str]] = {}
    for column in table.columns:
        if not isinstance(column.type, String):
            continue
        head = select(column.label("v")).limit(DISTINCT_SCAN_ROWS).subquery()
        values = conn.execute(select(head.c.v).distinct().limit(LOW_CARDINALITY + 1)).scalars()
        found = [v for v in values if v is not None]
        if 0 < len(found) <= LOW_CARDINALITY:
            low[column.name] = sorted(_cell(v) for v in found)
    return TableInfo(
        schema=table.schema,
        name=table.name,
        create_sql=create_sql,
        columns=[c.name for c in table.columns],
        sample_rows=rows,
        low_cardinality=low,
    )


def describe_database(
    connection_uri: str,
    schemas: Sequence[str] | None = None,
    *,
    timeout_seconds: float = 10.0,
    sample_rows: int = 3,
) -> DatabaseSchema:
    """The tables of `schemas` (default: the connection's default schema), described."""
    url = database_url(connection_uri)
    with connection(connection_uri, timeout_seconds) as conn:
        try:
            if url.get_backend_name() == "sqlite":
                conn.execute(text("PRAGMA query_only = ON"))
            wanted: list[str | None] = list(schemas) if schemas else [None]
            tables: list[TableInfo] = []
            for schema in wanted:
                metadata = MetaData()
                metadata.reflect(bind=conn, schema=schema, views=False)
                for table in list(metadata.sorted_tables)[:MAX_TABLES]:
                    if schema is not None and table.schema != schema:
                        continue  # a table another schema's foreign key pulled in
                    tables.append(_describe_table(conn, table, sample_rows))
        except SQLAlchemyError as exc:
            raise DatabaseUnreachable(_masked_reason(exc, url)) from exc
        names = [s for s in wanted if s is not None]
        return DatabaseSchema(url.get_backend_name(), names, tables)
