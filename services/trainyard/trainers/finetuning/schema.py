"""Read a user's database schema (SQLAlchemy's inspector) for the finetuning prompt.

The connection URI is the user's: any SQLAlchemy URL of sqlite, postgresql or mysql/mariadb.
Async drivers (`+asyncpg`, `+aiosqlite`, `+aiomysql`) and driver-less URLs are mapped to the sync
drivers this project installs (psycopg, pysqlite, PyMySQL). Every failure to reach or read the
database is a `DatabaseUnreachable` whose message is the driver's reason with the password masked.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, MetaData, Table, create_engine, func, inspect, select, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql import sqltypes

# A text column with at most this many distinct values has them listed in the prompt.
LOW_CARDINALITY_MAX = 20
# Longer sample values are cut (a prompt is no place for a blob).
SAMPLE_VALUE_MAX_CHARS = 80

_SYNC_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "mysql": "mysql+pymysql",
    "mysql+aiomysql": "mysql+pymysql",
    "mysql+asyncmy": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mariadb+aiomysql": "mariadb+pymysql",
}


# How the drivers say a statement ran past its timeout.
_TIMEOUT_MARKS = ("interrupted", "statement timeout", "max_statement_time", "execution time")


# The URL query options a user may set, per backend. Others are refused: driver options can read
# files on this machine (pymysql's read_default_file, libpq's passfile/service/sslkey) or run code.
_QUERY_OPTIONS: dict[str, frozenset[str]] = {
    "postgresql": frozenset(
        {"options", "sslmode", "application_name", "target_session_attrs", "connect_timeout"}
    ),
    "mysql": frozenset({"charset", "collation"}),
    "mariadb": frozenset({"charset", "collation"}),
    "sqlite": frozenset(),
}


class DatabaseUnreachable(Exception):
    """The database cannot be reached or read; the message is the reason, without secrets."""


@dataclass(frozen=True)
class TableInfo:
    schema: str | None
    name: str
    create_sql: str
    sample_rows: list[dict[str, str]] = field(default_factory=list)
    low_cardinality: dict[str, list[str]] = field(default_factory=dict)

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True)
class DatabaseSchema:
    dialect: str
    schemas: list[str]
    tables: list[TableInfo]


def mask_password(connection_uri: str) -> str:
    """The URI with its password shown as ***; text that is no URL is returned masked whole."""
    try:
        return make_url(connection_uri).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "***"


def sync_url(connection_uri: str) -> URL:
    """The URL parsed, with its driver mapped to an installed sync driver.

    Raises DatabaseUnreachable for text that is no SQLAlchemy URL or names an unknown dialect.
    """
    try:
        url = make_url(connection_uri)
    except (ArgumentError, ValueError) as exc:
        raise DatabaseUnreachable(
            "the connection URI is not a valid SQLAlchemy URL (dialect+driver://user:password@host/db)"
        ) from exc
    name = url.drivername.lower()
    backend = name.split("+", 1)[0]
    if name in _SYNC_DRIVERS:
        url = url.set(drivername=_SYNC_DRIVERS[name])
        backend = url.get_backend_name()
    elif backend not in _QUERY_OPTIONS:
        raise DatabaseUnreachable(
            f"unsupported database dialect {url.drivername!r}: "
            "use sqlite, postgresql, mysql or mariadb"
        )
    refused = sorted(set(url.query) - _QUERY_OPTIONS[backend])
    if refused:
        allowed = ", ".join(sorted(_QUERY_OPTIONS[backend])) or "none"
        raise DatabaseUnreachable(
            f"connection option {refused[0]!r} is not allowed for {backend} (allowed: {allowed})"
        )
    return url


def _connect_args(url: URL, timeout_seconds: float) -> dict[str, Any]:
    backend = url.get_backend_name()
    seconds = max(1, round(timeout_seconds))
    if backend == "postgresql":
        return {"connect_timeout": seconds}
    if backend in {"mysql", "mariadb"}:
        return {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
    return {"timeout": timeout_seconds}


def _reason(exc: BaseException, url: URL) -> str:
    """The driver's own message, first lines only, with the password removed."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    lines = [line for line in text.splitlines() if line.strip()][:3]
    message = " ".join(line.strip() for line in lines) or type(exc).__name__
    if url.password:
        message = message.replace(str(url.password), "***")
    full = url.render_as_string(hide_password=False)
    return message.replace(full, url.render_as_string(hide_password=True))


