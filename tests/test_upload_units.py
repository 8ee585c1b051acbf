"""Upload building blocks without a server: file names, the multipart decoder, local blobs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from trainyard.runtime.errors import InvalidArgument
from trainyard.runtime.storage import (
    BlobNotFound,
    LocalBlobStorage,
    StorageSettings,
    check_key,
    create_blob_storage,
)
from trainyard.upload.filenames import MAX_NAME_BYTES, UniqueNames, sanitize_filename
from trainyard.upload.multipart import MultipartDecoder, PartData, PartEnd, PartStart
from trainyard.upload.settings import UploadSettings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("train.csv", "train.csv"),
        ("../../etc/passwd", "passwd"),
        ("/abs/path/data.json", "data.json"),
        ("C:\\Users\\me\\data.csv", "data.csv"),
        ("..\\..\\win.ini", "win.ini"),
        ("a\x00b.csv", "ab.csv"),
        ("tab\tand\nnewline.txt", "tabandnewline.txt"),
        ("..", "file"),
        (".", "file"),
        ("", "file"),
        ("dir/", "file"),
        ("  spaced name.csv  ", "spaced name.csv"),
        (".hidden", ".hidden"),
        ("résumé.txt", "résumé.txt"),
    ],
)
def test_sanitize_filename(raw: str, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_sanitize_caps_length_in_bytes_and_keeps_the_extension() -> None:
    long_ascii = sanitize_filename("x" * 1000 + ".csv")
    assert len(long_ascii.encode()) == MAX_NAME_BYTES and long_ascii.endswith(".csv")
    multibyte = sanitize_filename("é" * 400 + ".parquet")
    assert len(multibyte.encode()) <= MAX_NAME_BYTES
    assert multibyte.endswith(".parquet") and multibyte.startswith("é")
    multibyte.encode().decode()  # still valid UTF-8


def test_unique_names_within_an_upload() -> None:
    names = UniqueNames()
    got = [names.claim(n) for n in ("a.csv", "a.csv", "A.CSV", "b", "b", "a (1).csv")]
    assert got == ["a.csv", "a (1).csv", "A (2).CSV", "b", "b (1)", "a (1) (1).csv"]
    long = sanitize_filename("y" * 300 + ".csv")
    assert len(names.claim(long).encode()) <= MAX_NAME_BYTES
    second = names.claim(long)
    assert second.endswith(" (1).csv") and len(second.encode()) <= MAX_NAME_BYTES


# ---------------------------------------------------------------------------------------------


def multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def decode(body: bytes, content_type: str, step: int) -> list[tuple[str | None, bytes]]:
    """(filename, content) per part, feeding the body `step` bytes at a time."""
    decoder = MultipartDecoder(content_type)
    parts: list[tuple[str | None, bytes]] = []
    for i in range(0, len(body), step):
        for event in decoder.feed(body[i : i + step]):
            if isinstance(event, PartStart):
                parts.append((event.filename, b""))
            elif isinstance(event, PartData):
                name, data = parts[-1]
                parts[-1] = (name, data + bytes(event.data))
            else:
                assert isinstance(event, PartEnd)
    decoder.finish()
    return parts


@pytest.mark.parametrize("step", [1, 3, 7, 64, 1 << 20])
def test_decoder_handles_any_chunking(step: int) -> None:
    tricky = b"line\r\n--notquite\r\n--b\r" + os.urandom(300)  # boundary look-alikes in data
    body = multipart(
        "b", [("field", None, b"value"), ("f", "one.bin", tricky), ("g", "dos.txt", b"")]
    )
    parts = decode(body, "multipart/form-data; boundary=b", step)
    assert parts == [(None, b"value"), ("one.bin", tricky), ("dos.txt", b"")]


def test_decoder_reads_utf8_filenames() -> None:
    body = multipart("b", [("f", "données.csv", b"x")])
    assert decode(body, "multipart/form-data; boundary=b", 5) == [("données.csv", b"x")]


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("", "no content type"),
        ("application/json", "expected a multipart/form-data body, got 'application/json'"),
        ("multipart/form-data", "no boundary"),
    ],
)
def test_decoder_rejects_what_is_not_multipart(content_type: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        MultipartDecoder(content_type)


def test_decoder_notices_a_truncated_body() -> None:
    body = multipart("b", [("f", "a.csv", b"1,2,3")])
    decoder = MultipartDecoder("multipart/form-data; boundary=b")
    decoder.feed(body[:-10])
    with pytest.raises(InvalidArgument, match="closing boundary"):
        decoder.finish()


def test_decoder_rejects_garbage() -> None:
    decoder = MultipartDecoder("multipart/form-data; boundary=b")
    with pytest.raises(InvalidArgument, match="malformed multipart body"):
        decoder.feed(b"--b\r\nno-colon-header\r\n\r\n")


# ---------------------------------------------------------------------------------------------


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


def test_storage_settings_from_the_deploy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_STORAGE_BACKEND", "s3")
    monkeypatch.setenv("TRAINYARD_S3_BUCKET", "trainyard-artifacts")
    monkeypatch.setenv("TRAINYARD_S3_PREFIX", "trainyard/")
    monkeypatch.setenv("TRAINYARD_S3_ENDPOINT_URL", "")
    shared = StorageSettings()
    assert shared.storage_backend == "s3" and shared.s3_endpoint_url is None
    merged = UploadSettings().storage_settings(shared)
    storage = create_blob_storage(merged, namespace="uploads", local_root=Path("unused"))
    assert storage.uri("id/a.csv") == "s3://trainyard-artifacts/trainyard/uploads/id/a.csv"

    monkeypatch.setenv("TRAINYARD_UPLOAD_STORAGE_BACKEND", "local")
    local = UploadSettings().storage_settings(StorageSettings())
    assert local.storage_backend == "local"

    monkeypatch.setenv("TRAINYARD_S3_BUCKET", "")
    with pytest.raises(ValueError, match="TRAINYARD_S3_BUCKET must be set"):
        create_blob_storage(StorageSettings(), namespace="uploads", local_root=Path("unused"))
