"""The engines' pools: connections are kept (no churn under concurrent reads), and on
PostgreSQL a connection the server closed is replaced on checkout without a ping."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from tests.support.wait import wait_until
from trainyard.runtime.db import POOL_SIZE, create_engine, reader_of, sessionmaker


async def test_concurrent_reads_keep_their_connections(
    database: tuple[str, str | None],
) -> None:
    url, schema = database
    engine = create_engine(url, schema=schema)
    opened: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda conn, _rec: opened.append(conn))

    async def read() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await asyncio.sleep(0.01)

    try:
        for _ in range(3):
            await asyncio.gather(*(read() for _ in range(2 * POOL_SIZE)))
        # Never more than the pool's size, opened once and then reused.
        assert len(opened) <= POOL_SIZE
        pool = engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedin() == len(opened)
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_connection_the_server_closed_is_replaced(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    reader = reader_of(sessionmaker(engine))
    parsed = make_url(postgres_url)
    admin = await asyncpg.connect(
        host=parsed.host, port=parsed.port or 5432, user=parsed.username, database=parsed.database
    )
    try:
        async with reader.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        # asyncpg sees the server's EOF on its socket.
        await wait_until(driver.is_closed, 10, "asyncpg notices the closed connection")
        async with reader.connect() as conn:
            new_pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert new_pid != pid
    finally:
        await admin.close()
        await engine.dispose()