@contextmanager
def open_engine(
    connection_uri: str, *, timeout_seconds: float = 10.0, read_only: bool = False
) -> Iterator[Engine]:
    """A sync engine on the user's database (no pool), disposed afterwards.

    A sqlite file must exist (it is opened, never created); `read_only` opens it in `mode=ro`.
    """
    url = sync_url(connection_uri)
    connect_args = _connect_args(url, timeout_seconds)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in {"", ":memory:"}:
            raise DatabaseUnreachable("a sqlite connection needs a database file path")
        if not Path(database).is_file():
            raise DatabaseUnreachable("unable to open database file: the file does not exist")
        mode = "ro" if read_only else "rw"
        path = quote(Path(database).as_posix())  # a '?' or '#' in the name stays a name
        url = url.set(database=f"file:{path}?mode={mode}", query={"uri": "true"})
    try:
        engine = create_engine(url, poolclass=None, connect_args=connect_args)
    except (NoSuchModuleError, ArgumentError) as exc:
        raise DatabaseUnreachable(f"unsupported database driver {url.drivername!r}") from exc
    except ImportError as exc:
        raise DatabaseUnreachable(f"the driver for {url.drivername!r} is not installed") from exc
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def read_only_session(conn: Connection, timeout_seconds: float) -> Iterator[None]:
    """A read-only transaction with a per-statement timeout, in the connection's dialect,
    rolled back at the end: PostgreSQL `SET TRANSACTION READ ONLY` + `statement_timeout`,
    MySQL `max_execution_time` / MariaDB `max_statement_time` + `SET TRANSACTION READ ONLY`;
    SQLite (opened `mode=ro`) is interrupted once `timeout_seconds` have passed in all."""
    name = conn.dialect.name
    raw: Any = None
    try:
        if name == "postgresql":
            milliseconds = max(1, int(timeout_seconds * 1000))
            conn.execute(text("SET TRANSACTION READ ONLY"))
            conn.execute(text(f"SET LOCAL statement_timeout = {milliseconds}"))
        elif name in {"mysql", "mariadb"}:
            if getattr(conn.dialect, "is_mariadb", False):
                seconds = max(0.001, timeout_seconds)
                conn.execute(text(f"SET SESSION max_statement_time = {seconds}"))
            else:
                milliseconds = max(1, int(timeout_seconds * 1000))
                conn.execute(text(f"SET SESSION max_execution_time = {milliseconds}"))
            conn.execute(text("SET TRANSACTION READ ONLY"))
        elif name == "sqlite":
            raw = conn.connection.driver_connection
            deadline = time.monotonic() + timeout_seconds
            raw.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
        yield
    finally:
        if raw is not None:
            raw.set_progress_handler(None, 0)
        conn.rollback()


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    text = value.isoformat() if isinstance(value, datetime.date | datetime.time) else str(value)
    # One line per value: the prompt's layout is ours, not the data's.
    text = " ".join(text.split())
    return text if len(text) <= SAMPLE_VALUE_MAX_CHARS else text[: SAMPLE_VALUE_MAX_CHARS - 1] + "…"


def _describe_table(conn: Connection, schema: str | None, name: str, sample_rows: int) -> TableInfo:
    metadata = MetaData()
    table = Table(name, metadata, schema=schema, autoload_with=conn)
    create_sql = str(CreateTable(table).compile(dialect=conn.dialect)).strip()
    rows: list[dict[str, str]] = []
    if sample_rows > 0:
        for row in conn.execute(select(table).limit(sample_rows)).mappings():
            rows.append({str(key): _text(value) for key, value in row.items()})
    low: dict[str, list[str]] = {}
    for column in table.columns:
        if not isinstance(column.type, sqltypes.String):
            continue
        query = (
            select(column)
            .where(column.is_not(None))
            .group_by(column)
            .order_by(func.count().desc(), column)
            .limit(LOW_CARDINALITY_MAX + 1)
        )
        values = [_text(value) for value in conn.execute(query).scalars()]
        if 0 < len(values) <= LOW_CARDINALITY_MAX:
            low[str(column.name)] = sorted(values)
    return TableInfo(
        schema=schema, name=name, create_sql=create_sql, sample_rows=rows, low_cardinality=low
    )


def describe_database(
    connection_uri: str,
    schemas: Sequence[str] | None = None,
    *,
    timeout_seconds: float = 10.0,
    sample_rows: int = 3,
) -> DatabaseSchema:
    """Tables (CREATE TABLE with keys, low-cardinality values, sample rows) of the given schemas.

    Without `schemas` the connection's default schema is read and tables carry `schema=None`;
    with them, every listed schema must exist and tables carry their schema name.
    """
    with open_engine(connection_uri, timeout_seconds=timeout_seconds, read_only=True) as engine:
        url = engine.url
        try:
            with engine.connect() as conn, read_only_session(conn, timeout_seconds):
                inspector = inspect(conn)
                dialect = conn.dialect.name
                if schemas:
                    existing = set(inspector.get_schema_names())
                    missing = [name for name in schemas if name not in existing]
                    if missing:
                        raise DatabaseUnreachable(
                            f"schema {missing[0]!r} does not exist in the database"
                        )
                    targets: list[str | None] = list(schemas)
                    names = list(schemas)
                else:
                    targets = [None]
                    names = [inspector.default_schema_name or "main"]
                tables: list[TableInfo] = []
                for schema in targets:
                    for name in sorted(inspector.get_table_names(schema=schema)):
                        tables.append(_describe_table(conn, schema, name, sample_rows))
        except DatabaseUnreachable:
            raise
        except SQLAlchemyError as exc:
            reason = _reason(exc, url)
            if any(mark in reason.lower() for mark in _TIMEOUT_MARKS):
                reason = f"reading the schema took longer than {timeout_seconds:g}s ({reason})"
            raise DatabaseUnreachable(reason) from exc
        except (OSError, ValueError) as exc:
            raise DatabaseUnreachable(_reason(exc, url)) from exc
    return DatabaseSchema(dialect=dialect, schemas=names, tables=tables)
