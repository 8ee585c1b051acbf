"""Blob storage behind one interface: a local directory (embedded default) or S3 via aioboto3.

Keys are relative, `/`-separated paths (`<upload-id>/train.csv`); a storage object is rooted at a
directory or an S3 prefix and never touches anything outside it. Writes stream: a `BlobWriter`
hashes (SHA-256) and stores the bytes as they come, and the object only appears under its key on
`commit()` (local: a temp file in the target directory, fsynced and renamed; S3: PutObject or a
multipart upload completed at the end). `abort()` leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
READ_CHUNK_BYTES = MiB
LOCAL_FLUSH_BYTES = MiB
S3_PART_BYTES = 8 * MiB
S3_MAX_PART_BYTES = 5 * 1024 * MiB
S3_MAX_PARTS = 10_000

Backend = Literal["local", "s3"]

_TEMP_NAME = re.compile(r"\.[0-9a-f]{16}\.partial")


class StorageSettings(BaseSettings):
    """Where blobs live (TRAINYARD_STORAGE_BACKEND, TRAINYARD_S3_*); shared by every service."""

    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", extra="ignore")

    storage_backend: Backend = Field(
        default="local", description="`local` (a directory in DATA_DIR) or `s3`."
    )
    s3_bucket: str | None = Field(default=None, description="Bucket for the s3 backend.")
    s3_prefix: str = Field(
        default="", description="Key prefix inside the bucket, e.g. `trainyard/`."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, moto, ...); unset for AWS S3."
    )
    s3_region: str | None = Field(default=None, description="Region; unset uses the AWS default.")

    @field_validator("s3_bucket", "s3_endpoint_url", "s3_region", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class BlobNotFound(LookupError):
    """No object under the key."""


@dataclass(frozen=True)
class StoredBlob:
    """A committed object: its key, size and hex SHA-256."""

    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class BlobInfo:
    """An object found by `list`."""

    key: str
    size: int
    modified: datetime


def check_key(key: str) -> list[str]:
    """The segments of a valid key; ValueError for absolute keys, empty, `.` or `..` segments,
    NUL or backslashes (a key must never name anything outside the storage's root)."""
    if not key or key.startswith("/") or "\x00" in key or "\\" in key:
        raise ValueError(f"invalid blob key {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid blob key {key!r}")
    return parts


def _check_prefix(prefix: str) -> str:
    """A listing/deletion prefix is "" or a key-like path ending in `/` (a folder)."""
    if prefix == "":
        return prefix
    if not prefix.endswith("/"):
        raise ValueError(f"a prefix must end with '/': {prefix!r}")
    check_key(prefix[:-1])
    return prefix


class BlobWriter(ABC):
    """Streams one object. Pass bytes (or views of bytes) that are not modified afterwards."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.size = 0

    @abstractmethod
    async def write(self, data: bytes | memoryview) -> None: ...

    @abstractmethod
    async def commit(self) -> StoredBlob:
        """Make the object visible under its key, atomically; returns its size and SHA-256."""

    @abstractmethod
    async def abort(self) -> None:
        """Drop everything written so far; safe to call more than once and after a failure."""


class BlobStorage(ABC):
    """Objects under one root directory or S3 prefix."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections / create the root; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abstractmethod
    async def open_writer(self, key: str) -> BlobWriter: ...

    async def put_bytes(self, key: str, data: bytes) -> StoredBlob:
        writer = await self.open_writer(key)
        try:
            await writer.write(data)
            return await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    @abstractmethod
    def read(self, key: str, chunk_size: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The object's bytes in chunks of at most chunk_size; BlobNotFound if it is missing."""

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Delete one object; a missing object is fine."""

    @abstractmethod
    async def delete_prefix(self, prefix: str) -> None:
        """Delete every object (and unfinished write) under a folder prefix ending in `/`."""

    @abstractmethod
    def list_blobs(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Committed objects under a folder prefix ("" = everything), in no particular order."""

    async def abort_incomplete_writes(
        self, older_than: datetime, keep: Sequence[str] = ()
    ) -> list[str]:
        """Abort unfinished writes started before `older_than` whose key does not start with one
        of `keep`; returns their keys. Only S3 keeps such state (multipart uploads)."""
        return []

    @abstractmethod
    def uri(self, key: str) -> str:
        """file:///... or s3://bucket/key."""

    def local_path(self, key: str) -> Path | None:
        """The object's path when it is a file on this machine, else None."""
        return None


# --------------------------------------------------------------------------------------------
# Local directory


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStorage(BlobStorage):
    """Objects as files under `root`; keys are paths relative to it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # The platform's alone: no workload (another OS user) may read what it holds.
        with contextlib.suppress(PermissionError):
            self.root.chmod(0o700)

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*check_key(key))
        # Refuse to follow a symlinked folder out of the root.
        real_parent = Path(os.path.realpath(path.parent))
        if not real_parent.is_relative_to(self.root):
            raise ValueError(f"blob key {key!r} leaves the storage root")
        return path

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    async def open_writer(self, key: str) -> BlobWriter:
        final = self._path(key)
        return await asyncio.to_thread(_LocalWriter.create, key, final)

    async def read(self, key: str, chunk_size: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            fh = await asyncio.to_thread(open, path, "rb", buffering=0)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BlobNotFound(key) from exc
        loop = asyncio.get_running_loop()
        close_now = True
        try:
            while True:
                job = loop.run_in_executor(None, fh.read, chunk_size)
                try:
                    chunk: bytes = await asyncio.shield(job)
                except asyncio.CancelledError:
                    # Never close the file under a read still running in its thread.
                    close_now = False
                    job.add_done_callback(lambda _: fh.close())
                    raise
                if not chunk:
                    return
                yield chunk
        finally:
            if close_now:
                fh.close()

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def delete_prefix(self, prefix: str) -> None:
        prefix = _check_prefix(prefix)
        if prefix == "":
            raise ValueError("refusing to delete the whole storage root")
        folder = self._path(prefix[:-1])

        def remove() -> None:
            if folder.is_symlink():
                folder.unlink()
            elif folder.is_dir():
                shutil.rmtree(folder)
            else:
                return
            _fsync_dir(folder.parent)

        await asyncio.to_thread(remove)

    async def list_blobs(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        prefix = _check_prefix(prefix)
        top = self._path(prefix[:-1]) if prefix else self.root

        def walk() -> list[BlobInfo]:
            found: list[BlobInfo] = []
            for dirpath, _dirs, files in os.walk(top):  # does not follow symlinks
                for name in files:
                    path = Path(dirpath, name)
                    if _LocalWriter.is_temp(name):
                        continue
                    try:
                        st = path.lstat()
                    except FileNotFoundError:
                        continue
                    found.append(
                        BlobInfo(
                            key=path.relative_to(self.root).as_posix(),
                            size=st.st_size,
                            modified=datetime.fromtimestamp(st.st_mtime, UTC),
                        )
                    )
            return found

        for info in await asyncio.to_thread(walk):
            yield info


class _LocalWriter(BlobWriter):
    """A temp file beside the target, `.<16 hex>.partial`, renamed over it on commit.

    File work runs in worker threads, one job at a time; a job keeps running when the task
    that awaits it is cancelled, so abort() leaves the file alone until that job is over."""

    TEMP_SUFFIX = ".partial"

    def __init__(self, key: str, final: Path, tmp: Path, fd: int) -> None:
        super().__init__(key)
        self._final = final
        self._tmp = tmp
        self._fd: int | None = fd
        self._hash = hashlib.sha256()
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._job: asyncio.Future[None] | None = None
        self._renamed = False
        self._closed = False

    @classmethod
    def is_temp(cls, name: str) -> bool:
        return _TEMP_NAME.fullmatch(name) is not None

    @classmethod
    def create(cls, key: str, final: Path) -> _LocalWriter:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{secrets.token_hex(8)}{cls.TEMP_SUFFIX}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(tmp, flags, 0o640)
        return cls(key, final, tmp, fd)

    # worker-thread jobs ------------------------------------------------------------------

    def _write_pieces(self, pieces: list[bytes | memoryview]) -> None:
        assert self._fd is not None
        for piece in pieces:
            self._hash.update(piece)
            _write_all(self._fd, piece)

    def _finish(self, pieces: list[bytes | memoryview]) -> None:
        assert self._fd is not None
        self._write_pieces(pieces)
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        os.replace(self._tmp, self._final)
        self._renamed = True
        _fsync_dir(self._final.parent)

    def _remove(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            (self._final if self._renamed else self._tmp).unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------

    async def _wait_job(self) -> None:
        if self._job is not None:
            await asyncio.shield(self._job)
            self._job = None

    async def _start_job(self, fn: Any, pieces: list[bytes | memoryview]) -> None:
        await self._wait_job()
        self._job = asyncio.get_running_loop().run_in_executor(None, fn, pieces)

    async def write(self, data: bytes | memoryview) -> None:
        if self._closed:
            raise RuntimeError(f"writer for {self.key!r} is closed")
        if not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.size += len(data)
        if self._pending_bytes >= LOCAL_FLUSH_BYTES:
            pieces, self._pending, self._pending_bytes = self._pending, [], 0
            # One job in flight: a thread hashes and writes while the loop receives more.
            await self._start_job(self._write_pieces, pieces)

    async def commit(self) -> StoredBlob:
        if self._closed:
            raise RuntimeError(f"writer for {self.key!r} is closed")
        try:
            pieces, self._pending = self._pending, []
            await self._start_job(self._finish, pieces)
            await self._wait_job()
        except BaseException:
            await self.abort()
            raise
        self._closed = True
        return StoredBlob(self.key, self.size, self._hash.hexdigest())

    async def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending = []
        job, self._job = self._job, None
        if job is not None:
            try:
                await asyncio.shield(job)
            except asyncio.CancelledError:
                # Cancelled while the thread still uses the file: clean up once it is done.
                job.add_done_callback(lambda _: self._remove())
                raise
            except Exception:
                pass  # the failure was reported to whoever awaited the job
        self._remove()


# --------------------------------------------------------------------------------------------
# S3


class S3BlobStorage(BlobStorage):
    """Objects under `prefix` in an S3 bucket, through one aioboto3 client."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        part_bytes: int = S3_PART_BYTES,
    ) -> None:
        if part_bytes < 5 * MiB:
            raise ValueError("S3 multipart parts must be at least 5 MiB")
        self.bucket = bucket
        self.prefix = "/".join(p for p in prefix.split("/") if p)
        if self.prefix:
            self.prefix += "/"
        self.endpoint_url = endpoint_url
        self.region = region
        self.part_bytes = part_bytes
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3BlobStorage.start() was not called")
        return self._client

    async def start(self) -> None:
        import aioboto3
        from botocore.exceptions import BotoCoreError, ClientError

        session = aioboto3.Session()
        self._client = await self._stack.enter_async_context(
            session.client("s3", endpoint_url=self.endpoint_url, region_name=self.region)
        )
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            await self.close()
            raise RuntimeError(
                f"S3 bucket {self.bucket!r} is not reachable"
                f"{' at ' + self.endpoint_url if self.endpoint_url else ''}: {exc}; check "
                "TRAINYARD_S3_BUCKET, TRAINYARD_S3_ENDPOINT_URL and the AWS credentials"
            ) from exc

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    def full_key(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) :]

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.full_key(key)}"

    async def open_writer(self, key: str) -> BlobWriter:
        return _S3Writer(self, key, self.full_key(key))

    async def read(self, key: str, chunk_size: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
        from botocore.exceptions import ClientError

        try:
            resp = await self.client.get_object(Bucket=self.bucket, Key=self.full_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise BlobNotFound(key) from exc
            raise
        body = resp["Body"]
        try:
            async for chunk in body.iter_chunks(chunk_size):
                if chunk:
                    yield chunk
        finally:
            body.close()

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            await self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise
        return True

    async def delete(self, key: str) -> None:
        await self.client.delete_object(Bucket=self.bucket, Key=self.full_key(key))

    async def _full_keys(self, full_prefix: str) -> AsyncIterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            for obj in page.get("Contents", []):
                yield obj

    async def _multipart_uploads(self, full_prefix: str) -> AsyncIterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            for upload in page.get("Uploads", []):
                yield upload

    async def delete_prefix(self, prefix: str) -> None:
        prefix = _check_prefix(prefix)
        if prefix == "":
            raise ValueError("refusing to delete the whole storage prefix")
        full_prefix = self.prefix + prefix
        async for upload in self._multipart_uploads(full_prefix):
            await self.abort_multipart(upload["Key"], upload["UploadId"])
        batch: list[dict[str, str]] = []
        async for obj in self._full_keys(full_prefix):
            batch.append({"Key": obj["Key"]})
            if len(batch) == 1000:
                await self._delete_batch(batch)
                batch = []
        if batch:
            await self._delete_batch(batch)

    async def _delete_batch(self, batch: list[dict[str, str]]) -> None:
        resp = await self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
        )
        errors = resp.get("Errors") or []
        if errors:
            first = errors[0]
            raise OSError(
                f"S3 refused to delete {len(errors)} object(s), e.g. {first.get('Key')!r}: "
                f"{first.get('Code')} {first.get('Message')}"
            )

    async def abort_multipart(self, full_key: str, upload_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise

    async def list_blobs(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        prefix = _check_prefix(prefix)
        async for obj in self._full_keys(self.prefix + prefix):
            modified: datetime = obj["LastModified"]
            if modified.tzinfo is None:
                modified = modified.replace(tzinfo=UTC)
            yield BlobInfo(key=self._relative(obj["Key"]), size=int(obj["Size"]), modified=modified)

    async def abort_incomplete_writes(
        self, older_than: datetime, keep: Sequence[str] = ()
    ) -> list[str]:
        aborted: list[str] = []
        async for upload in self._multipart_uploads(self.prefix):
            key = self._relative(upload["Key"])
            initiated: datetime = upload["Initiated"]
            if initiated.tzinfo is None:
                initiated = initiated.replace(tzinfo=UTC)
            if initiated >= older_than or any(key.startswith(k) for k in keep):
                continue
            await self.abort_multipart(upload["Key"], upload["UploadId"])
            aborted.append(key)
        return aborted


class _S3Writer(BlobWriter):
    """PutObject for objects smaller than one part, else a multipart upload; one part uploads
    while the next one fills."""

    def __init__(self, storage: S3BlobStorage, key: str, full_key: str) -> None:
        super().__init__(key)
        self._s3 = storage
        self._full_key = full_key
        self._hash = hashlib.sha256()
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._inflight: asyncio.Task[None] | None = None
        self._closed = False

    def _part_limit(self) -> int:
        # Parts grow as the object does, so 10,000 parts cover objects far beyond 50 GiB.
        doubling = len(self._parts) // 1000
        return int(min(self._s3.part_bytes * (2**doubling), S3_MAX_PART_BYTES))

    def _take(self) -> bytes:
        pieces, self._pending, self._pending_bytes = self._pending, [], 0
        return b"".join(pieces)

    async def _send_part(self, number: int, body: bytes) -> None:
        await asyncio.to_thread(self._hash.update, body)
        resp = await self._s3.client.upload_part(
            Bucket=self._s3.bucket,
            Key=self._full_key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
        )
        self._parts.append({"ETag": resp["ETag"], "PartNumber": number})

    async def _drain(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def _flush_part(self) -> None:
        body = self._take()
        await self._drain()
        if self._upload_id is None:
            resp = await self._s3.client.create_multipart_upload(
                Bucket=self._s3.bucket, Key=self._full_key
            )
            self._upload_id = resp["UploadId"]
        number = len(self._parts) + 1
        if number > S3_MAX_PARTS:
            raise OSError(f"object {self.key!r} needs more than {S3_MAX_PARTS} parts")
        self._inflight = asyncio.create_task(self._send_part(number, body))

    async def write(self, data: bytes | memoryview) -> None:
        if self._closed:
            raise RuntimeError(f"writer for {self.key!r} is closed")
        if not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.size += len(data)
        if self._pending_bytes >= self._part_limit():
            await self._flush_part()

    async def commit(self) -> StoredBlob:
        if self._closed:
            raise RuntimeError(f"writer for {self.key!r} is closed")
        try:
            if self._upload_id is None:
                body = self._take()
                await asyncio.to_thread(self._hash.update, body)
                await self._s3.client.put_object(
                    Bucket=self._s3.bucket, Key=self._full_key, Body=body
                )
            else:
                if self._pending_bytes:
                    await self._flush_part()
                await self._drain()
                await self._s3.client.complete_multipart_upload(
                    Bucket=self._s3.bucket,
                    Key=self._full_key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": sorted(self._parts, key=lambda p: p["PartNumber"])},
                )
        except BaseException:
            await self.abort()
            raise
        self._closed = True
        return StoredBlob(self.key, self.size, self._hash.hexdigest())

    async def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending = []
        if self._inflight is not None:
            self._inflight.cancel()
            with contextlib.suppress(BaseException):
                await self._inflight
            self._inflight = None
        if self._upload_id is not None:
            with contextlib.suppress(Exception):
                await self._s3.abort_multipart(self._full_key, self._upload_id)


# --------------------------------------------------------------------------------------------


def create_blob_storage(
    settings: StorageSettings, *, namespace: str, local_root: Path
) -> BlobStorage:
    """The configured backend for one use (`namespace`, e.g. "uploads"): the local backend keeps
    it in `local_root`, the S3 backend under `<s3_prefix>/<namespace>/` in the bucket."""
    check_key(namespace)
    if settings.storage_backend == "local":
        return LocalBlobStorage(local_root)
    if not settings.s3_bucket:
        raise ValueError("TRAINYARD_S3_BUCKET must be set when TRAINYARD_STORAGE_BACKEND is s3")
    return S3BlobStorage(
        settings.s3_bucket,
        f"{settings.s3_prefix.strip('/')}/{namespace}",
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
    )


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC/EDQUOT: the storage, not the request, is at fault."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
