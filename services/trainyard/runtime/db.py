"""Async SQLAlchemy engines and per-service Alembic migrations (SQLite embedded, PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

#: Connections a service's engine keeps and may open at most.
POOL_SIZE = 15


def _private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does (its -wal and -shm files take the
    database's mode), and tighten one an older version left readable by all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if each.stat().st_mode & 0o077:
                each.chmod(0o600)


def create_engine(url: str, *, schema: str | None = None) -> AsyncEngine:
    """An async engine for `url`. SQLite gets WAL, foreign keys and a busy timeout; PostgreSQL
    may be confined to `schema` (its search_path)."""
    parsed = make_url(url)
    # The pool keeps as many connections as it may ever open (the old 5 + 10 overflow): with
    # overflow, every burst above 5 concurrent requests opened and closed connections (on
    # SQLite a thread, a file open and the pragmas each time) under a steady load of reads.
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_size": POOL_SIZE, "max_overflow": 0}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_sqlite_file(Path(parsed.database))
        kwargs["connect_args"] = {"timeout": 30}
        # A local file does not go away like a server's connection: no ping round trip (a
        # thread hop on aiosqlite) per checkout.
        kwargs["pool_pre_ping"] = False
        if not parsed.database or parsed.database == ":memory:":
            kwargs.pop("pool_size")
            kwargs.pop("max_overflow")
        engine = create_async_engine(url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+asyncpg")
        if schema:
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
        if parsed.get_driver_name() == "asyncpg":
            # SQLAlchemy's asyncpg ping is BEGIN, ";" and ROLLBACK: three round trips on every
            # checkout, more than a cheap read itself. asyncpg already knows when the server
            # closed a connection (a restart, pg_terminate_backend): its protocol sees the EOF.
            # Checking that on checkout costs nothing and swaps the dead connection for a
            # fresh one, as the ping did.
            kwargs["pool_pre_ping"] = False
            engine = create_async_engine(parsed, **kwargs)
            event.listen(engine.sync_engine, "checkout", _refuse_closed_asyncpg)
            return engine
    return create_async_engine(parsed, **kwargs)


def _refuse_closed_asyncpg(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout hook: a connection the server has closed is a disconnect, so the pool
    discards it and checks out (or opens) another."""
    driver = getattr(dbapi_conn, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the server closed this connection")


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


class Cursors:
    """Named positions in another service's event stream (the job-runner's WatchJobs revision),
    kept in a service's own `<service>_cursors` table (`model`: a mapped class with `name` and
    `value` columns), so a restarted service resumes where it stopped."""

    def __init__(self, sessions: async_sessionmaker[Any], model: Any) -> None:
        self._sessions = sessions
        self._model = model

    async def get(self, name: str) -> int:
        async with self._sessions() as session:
            row = await session.get(self._model, name)
            return int(row.value) if row is not None else 0

    async def save(self, name: str, value: int, *, reset: bool = False) -> None:
        """Move the cursor forward to `value` (never back, unless `reset`: a revision the
        job-runner no longer has)."""
        async with self._sessions.begin() as session:
            row = await session.get(self._model, name)
            if row is None:
                session.add(self._model(name=name, value=value))
            elif value > row.value or reset:
                row.value = value


def reader_of(sessions: async_sessionmaker[Any]) -> AsyncEngine:
    """The engine behind a sessionmaker, for hot read paths that run one Core statement and want
    plain rows, without a Session's unit-of-work bookkeeping. On PostgreSQL its connections are
    in autocommit: a single SELECT reads one snapshot anyway, and it saves the BEGIN and
    ROLLBACK round trips. (SQLite's driver emits no BEGIN for a read, and switching its
    isolation level would cost more than it saves.) Use it only for single-statement reads."""
    engine = sessions.kw.get("bind")
    if not isinstance(engine, AsyncEngine):
        raise TypeError("the sessionmaker is not bound to an AsyncEngine")
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def _upgrade(
    connection: Connection, script_location: str, version_table: str, revision: str
) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.attributes["connection"] = connection
    cfg.attributes["version_table"] = version_table
    command.upgrade(cfg, revision)


async def migrate(
    engine: AsyncEngine, migrations: Path, version_table: str, revision: str = "head"
) -> None:
    """Run a service's Alembic migrations up to `revision` (head: all of them; an earlier one
    lets a test write rows as an older version did). Safe to call on every start."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, str(migrations), version_table, revision)


def run_migrations(context: EnvironmentContext, target_metadata: Any) -> None:
    """The body of every service's migrations/env.py (online mode only)."""
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=context.config.attributes.get("version_table", "alembic_version"),
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


class Database:
    """A service's database: engine, sessions and migrations to head on start."""

    def __init__(self, service: str, url: str, migrations: Path, schema: str | None = None) -> None:
        self.service = service
        self.url = url
        self.engine = create_engine(url, schema=schema)
        self.sessions = sessionmaker(self.engine)
        self._migrations = migrations

    async def start(self) -> None:
        await migrate(self.engine, self._migrations, f"alembic_version_{self.service}")

    async def close(self) -> None:
        await self.engine.dispose()
