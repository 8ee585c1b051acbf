"""Blobs as files under a local directory (the embedded default)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainyard.blobs.base import (
    READ_CHUNK_BYTES,
    BlobInfo,
    BlobNotFound,
    BlobStorage,
    BlobWriter,
    MiB,
    StoredBlob,
    check_key,
    check_prefix,
)

LOCAL_FLUSH_BYTES = MiB

_TEMP_NAME = re.compile(r"\.[0-9a-f]{16}\.partial")


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
        job = asyncio.get_running_loop().run_in_executor(None, _LocalWriter.create, key, final)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            # The thread creates the temp file all the same: remove it once it has, or it
            # would outlive the caller's cleanup (an upload whose client went away).
            job.add_done_callback(_remove_created)
            raise

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
        prefix = check_prefix(prefix)
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
        prefix = check_prefix(prefix)
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


def _remove_created(job: asyncio.Future[_LocalWriter]) -> None:
    if not job.cancelled() and job.exception() is None:
        job.result()._remove()


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
