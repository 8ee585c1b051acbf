"""The finetuning service's data: connections, golden records and finetunings, each one user's
alone (another user's object is NOT_FOUND, with the same text as a missing one)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trainyard.finetuning.models import Cursor, DbConnection, Finetuning, GoldenRecord
from trainyard.runtime.clock import as_utc, utcnow
from trainyard.runtime.db import Cursors
from trainyard.runtime.errors import AlreadyExists, FailedPrecondition, NotFound

CONNECTION_NOT_FOUND = "Database connection not found"
GOLDEN_RECORD_NOT_FOUND = "Golden record not found"
FINETUNING_NOT_FOUND = "Finetuning not found"
#: The provider's job statuses; the last three end a finetuning.
STATUSES = ("queued", "validating_files", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class ConnectionView:
    id: str
    owner: str
    alias: str
    dialect: str
    uri_encrypted: str
    uri_masked: str
    schemas: list[str]
    meta: dict[str, str] | None
    created_at: datetime


@dataclass(frozen=True)
class GoldenRecordView:
    id: str
    db_connection_id: str
    question: str
    sql_query: str
    meta: dict[str, str] | None
    created_at: datetime


@dataclass(frozen=True)
class NewGoldenRecord:
    db_connection_id: str
    question: str
    sql_query: str
    meta: dict[str, str] | None


@dataclass(frozen=True)
class FinetuningView:
    id: str
    owner: str
    db_connection_id: str
    alias: str | None
    status: str
    error: str | None
    base_llm: dict[str, Any]
    provider_file_id: str | None
    provider_job_id: str | None
    model_id: str | None
    golden_records: list[str]
    held_out: list[str]
    records: list[dict[str, str]]
    meta: dict[str, str] | None
    evaluation: dict[str, Any] | None
    job_id: str | None
    attempts: int
    created_at: datetime

    @property
    def final(self) -> bool:
        return self.status in TERMINAL


def _connection(row: DbConnection) -> ConnectionView:
    return ConnectionView(
        id=row.id,
        owner=row.owner,
        alias=row.alias,
        dialect=row.dialect,
        uri_encrypted=row.uri_encrypted,
        uri_masked=row.uri_masked,
        schemas=list(row.schemas or []),
        meta=dict(row.meta) if row.meta is not None else None,
        created_at=as_utc(row.created_at),
    )


def _record(row: GoldenRecord) -> GoldenRecordView:
    return GoldenRecordView(
        id=row.id,
        db_connection_id=row.db_connection_id,
        question=row.question,
        sql_query=row.sql_query,
        meta=dict(row.meta) if row.meta is not None else None,
        created_at=as_utc(row.created_at),
    )


def _finetuning(row: Finetuning) -> FinetuningView:
    return FinetuningView(
        id=row.id,
        owner=row.owner,
        db_connection_id=row.db_connection_id,
        alias=row.alias,
        status=row.status,
        error=row.error,
        base_llm=dict(row.base_llm),
        provider_file_id=row.provider_file_id,
        provider_job_id=row.provider_job_id,
        model_id=row.model_id,
        golden_records=list(row.golden_records),
        held_out=list(row.held_out or []),
        records=list(row.records),
        meta=dict(row.meta) if row.meta is not None else None,
        evaluation=dict(row.evaluation) if row.evaluation is not None else None,
        job_id=row.job_id,
        attempts=row.attempts,
        created_at=as_utc(row.created_at),
    )


def _connection_not_found() -> NotFound:
    return NotFound(CONNECTION_NOT_FOUND, reason="DB_CONNECTION_NOT_FOUND")


def _finetuning_not_found() -> NotFound:
    return NotFound(FINETUNING_NOT_FOUND, reason="FINETUNING_NOT_FOUND")


class FinetuningStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        #: The job-runner watch cursor.
        self.cursors = Cursors(sessions, Cursor)

    # ---- database connections --------------------------------------------------------------

    async def create_connection(
        self,
        *,
        connection_id: str,
        owner: str,
        alias: str,
        dialect: str,
        uri_encrypted: str,
        uri_masked: str,
        schemas: list[str],
        meta: dict[str, str] | None,
    ) -> ConnectionView:
        async with self._sessions() as session:
            taken = await session.execute(
                select(DbConnection.id).where(
                    DbConnection.owner == owner, DbConnection.alias == alias
                )
            )
            if taken.first() is not None:
                raise _alias_taken(alias)
            row = DbConnection(
                id=connection_id,
                owner=owner,
                alias=alias,
                dialect=dialect,
                uri_encrypted=uri_encrypted,
                uri_masked=uri_masked,
                schemas=schemas,
                meta=meta,
            )
            session.add(row)
            try:
                await session.commit()
            except IntegrityError as exc:  # a concurrent create of the same alias
                raise _alias_taken(alias) from exc
            return _connection(row)

    async def connection(self, owner: str, connection_id: str) -> ConnectionView:
        async with self._sessions() as session:
            row = await session.get(DbConnection, connection_id)
            if row is None or row.owner != owner:
                raise _connection_not_found()
            return _connection(row)

    async def connection_by_id(self, connection_id: str) -> ConnectionView | None:
        async with self._sessions() as session:
            row = await session.get(DbConnection, connection_id)
            return _connection(row) if row is not None else None

    async def connections(self, owner: str) -> list[ConnectionView]:
        query = (
            select(DbConnection)
            .where(DbConnection.owner == owner)
            .order_by(DbConnection.created_at, DbConnection.id)
        )
        async with self._sessions() as session:
            return [_connection(r) for r in (await session.execute(query)).scalars()]

    async def delete_connection(self, owner: str, connection_id: str) -> None:
        async with self._sessions() as session:
            row = await session.get(DbConnection, connection_id, with_for_update=True)
            if row is None or row.owner != owner:
                raise _connection_not_found()
            running = await session.execute(
                select(Finetuning.id)
                .where(
                    Finetuning.db_connection_id == connection_id,
                    Finetuning.status.not_in(TERMINAL),
                )
                .limit(1)
            )
            busy = running.scalar_one_or_none()
            if busy is not None:
                raise FailedPrecondition(
                    f"the database connection is used by the finetuning {busy}, which is still "
                    "running; cancel it (POST /api/v1/finetunings/{id}/cancel) or wait for it to "
                    "end, then delete the connection",
                    reason="DB_CONNECTION_IN_USE",
                )
            await session.execute(
                delete(GoldenRecord).where(GoldenRecord.db_connection_id == connection_id)
            )
            await session.delete(row)
            await session.commit()

    # ---- golden records --------------------------------------------------------------------

    async def add_golden_records(
        self, owner: str, records: Sequence[tuple[str, NewGoldenRecord]]
    ) -> list[GoldenRecordView]:
        """Add all of `records` ((id, record) pairs) or none."""
        base = time.time_ns()
        async with self._sessions() as session:
            rows = [
                GoldenRecord(
                    id=record_id,
                    seq=base + index,
                    owner=owner,
                    db_connection_id=record.db_connection_id,
                    question=record.question,
                    sql_query=record.sql_query,
                    meta=record.meta,
                )
                for index, (record_id, record) in enumerate(records)
            ]
            session.add_all(rows)
            await session.commit()
            return [_record(r) for r in rows]

    async def golden_records(
        self,
        owner: str,
        *,
        connection_id: str | None = None,
        ids: Sequence[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[GoldenRecordView]:
        query = select(GoldenRecord).where(GoldenRecord.owner == owner)
        if connection_id:
            query = query.where(GoldenRecord.db_connection_id == connection_id)
        if ids is not None:
            query = query.where(GoldenRecord.id.in_(list(ids)))
        query = query.order_by(GoldenRecord.seq, GoldenRecord.id).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        async with self._sessions() as session:
            return [_record(r) for r in (await session.execute(query)).scalars()]

    async def delete_golden_record(self, owner: str, record_id: str) -> None:
        async with self._sessions() as session:
            row = await session.get(GoldenRecord, record_id)
            if row is None or row.owner != owner:
                raise NotFound(GOLDEN_RECORD_NOT_FOUND, reason="GOLDEN_RECORD_NOT_FOUND")
            await session.delete(row)
            await session.commit()

    # ---- finetunings -----------------------------------------------------------------------

    async def create_finetuning(
        self,
        *,
        finetuning_id: str,
        owner: str,
        db_connection_id: str,
        alias: str | None,
        base_llm: dict[str, Any],
        golden_records: list[str],
        held_out: list[str],
        records: list[dict[str, str]],
        meta: dict[str, str] | None,
        evaluation: dict[str, Any] | None,
    ) -> FinetuningView:
        async with self._sessions() as session:
            row = Finetuning(
                id=finetuning_id,
                owner=owner,
                db_connection_id=db_connection_id,
                alias=alias,
                status="queued",
                base_llm=base_llm,
                golden_records=golden_records,
                held_out=held_out,
                records=records,
                meta=meta,
                evaluation=evaluation,
                attempts=0,
            )
            session.add(row)
            await session.commit()
            return _finetuning(row)

    async def finetuning(self, owner: str, finetuning_id: str) -> FinetuningView:
        async with self._sessions() as session:
            row = await session.get(Finetuning, finetuning_id)
            if row is None or row.owner != owner:
                raise _finetuning_not_found()
            return _finetuning(row)

    async def finetuning_by_id(self, finetuning_id: str) -> FinetuningView | None:
        async with self._sessions() as session:
            row = await session.get(Finetuning, finetuning_id)
            return _finetuning(row) if row is not None else None

    async def finetunings(
        self, owner: str, connection_id: str | None = None
    ) -> list[FinetuningView]:
        query = select(Finetuning).where(Finetuning.owner == owner)
        if connection_id:
            query = query.where(Finetuning.db_connection_id == connection_id)
        query = query.order_by(Finetuning.created_at.desc(), Finetuning.id.desc())
        async with self._sessions() as session:
            return [_finetuning(r) for r in (await session.execute(query)).scalars()]

    async def unfinished(self) -> list[FinetuningView]:
        query = select(Finetuning).where(Finetuning.status.not_in(TERMINAL))
        async with self._sessions() as session:
            return [_finetuning(r) for r in (await session.execute(query)).scalars()]

    async def update(
        self, finetuning_id: str, *, force: bool = False, **changes: Any
    ) -> FinetuningView:
        """Apply `changes` (column names). A finetuning that has ended keeps its status, error
        and model; its evaluation and metadata may still change. `force` overrides (a cancel)."""
        async with self._sessions() as session:
            row = await session.get(Finetuning, finetuning_id, with_for_update=True)
            if row is None:
                raise _finetuning_not_found()
            ended = row.status in TERMINAL and not force
            for key, value in changes.items():
                if ended and key in ("status", "error", "model_id"):
                    continue
                if key == "error" and isinstance(value, str):
                    value = value[:4000]
                setattr(row, key, value)
            row.updated_at = utcnow()
            await session.commit()
            return _finetuning(row)

    async def delete_finetuning(self, owner: str, finetuning_id: str) -> None:
        async with self._sessions() as session:
            row = await session.get(Finetuning, finetuning_id)
            if row is None or row.owner != owner:
                raise _finetuning_not_found()
            await session.delete(row)
            await session.commit()

    async def count_golden_records(self, owner: str, connection_id: str) -> int:
        query = select(func.count(GoldenRecord.id)).where(
            GoldenRecord.owner == owner, GoldenRecord.db_connection_id == connection_id
        )
        async with self._sessions() as session:
            return int((await session.execute(query)).scalar_one())


def _alias_taken(alias: str) -> AlreadyExists:
    return AlreadyExists(
        f"you already have a database connection with alias {alias[:100]!r}; choose another "
        "alias or delete that connection",
        reason="DB_CONNECTION_ALIAS_TAKEN",
    )
