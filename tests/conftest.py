from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.harness import Harness
from tests.support.recording import Recorder, recording_registrations
from trainyard.runtime.settings import SERVICE_NAMES

POSTGRES_URL = os.environ.get(
    "TRAINYARD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
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


def _postgres_reachable(url: str) -> str | None:
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)

    async def probe() -> None:
        conn = await asyncpg.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password,
            database=parsed.database,
            timeout=5,
        )
        await conn.close()

    try:
        asyncio.run(probe())
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


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards."""
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(postgres_url)
    schema = f"t_{uuid.uuid4().hex[:16]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password,
            database=parsed.database,
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        asyncio.run(run(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """(url, schema) for each backend the data layer must work on."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}", None
    schema: str = request.getfixturevalue("pg_schema")
    return request.getfixturevalue("postgres_url"), schema
