"""Blobs named by URI: what parses, what a storage rooted at a folder URI is."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.blobs import (
    BlobNotFound,
    BlobUri,
    LocalBlobStorage,
    S3BlobStorage,
    StorageSettings,
    parse_blob_uri,
    read_uri,
    storage_at,
)


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("file:///srv/a%20b/c.json", BlobUri("file", path="/srv/a b/c.json")),
        ("file://localhost/srv/c.json", BlobUri("file", path="/srv/c.json")),
        ("s3://bucket/configs/job.json", BlobUri("s3", bucket="bucket", key="configs/job.json")),
        ("s3://bucket/models/", BlobUri("s3", bucket="bucket", key="models/")),
        ("s3://bucket", BlobUri("s3", bucket="bucket", key="")),
    ],
)
def test_uris_that_parse(uri: str, parsed: BlobUri) -> None:
    assert parse_blob_uri(uri) == parsed


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://example.com/c.json", "unsupported scheme"),
        ("/srv/c.json", "unsupported scheme"),
        ("file://host/srv/c.json", "path on this machine"),
        ("file:relative.json", "absolute"),
        ("s3:///key", "s3://bucket/key"),
        ("s3://bucket/../etc/passwd", "invalid blob key"),
        ("s3://bucket/a//b", "invalid blob key"),
        ("s3://bucket/a\x00b", "NUL"),
    ],
)
def test_uris_that_do_not(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_blob_uri(uri)


def test_a_storage_rooted_at_a_folder_uri(tmp_path: Path) -> None:
    local = storage_at(tmp_path.as_uri() + "/arts/")
    assert isinstance(local, LocalBlobStorage) and local.root == tmp_path / "arts"
    settings = StorageSettings(s3_endpoint_url="http://127.0.0.1:9", s3_region="eu-west-3")
    s3 = storage_at("s3://bkt/models/m1/", settings)
    assert isinstance(s3, S3BlobStorage)
    assert (s3.bucket, s3.prefix, s3.endpoint_url, s3.region) == (
        "bkt",
        "models/m1/",
        "http://127.0.0.1:9",
        "eu-west-3",
    )
    assert s3.uri("x.bin") == "s3://bkt/models/m1/x.bin"
    with pytest.raises(ValueError, match="end the URI with '/'"):
        storage_at("s3://bkt/models/m1")


async def test_read_uri_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b"x" * 10)
    assert await read_uri(path.as_uri(), 10) == b"x" * 10
    with pytest.raises(ValueError, match="larger than 9 bytes"):
        await read_uri(path.as_uri(), 9)
    with pytest.raises(BlobNotFound):
        await read_uri((tmp_path / "missing").as_uri(), 10)
    with pytest.raises(BlobNotFound):
        await read_uri(tmp_path.as_uri(), 10)
