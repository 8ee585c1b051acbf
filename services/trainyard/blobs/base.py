"""The blob storage interface: keys, writers, storages and their errors.

Keys are relative, `/`-separated paths (`<upload-id>/train.csv`); a storage object is rooted at a
directory or an S3 prefix and never touches anything outside it. Writes stream: a `BlobWriter`
hashes (SHA-256) and stores the bytes as they come, and the object only appears under its key on
`commit()` (local: a temp file in the target directory, fsynced and renamed; S3: PutObject or a
multipart upload completed at the end). `abort()` leaves nothing behind.
"""

from __future__ import annotations

import errno
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

MiB = 1024 * 1024
READ_CHUNK_BYTES = MiB


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


def check_prefix(prefix: str) -> str:
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


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC/EDQUOT: the storage, not the request, is at fault."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
