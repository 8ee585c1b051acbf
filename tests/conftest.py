from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.harness import Harness
from tests.support.recording import Recorder, recording_registrations
from tests.support.upload_service import AWS_ENV, STORE_LIMITS, MotoServer
from trainyard.blobs import LocalBlobStorage
from trainyard.runtime.db import Database
from trainyard.runtime.settings import SERVICE_NAMES
from trainyard.upload.app import MIGRATIONS
from trainyard.upload.store import UploadStore

POSTGRES_URL = os.environ.get(
    "TRAINYARD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
# A user database for the finetuning tests (schema reading); tests use unique table names.
MARIADB_URL = os.environ.get(
    "TRAINYARD_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)


@pytest.fixture(scope="session")
def recording_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Harness, Recorder]]:
    """Recording servicers for all five services behind a real Envoy."""
    harness = Harness(tmp_path_factory.mktemp("recording"))
    recorder = Recorder()
    try:
        for name in SERVICE_NAMES:
            harness.start_registrations(name, recording_registrations(name, recorder))
        harness.start_envoy()
        yield harness, recorder
    finally:
        harness.close()


def _execute(url: str, sql: str | None = None, timeout: float = 5) -> None:
    """Connect to the PostgreSQL at `url` and run `sql` (just connect when None)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)

    async def go() -> None:
        conn = await asyncpg.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password,
            database=parsed.database,
            timeout=timeout,
        )
        try:
            if sql is not None:
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def _postgres_reachable(url: str) -> str | None:
    import asyncpg

    try:
        _execute(url)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_url() -> str:
    problem = _postgres_reachable(POSTGRES_URL)
    if problem is not None:
        message = f"PostgreSQL at {POSTGRES_URL} is not reachable ({problem})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI requires it")
        pytest.skip(message + "; set TRAINYARD_TEST_POSTGRES_URL to run these tests")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def mariadb_url() -> str:
    """The MariaDB/MySQL at MARIADB_URL (sync PyMySQL URL); skipped when absent, failed under CI."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(MARIADB_URL, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        message = f"MariaDB at {MARIADB_URL} is not reachable ({type(exc).__name__}: {exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI requires it")
        pytest.skip(message + "; set TRAINYARD_TEST_MARIADB_URL to run these tests")
    finally:
        engine.dispose()
    return MARIADB_URL


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    _execute(postgres_url, f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        _execute(postgres_url, f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """(url, schema) for each backend the data layer must work on."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}", None
    schema: str = request.getfixturevalue("pg_schema")
    return request.getfixturevalue("postgres_url"), schema


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One S3 endpoint (moto_server in a child process) for the session, with the AWS_*
    variables set; tests create their own buckets."""
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.start()
    with pytest.MonkeyPatch.context() as env:
        for name, value in AWS_ENV.items():
            env.setenv(name, value)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
async def store(database: tuple[str, str | None], tmp_path: Path) -> AsyncIterator[UploadStore]:
    """An upload store on each database, with local blobs and STORE_LIMITS."""
    url, schema = database
    db = Database("upload", url, MIGRATIONS, schema)
    await db.start()
    store = UploadStore(
        db.sessions, LocalBlobStorage(tmp_path / "blobs"), STORE_LIMITS, orphan_grace=timedelta(0)
    )
    await store.start()
    try:
        yield store
    finally:
        await store.close()
        await db.close()
