"""The upload store on SQLite and PostgreSQL with local blobs: ingest, owner-only access,
paging, deletion, all-or-nothing failures and the sweep of interrupted uploads."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.upload_service import STORE_LIMITS
from tests.support.wait import wait_until
from trainyard.runtime.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from trainyard.upload.store import BodyChunk, NamedChunk, UploadStore

LIMITS = STORE_LIMITS


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


async def stream(items: Iterable[BodyChunk | NamedChunk]) -> AsyncIterator[BodyChunk | NamedChunk]:
    for item in items:
        yield item


def multipart_chunks(parts: list[tuple[str, bytes]], step: int) -> list[BodyChunk]:
    body = b""
    for filename, data in parts:
        body += (
            (
                f'--xx\r\nContent-Disposition: form-data; name="f"; filename="{filename}"\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    body += b"--xx--\r\n"
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    return [
        BodyChunk("multipart/form-data; boundary=xx" if i == 0 else "", c)
        for i, c in enumerate(chunks)
    ]


async def test_ingest_multipart_and_file_chunks(store: UploadStore, tmp_path: Path) -> None:
    a, b = os.urandom(300_000), b"x,y\n1,2\n"
    record = await store.ingest(
        "alice", stream(multipart_chunks([("../a.bin", a), ("b.csv", b), ("b.csv", b)], 4096))
    )
    assert [f.name for f in record.files] == ["a.bin", "b.csv", "b (1).csv"]
    assert [f.sha256 for f in record.files] == [hashlib.sha256(x).hexdigest() for x in (a, b, b)]
    assert record.total_size_bytes == len(a) + 2 * len(b)
    assert record.files[0].local_path == tmp_path / "blobs" / record.upload_id / "a.bin"
    assert record.files[0].local_path.read_bytes() == a

    native = await store.ingest(
        "alice",
        stream([NamedChunk("one.txt", b"hel"), NamedChunk("one.txt", b"lo"), NamedChunk("e", b"")]),
    )
    assert [(f.name, f.size_bytes) for f in native.files] == [("one.txt", 5), ("e", 0)]
    content = b"".join(
        [c async for c in await store.read_file(native.upload_id, "alice", "one.txt")]
    )
    assert content == b"hello"
    assert files_under(tmp_path / "blobs") == sorted(
        [f"{record.upload_id}/{n}" for n in ("a.bin", "b.csv", "b (1).csv")]
        + [f"{native.upload_id}/one.txt", f"{native.upload_id}/e"]
    ), "only committed files, no markers left"


async def test_owner_only_access(store: UploadStore) -> None:
    record = await store.ingest("alice", stream([NamedChunk("a.csv", b"1")]))
    assert (await store.get(record.upload_id, "alice")).files[0].name == "a.csv"
    with pytest.raises(PermissionDenied, match="belongs to another user"):
        await store.get(record.upload_id, "bob")
    with pytest.raises(PermissionDenied):
        await store.read_file(record.upload_id, "bob", "a.csv")
    with pytest.raises(PermissionDenied):
        await store.delete(record.upload_id, "bob")
    with pytest.raises(NotFound, match="does not exist"):
        await store.get("6f1c2a8e-0000-4000-8000-000000000000", "alice")
    with pytest.raises(NotFound):
        await store.get("not-a-uuid", "alice")
    with pytest.raises(NotFound, match=r"no file named 'b\.csv'"):
        await store.read_file(record.upload_id, "alice", "b.csv")
    with pytest.raises(InvalidArgument, match="owner is required"):
        await store.get(record.upload_id, "")


async def test_list_pages_newest_first_and_delete(store: UploadStore, tmp_path: Path) -> None:
    ids = [
        (await store.ingest("alice", stream([NamedChunk(f"{i}.csv", b"1")]))).upload_id
        for i in range(5)
    ]
    await store.ingest("bob", stream([NamedChunk("bob.csv", b"1")]))
    seen: list[str] = []
    token = ""
    while True:
        page = await store.list_uploads("alice", page_size=2, page_token=token)
        assert len(page.uploads) <= 2
        seen += [u.upload_id for u in page.uploads]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    assert len((await store.list_uploads("alice")).uploads) == 5
    with pytest.raises(InvalidArgument, match="page_token"):
        await store.list_uploads("alice", page_token="garbage!")
    with pytest.raises(InvalidArgument, match="page_size"):
        await store.list_uploads("alice", page_size=-1)

    await store.delete(ids[0], "alice")
    with pytest.raises(NotFound):
        await store.get(ids[0], "alice")
    assert not (tmp_path / "blobs" / ids[0]).exists()
    assert len((await store.list_uploads("alice")).uploads) == 4


async def failing_stream() -> AsyncIterator[BodyChunk | NamedChunk]:
    yield NamedChunk("good.csv", b"1" * 1000)
    yield NamedChunk("half.csv", os.urandom(2 << 20))
    raise ConnectionResetError("client went away")


async def test_a_failed_upload_leaves_nothing(store: UploadStore, tmp_path: Path) -> None:
    with pytest.raises(ConnectionResetError):
        await store.ingest("alice", failing_stream())
    with pytest.raises(ResourceExhausted, match="max_file_bytes") as too_big:
        await store.ingest(
            "alice", stream([NamedChunk("a", b"1"), NamedChunk("b", bytes(5 << 20))])
        )
    assert too_big.value.http_status == 413
    with pytest.raises(ResourceExhausted, match="max_total_bytes"):
        await store.ingest("alice", stream([NamedChunk(str(i), bytes(2 << 20)) for i in range(4)]))
    with pytest.raises(ResourceExhausted, match="more than 5 files"):
        await store.ingest("alice", stream([NamedChunk(str(i), b"1") for i in range(6)]))
    with pytest.raises(InvalidArgument, match="not both"):
        await store.ingest(
            "alice", stream([NamedChunk("a", b"1"), *multipart_chunks([("b", b"2")], 100)])
        )
    with pytest.raises(InvalidArgument, match="empty"):
        await store.ingest("alice", stream([]))
    assert (await store.list_uploads("alice")).uploads == []
    assert files_under(tmp_path / "blobs") == []


async def test_sweep_removes_what_an_interrupted_upload_left(
    store: UploadStore, tmp_path: Path
) -> None:
    root = tmp_path / "blobs"
    kept = await store.ingest("alice", stream([NamedChunk("kept.csv", b"1")]))
    # A process died mid-upload: marker, a committed file and a temp file, no record.
    orphan = "0b0e8a5c-1111-4222-8333-444455556666"
    (root / ".pending").mkdir(exist_ok=True)
    (root / ".pending" / orphan).write_text("{}")
    (root / orphan).mkdir()
    (root / orphan / "done.csv").write_bytes(b"1")
    (root / orphan / ".0123456789abcdef.partial").write_bytes(b"2")
    # ... and one died after inserting the record, before removing its marker.
    (root / ".pending" / kept.upload_id).write_text("{}")

    store.orphan_grace = timedelta(hours=1)
    assert await store.sweep() == [], "fresh markers are left alone"
    store.orphan_grace = timedelta(0)
    assert await store.sweep() == [orphan]
    assert files_under(root) == [f"{kept.upload_id}/kept.csv"]
    assert (await store.get(kept.upload_id, "alice")).files[0].name == "kept.csv"


@pytest.mark.parametrize("steps", range(4))
async def test_a_second_cancel_during_the_cleanup_still_removes_everything(
    store: UploadStore, tmp_path: Path, steps: int
) -> None:
    """The RPC of an upload whose client went away can be cancelled twice (the reset, then the
    server closing the call) while its shielded cleanup runs: the cleanup still finishes."""
    store.orphan_grace = timedelta(seconds=300)  # a live upload's marker heartbeat runs
    stuck = asyncio.Event()

    async def hanging() -> AsyncIterator[BodyChunk | NamedChunk]:
        yield NamedChunk("a.csv", b"1" * 1000)
        stuck.set()
        await asyncio.Event().wait()
        yield NamedChunk("never.csv", b"")

    task = asyncio.create_task(store.ingest("alice", hanging()))
    await stuck.wait()
    await wait_until(lambda: files_under(tmp_path / "blobs") != [], 5, "the first file stored")
    task.cancel()
    for _ in range(steps):  # each interleaving of the cleanup (shielded) with a second cancel
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    def removed() -> bool:
        try:
            return files_under(tmp_path / "blobs") == []
        except FileNotFoundError:  # a folder removed while it was listed
            return False

    await wait_until(removed, 5, "the upload's files and marker removed")
    assert (await store.list_uploads("alice")).uploads == []
