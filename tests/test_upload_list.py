"""The upload list is one query of plain rows: every upload of a page with all its files in
order, exactly as GetUpload returns each, on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.test_upload_store import stream
from trainyard.upload.store import NamedChunk, UploadStore, _list_statement


async def test_list_matches_get_for_every_upload(store: UploadStore) -> None:
    for n in (3, 1, 5, 2):
        names = [f"z{i}.csv" if i % 2 else f"a{i}.csv" for i in range(n)]  # not sorted
        await store.ingest("alice", stream([NamedChunk(name, name.encode()) for name in names]))
    await store.ingest("bob", stream([NamedChunk("b.csv", b"b")]))
    for size in (1, 3, 4, 50):
        listed = []
        token = ""
        while True:
            page = await store.list_uploads("alice", page_size=size, page_token=token)
            listed += page.uploads
            token = page.next_page_token
            if not token:
                break
        assert [len(r.files) for r in listed] == [2, 5, 1, 3], size  # newest first
        for record in listed:
            assert record == await store.get(record.upload_id, "alice")


def test_the_list_statement_is_built_once() -> None:
    assert _list_statement(True) is _list_statement(True)
    assert _list_statement(False) is not _list_statement(True)


async def test_a_write_is_seen_by_the_next_list(store: UploadStore) -> None:
    assert (await store.list_uploads("carol")).uploads == []
    assert (await store.list_uploads("carol")).uploads == []  # now cached
    record = await store.ingest("carol", stream([NamedChunk("c.csv", b"c")]))
    assert [u.upload_id for u in (await store.list_uploads("carol")).uploads] == [record.upload_id]
    await store.delete(record.upload_id, "carol")
    assert (await store.list_uploads("carol")).uploads == []
