"""The upload store: streaming ingest into blob storage, owner-only access, orphan sweeping.
Knows nothing of gRPC.

Atomicity. Before its first byte is stored, an upload writes an in-progress marker
`.pending/<upload id>` (refreshed while the upload runs). Each file is written atomically by the
blob storage (temp file + rename, or an S3 multipart upload completed at the end) under
`<upload id>/<name>`. Only when every file is stored is the database record inserted, and then
the marker is removed. A failed upload removes its files and its marker at once; an upload whose
process died leaves its marker, and the sweep (on start, then every sweep interval) removes the
files of any marker older than the grace period whose upload has no record, plus S3 multipart
uploads abandoned as long. Deletion uses the same marker, so a crash mid-delete is finished by the
sweep too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Select, and_, bindparam, or_, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trainyard.blobs import BlobNotFound, BlobStorage, BlobWriter, is_disk_full
from trainyard.runtime.clock import as_utc, utcnow
from trainyard.runtime.db import reader_of
from trainyard.runtime.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from trainyard.runtime.multipart import MultipartDecoder, PartData, PartEnd, PartStart
from trainyard.runtime.pagination import checked_page_size, decode_page_token, encode_page_token
from trainyard.runtime.readcache import ReadCache
from trainyard.upload.filenames import UniqueNames, sanitize_filename
from trainyard.upload.models import Upload, UploadFile

log = structlog.get_logger("trainyard.upload")

#: How to send an upload right; ends every message about a malformed body.
MULTIPART_HINT = (
    "send a multipart/form-data body with one file part per file, e.g. "
    "`curl -F file=@train.csv ...`"
)

PENDING = ".pending/"
MAX_FIELD_BYTES = 64 * 1024
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


# --------------------------------------------------------------------------------------------
# Inputs and results


@dataclass(frozen=True)
class BodyChunk:
    """A piece of a multipart/form-data body; the first one carries the content type."""

    content_type: str
    data: bytes


@dataclass(frozen=True)
class NamedChunk:
    """A piece of one file; a filename different from the previous chunk's starts a new file."""

    filename: str
    data: bytes


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_files: int
    max_total_bytes: int


@dataclass(frozen=True)
class StoredFile:
    name: str
    size_bytes: int
    sha256: str
    uri: str
    local_path: Path | None


@dataclass(frozen=True)
class UploadRecord:
    upload_id: str
    owner: str
    files: list[StoredFile]
    total_size_bytes: int
    created_at: datetime


@dataclass(frozen=True)
class UploadPage:
    uploads: list[UploadRecord]
    next_page_token: str


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def _canonical_id(upload_id: str) -> str | None:
    try:
        return str(uuid.UUID(upload_id))
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------


class UploadStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        storage: BlobStorage,
        limits: UploadLimits,
        *,
        orphan_grace: timedelta = timedelta(minutes=5),
    ) -> None:
        self._sessions = sessions
        self._reader = reader_of(sessions)
        #: Recent list pages, dropped by every write of this store (see ReadCache).
        self._lists = ReadCache()
        self.storage = storage
        self.limits = limits
        self.orphan_grace = orphan_grace
        self._active: set[str] = set()

    # lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage and sweep leftovers of interrupted uploads (the app sweeps again
        periodically, as background work)."""
        await self.storage.start()
        await self.sweep()

    async def close(self) -> None:
        await self.storage.close()

    # ingest -------------------------------------------------------------------------------

    async def ingest(
        self, owner: str, chunks: AsyncIterable[BodyChunk | NamedChunk]
    ) -> UploadRecord:
        """Store every file of one request as a new upload; all or nothing."""
        job = _Ingest(self, owner)
        try:
            await job.consume(chunks)
            return await job.commit()
        except BaseException as exc:
            # Shielded: a cancelled RPC (client gone) still cleans up.
            await asyncio.shield(job.discard())
            if is_disk_full(exc):
                raise ResourceExhausted(
                    "the upload storage is full; try again later or ask an operator",
                    reason="STORAGE_FULL",
                    http_status=507,
                ) from exc
            raise
        finally:
            job.finish()

    def _marker(self, upload_id: str) -> str:
        return PENDING + upload_id

    async def _write_marker(self, upload_id: str, op: str, owner: str) -> None:
        body = json.dumps(
            {"upload_id": upload_id, "op": op, "owner": owner, "at": utcnow().isoformat()}
        ).encode()
        await self.storage.put_bytes(self._marker(upload_id), body)

    async def _heartbeat(self, upload_id: str, owner: str, stop: asyncio.Event) -> None:
        """Refresh the marker of a live upload so that no sweep takes it for abandoned. Stops
        between writes only, so a stopped heartbeat never re-creates a removed marker."""
        interval = max(1.0, self.orphan_grace.total_seconds() / 4)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            try:
                await self._write_marker(upload_id, "ingest", owner)
            except Exception:
                log.warning("upload.heartbeat_failed", upload_id=upload_id, exc_info=True)

    def _file_record(self, row: UploadFile) -> StoredFile:
        return StoredFile(
            name=row.name,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            uri=self.storage.uri(row.storage_key),
            local_path=self.storage.local_path(row.storage_key),
        )

    def _record(self, row: Upload) -> UploadRecord:
        return UploadRecord(
            upload_id=row.id,
            owner=row.owner,
            files=[self._file_record(f) for f in row.files],
            total_size_bytes=row.total_size_bytes,
            created_at=as_utc(row.created_at),
        )

    # reading ------------------------------------------------------------------------------

    async def _owned(self, session: AsyncSession, upload_id: str, owner: str) -> Upload:
        if not upload_id:
            raise InvalidArgument(
                "upload_id is required", violations=[FieldViolation("upload_id", "is required")]
            )
        if not owner:
            raise InvalidArgument(
                "owner is required", violations=[FieldViolation("owner", "is required")]
            )
        canonical = _canonical_id(upload_id)
        row = await session.get(Upload, canonical) if canonical else None
        if row is None:
            raise NotFound(f"upload {upload_id!r} does not exist", reason="UPLOAD_NOT_FOUND")
        if row.owner != owner:
            raise PermissionDenied(
                f"upload {upload_id!r} belongs to another user; only its owner may use it",
                reason="UPLOAD_ACCESS_DENIED",
            )
        return row

    async def get(self, upload_id: str, owner: str) -> UploadRecord:
        """The upload if `owner` owns it: NOT_FOUND / PERMISSION_DENIED otherwise."""
        async with self._sessions() as session:
            return self._record(await self._owned(session, upload_id, owner))

    async def read_file(self, upload_id: str, owner: str, name: str) -> AsyncIterator[bytes]:
        """Check access now; the returned iterator streams the file's content."""
        async with self._sessions() as session:
            row = await self._owned(session, upload_id, owner)
            if not name:
                raise InvalidArgument(
                    "name is required", violations=[FieldViolation("name", "is required")]
                )
            found = next((f for f in row.files if f.name == name), None)
            if found is None:
                names = ", ".join(repr(f.name) for f in row.files[:10])
                raise NotFound(
                    f"upload {upload_id!r} has no file named {name!r}; it has {names}"
                    + (" ..." if len(row.files) > 10 else ""),
                    reason="UPLOAD_FILE_NOT_FOUND",
                )
            key = found.storage_key
        return self._stream(upload_id, name, key)

    async def _stream(self, upload_id: str, name: str, key: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.storage.read(key):
                yield chunk
        except BlobNotFound as exc:
            raise NotFound(
                f"the content of file {name!r} of upload {upload_id!r} is missing from storage",
                reason="UPLOAD_CONTENT_MISSING",
            ) from exc

    async def list_uploads(
        self, owner: str, page_size: int = 0, page_token: str = ""
    ) -> UploadPage:
        """The owner's uploads, newest first, one page at a time. Pages are kept in a ReadCache
        until this store's next write (1 s at most)."""
        size = checked_page_size(page_size, maximum=MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        cache_key = (owner, size, page_token)
        cached: UploadPage | None = self._lists.get(cache_key)
        if cached is not None:
            return UploadPage(list(cached.uploads), cached.next_page_token)
        generation = self._lists.generation
        params: dict[str, Any] = {"owner": owner, "limit": size + 1}
        if page_token:
            params["cursor_created"], params["cursor_id"] = decode_page_token(page_token)
        async with self._reader.connect() as conn:
            rows = (await conn.execute(_list_statement(bool(page_token)), params)).all()
        records: list[UploadRecord] = []
        for row in rows:
            if not records or records[-1].upload_id != row.id:
                records.append(
                    UploadRecord(
                        row.id, row.owner, [], row.total_size_bytes, as_utc(row.created_at)
                    )
                )
            if row.storage_key is not None:
                records[-1].files.append(
                    StoredFile(
                        name=row.name,
                        size_bytes=row.size_bytes,
                        sha256=row.sha256,
                        uri=self.storage.uri(row.storage_key),
                        local_path=self.storage.local_path(row.storage_key),
                    )
                )
        more = len(records) > size
        records = records[:size]
        token = encode_page_token(records[-1].created_at, records[-1].upload_id) if more else ""
        self._lists.put(cache_key, generation, UploadPage(list(records), token))
        return UploadPage(records, token)

    def _write(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        """A transaction that changes what `_lists` caches (see ReadCache.writing)."""
        return self._lists.writing(self._sessions)

    # deleting -----------------------------------------------------------------------------

    async def delete(self, upload_id: str, owner: str) -> None:
        async with self._sessions() as session:
            row = await self._owned(session, upload_id, owner)
            upload_id = row.id
        self._active.add(upload_id)
        try:
            await self._write_marker(upload_id, "delete", owner)
            async with self._write() as session:
                await session.execute(
                    sql_delete(UploadFile).where(UploadFile.upload_id == upload_id)
                )
                await session.execute(sql_delete(Upload).where(Upload.id == upload_id))
            try:
                await self.storage.delete_prefix(f"{upload_id}/")
                await self.storage.delete(self._marker(upload_id))
            except Exception:
                # The upload is gone for everyone; its marker lets the sweep finish the job.
                log.warning("upload.delete_deferred_to_sweep", upload_id=upload_id, exc_info=True)
        finally:
            self._active.discard(upload_id)
        log.info("upload.deleted", upload_id=upload_id)

    # sweeping -----------------------------------------------------------------------------

    async def _exists(self, upload_id: str) -> bool:
        async with self._sessions() as session:
            found = await session.scalar(select(Upload.id).where(Upload.id == upload_id))
        return found is not None

    async def sweep(self) -> list[str]:
        """Remove what interrupted uploads and deletes left behind; returns their upload ids."""
        cutoff = utcnow() - self.orphan_grace
        removed: list[str] = []
        markers = [info async for info in self.storage.list_blobs(PENDING)]
        for info in markers:
            upload_id = info.key[len(PENDING) :]
            if _canonical_id(upload_id) != upload_id or "/" in upload_id:
                log.warning("upload.sweep_skipped_unknown_marker", key=info.key)
                continue
            if upload_id in self._active or info.modified > cutoff:
                continue
            if not await self._exists(upload_id):
                await self.storage.delete_prefix(f"{upload_id}/")
                removed.append(upload_id)
            await self.storage.delete(info.key)
        aborted = await self.storage.abort_incomplete_writes(
            cutoff, keep=[f"{i}/" for i in self._active]
        )
        if removed or aborted:
            log.info("upload.swept", uploads=removed, aborted_writes=aborted)
        return removed


@cache
def _list_statement(after_cursor: bool) -> Select[Any]:
    """A user's page of uploads (newest first, one more than a page: bound `owner`, `limit`,
    after `cursor_created`/`cursor_id`) with their files joined in order, built once: plain
    rows from one query instead of ORM objects and a select-in load per request."""
    page = select(Upload.id, Upload.owner, Upload.total_size_bytes, Upload.created_at).where(
        Upload.owner == bindparam("owner")
    )
    if after_cursor:
        created = bindparam("cursor_created", type_=Upload.created_at.type)
        last_id = bindparam("cursor_id", type_=Upload.id.type)
        page = page.where(
            or_(
                Upload.created_at < created, and_(Upload.created_at == created, Upload.id < last_id)
            )
        )
    page = page.order_by(Upload.created_at.desc(), Upload.id.desc())
    rows = page.limit(bindparam("limit", type_=UploadFile.position.type)).subquery("page")
    return (
        select(
            rows,
            UploadFile.name,
            UploadFile.size_bytes,
            UploadFile.sha256,
            UploadFile.storage_key,
        )
        .outerjoin(UploadFile, UploadFile.upload_id == rows.c.id)
        .order_by(rows.c.created_at.desc(), rows.c.id.desc(), UploadFile.position)
    )


# --------------------------------------------------------------------------------------------


class _Ingest:
    """One upload in progress."""

    def __init__(self, store: UploadStore, owner: str) -> None:
        self.store = store
        self.storage = store.storage
        self.limits = store.limits
        self.owner = owner
        self.upload_id = str(uuid.uuid4())
        self.names = UniqueNames()
        self.files: list[tuple[str, str, int, str]] = []  # name, key, size, sha256
        self.total = 0
        self.body_bytes = 0
        self.writer: BlobWriter | None = None
        self.current: str | None = None
        self.current_size = 0
        self.in_field: str | None = None
        self.field_bytes = 0
        self.marker_written = False
        self.insert_attempted = False
        self.heartbeat: asyncio.Task[None] | None = None
        self.heartbeat_stop = asyncio.Event()

    # the request stream -------------------------------------------------------------------

    async def consume(self, chunks: AsyncIterable[BodyChunk | NamedChunk]) -> None:
        decoder: MultipartDecoder | None = None
        mode: type[BodyChunk] | type[NamedChunk] | None = None
        async for chunk in chunks:
            if mode is not None and not isinstance(chunk, mode):
                raise InvalidArgument(
                    "one upload stream carries either http_body chunks or file chunks, not both",
                    reason="MIXED_UPLOAD_STREAM",
                )
            if isinstance(chunk, BodyChunk):
                self.body_bytes += len(chunk.data)
                if decoder is None:
                    if not chunk.content_type and not chunk.data:
                        continue  # an empty first message: wait for the body
                    decoder = MultipartDecoder(chunk.content_type, MULTIPART_HINT)
                    mode = BodyChunk
                for event in decoder.feed(chunk.data):
                    if isinstance(event, PartData):
                        await self._part_data(event.data)
                    elif isinstance(event, PartStart):
                        await self._part_start(event)
                    elif isinstance(event, PartEnd):
                        await self._end_file()
            else:
                mode = NamedChunk
                if not chunk.filename:
                    raise InvalidArgument(
                        "every file chunk needs a filename",
                        violations=[FieldViolation("file.filename", "is required")],
                    )
                self.body_bytes += len(chunk.data)
                if chunk.filename != self.current:
                    await self._end_file()
                    await self._start_file(chunk.filename)
                await self._write(chunk.data)
        if decoder is not None and self.body_bytes:
            decoder.finish()
        await self._end_file()

    async def _part_start(self, event: PartStart) -> None:
        if event.filename is None:
            self.in_field, self.field_bytes = event.field, 0
            return
        await self._start_file(event.filename)

    async def _part_data(self, data: memoryview) -> None:
        if self.in_field is not None:
            self.field_bytes += len(data)
            if self.field_bytes > MAX_FIELD_BYTES:
                raise InvalidArgument(
                    f"form field {self.in_field!r} has no filename and is larger than "
                    f"{_size(MAX_FIELD_BYTES)}; only file parts are stored: send files with a "
                    "filename (`curl -F name=@file`, not `-F name=<file`)",
                    reason="FIELD_TOO_LARGE",
                )
            return
        if self.writer is not None:
            await self._write(data)

    # files --------------------------------------------------------------------------------

    async def _start_file(self, raw_name: str) -> None:
        if len(self.files) + 1 > self.limits.max_files:
            raise ResourceExhausted(
                f"the upload has more than {self.limits.max_files} files (limit max_files, "
                "TRAINYARD_UPLOAD_MAX_FILES); send the rest as another upload",
                reason="TOO_MANY_FILES",
                metadata={"limit": "max_files", "limit_value": str(self.limits.max_files)},
                http_status=413,
            )
        name = self.names.claim(sanitize_filename(raw_name))
        if not self.marker_written:
            self.store._active.add(self.upload_id)
            self.marker_written = True
            await self.store._write_marker(self.upload_id, "ingest", self.owner)
            if self.store.orphan_grace.total_seconds() > 0:
                self.heartbeat = asyncio.create_task(
                    self.store._heartbeat(self.upload_id, self.owner, self.heartbeat_stop)
                )
        self.writer = await self.storage.open_writer(f"{self.upload_id}/{name}")
        self.current = raw_name
        self.current_size = 0
        self.in_field = None

    async def _write(self, data: bytes | memoryview) -> None:
        assert self.writer is not None
        size = len(data)
        if self.current_size + size > self.limits.max_file_bytes:
            raise ResourceExhausted(
                f"file {self.current!r} is larger than the limit of "
                f"{_size(self.limits.max_file_bytes)} (max_file_bytes, "
                "TRAINYARD_UPLOAD_MAX_FILE_BYTES); split it into smaller files",
                reason="FILE_TOO_LARGE",
                metadata={
                    "limit": "max_file_bytes",
                    "limit_value": str(self.limits.max_file_bytes),
                },
                http_status=413,
            )
        if self.total + size > self.limits.max_total_bytes:
            raise ResourceExhausted(
                f"the upload is larger than the limit of {_size(self.limits.max_total_bytes)} "
                "in all (max_total_bytes, TRAINYARD_UPLOAD_MAX_TOTAL_BYTES); split it into "
                "several uploads",
                reason="UPLOAD_TOO_LARGE",
                metadata={
                    "limit": "max_total_bytes",
                    "limit_value": str(self.limits.max_total_bytes),
                },
                http_status=413,
            )
        self.current_size += size
        self.total += size
        await self.writer.write(data)

    async def _end_file(self) -> None:
        self.in_field = None
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        blob = await writer.commit()
        name = blob.key.split("/", 1)[1]
        self.files.append((name, blob.key, blob.size, blob.sha256))

    # outcome ------------------------------------------------------------------------------

    async def commit(self) -> UploadRecord:
        if not self.files:
            if self.body_bytes == 0:
                raise InvalidArgument(
                    "the upload is empty: " + MULTIPART_HINT, reason="EMPTY_UPLOAD"
                )
            raise InvalidArgument(
                "the request holds no file part (a part with a filename): " + MULTIPART_HINT,
                reason="EMPTY_UPLOAD",
            )
        row = Upload(
            id=self.upload_id,
            owner=self.owner,
            file_count=len(self.files),
            total_size_bytes=self.total,
            created_at=utcnow(),
        )
        row.files = [
            UploadFile(position=i, name=name, storage_key=key, size_bytes=size, sha256=digest)
            for i, (name, key, size, digest) in enumerate(self.files)
        ]
        self.insert_attempted = True
        async with self.store._write() as session:
            session.add(row)
        await self.stop_heartbeat()
        try:
            await self.storage.delete(self.store._marker(self.upload_id))
        except Exception:
            log.warning("upload.marker_not_removed", upload_id=self.upload_id, exc_info=True)
        log.info(
            "upload.stored",
            upload_id=self.upload_id,
            owner=self.owner,
            files=len(self.files),
            bytes=self.total,
        )
        return self.store._record(row)

    async def discard(self) -> None:
        """Undo a failed upload; whatever cannot be undone now is left to the sweep."""
        try:
            await self.stop_heartbeat()
            if self.writer is not None:
                await self.writer.abort()
                self.writer = None
            if self.insert_attempted:
                # The insert may have committed before failing: only a confirmed absence of
                # the record allows deleting its files.
                async with self.store._write() as session:
                    await session.execute(sql_delete(Upload).where(Upload.id == self.upload_id))
            if self.marker_written:
                await self.storage.delete_prefix(f"{self.upload_id}/")
                await self.storage.delete(self.store._marker(self.upload_id))
        except Exception:
            log.warning("upload.cleanup_deferred_to_sweep", upload_id=self.upload_id, exc_info=True)

    async def stop_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat_stop.set()
            # wait(), not await: when the RPC is cancelled again while the shielded discard
            # runs, finish() cancels the heartbeat, and awaiting it would raise CancelledError
            # into the discard, leaving the files to the sweep.
            await asyncio.wait([self.heartbeat])
            self.heartbeat = None

    def finish(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        self.store._active.discard(self.upload_id)
