"""The local-directory backend: keys confined to the root, atomic hashed writes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path

import pytest

from tests.support.wait import wait_until
from trainyard.blobs import BlobNotFound, LocalBlobStorage, check_key


@pytest.mark.parametrize("key", ["", "/abs", "../x", "a/../b", "a//b", "a/./b", "a\x00b", "a\\b"])
def test_blob_keys_never_leave_the_root(key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        check_key(key)


async def test_local_writer_is_atomic_and_hashes(tmp_path: Path) -> None:
    storage = LocalBlobStorage(tmp_path / "root")
    await storage.start()
    writer = await storage.open_writer("u1/data.bin")
    payload = os.urandom(3 * 1024 * 1024 + 17)
    for i in range(0, len(payload), 100_000):
        await writer.write(payload[i : i + 100_000])
    target = tmp_path / "root" / "u1" / "data.bin"
    assert not target.exists(), "nothing is visible before commit"
    blob = await writer.commit()
    assert blob.size == len(payload)
    assert blob.sha256 == hashlib.sha256(payload).hexdigest()
    assert target.read_bytes() == payload
    assert os.listdir(target.parent) == ["data.bin"], "no temp file left"
    assert b"".join([c async for c in storage.read("u1/data.bin")]) == payload
    assert [b.key async for b in storage.list_blobs("u1/")] == ["u1/data.bin"]
    assert await storage.exists("u1/data.bin") and not await storage.exists("u1/nope")

    aborted = await storage.open_writer("u1/other.bin")
    await aborted.write(os.urandom(2 * 1024 * 1024))
    await aborted.abort()
    assert os.listdir(target.parent) == ["data.bin"]

    await storage.delete_prefix("u1/")
    assert not target.parent.exists()
    with pytest.raises(BlobNotFound):
        [c async for c in storage.read("u1/data.bin")]


async def test_local_storage_refuses_symlinked_folders_out_of_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    storage = LocalBlobStorage(tmp_path / "root")
    await storage.start()
    (tmp_path / "root" / "evil").symlink_to(outside)
    with pytest.raises(ValueError, match="leaves the storage root"):
        await storage.open_writer("evil/x.txt")
    assert list(outside.iterdir()) == []


async def test_a_writer_opened_by_a_cancelled_task_leaves_no_file(tmp_path: Path) -> None:
    """The thread that creates a writer's temp file runs on when its caller is cancelled (a
    client gone mid-upload): the file it creates is removed once it exists."""
    storage = LocalBlobStorage(tmp_path / "root")
    await storage.start()
    for _ in range(20):  # the cancel lands before the thread is done, at least sometimes
        task = asyncio.create_task(storage.open_writer("up/1/big.bin"))
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            writer = await task
            await writer.abort()

    def leftovers() -> list[Path]:
        return [p for p in (tmp_path / "root").rglob("*") if p.is_file()]

    await wait_until(lambda: leftovers() == [], 5, "no temp file left")
