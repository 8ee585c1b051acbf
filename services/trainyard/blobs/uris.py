"""Blobs named by URI: `file:///absolute/path` or `s3://bucket/key`.

What a workload is handed (its config, the place for its artifacts) is a URI; these turn one
into bytes or into a storage rooted there. S3 access takes the endpoint and region from
`StorageSettings` (TRAINYARD_S3_ENDPOINT_URL, TRAINYARD_S3_REGION) and credentials from the
usual AWS_* variables; the bucket comes from the URI.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from trainyard.blobs.base import BlobNotFound, BlobStorage, check_key
from trainyard.blobs.local import LocalBlobStorage
from trainyard.blobs.s3 import S3BlobStorage
from trainyard.blobs.settings import StorageSettings

SCHEMES = ("file", "s3")


@dataclass(frozen=True)
class BlobUri:
    """A parsed URI: `file` with an absolute `path`, or `s3` with a `bucket` and a `key`
    (the key of a folder ends with `/`; "" is the whole bucket)."""

    scheme: Literal["file", "s3"]
    path: str = ""
    bucket: str = ""
    key: str = ""


def parse_blob_uri(uri: str) -> BlobUri:
    """ValueError for anything but file:///absolute/path (or file://localhost/...) and
    s3://bucket/key with a valid key."""
    if "\0" in uri:
        raise ValueError("a blob URI must not contain a NUL byte")
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"{uri!r}: a file URI names a path on this machine (file:///...)")
        path = unquote(parts.path)
        if not path.startswith("/") or parts.query or parts.fragment:
            raise ValueError(f"{uri!r}: expected file:///absolute/path")
        return BlobUri("file", path=path)
    if parts.scheme == "s3":
        key = parts.path.lstrip("/")
        if not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"{uri!r}: expected s3://bucket/key")
        if key:
            check_key(key[:-1] if key.endswith("/") else key)
        return BlobUri("s3", bucket=parts.netloc, key=key)
    raise ValueError(f"{uri!r}: unsupported scheme; expected one of {', '.join(SCHEMES)}")


def storage_at(uri: str, settings: StorageSettings | None = None) -> BlobStorage:
    """A storage rooted at a folder URI (`file:///srv/artifacts/`, `s3://bucket/prefix/`);
    call start() before use and close() after."""
    parsed = parse_blob_uri(uri)
    if parsed.scheme == "file":
        return LocalBlobStorage(Path(parsed.path))
    if parsed.key and not parsed.key.endswith("/"):
        raise ValueError(f"{uri!r}: a storage is rooted at a folder; end the URI with '/'")
    s = settings if settings is not None else StorageSettings()
    return S3BlobStorage(
        parsed.bucket, parsed.key, endpoint_url=s.s3_endpoint_url, region=s.s3_region
    )


async def read_uri(uri: str, max_bytes: int, settings: StorageSettings | None = None) -> bytes:
    """The whole object a URI names, at most max_bytes of it (ValueError beyond);
    BlobNotFound when it does not exist."""
    parsed = parse_blob_uri(uri)
    if parsed.scheme == "file":
        return await asyncio.to_thread(_read_file, Path(parsed.path), max_bytes)
    if not parsed.key or parsed.key.endswith("/"):
        raise ValueError(f"{uri!r}: names a folder, not an object")
    s = settings if settings is not None else StorageSettings()
    storage = S3BlobStorage(parsed.bucket, endpoint_url=s.s3_endpoint_url, region=s.s3_region)
    await storage.start()
    try:
        data = bytearray()
        async for chunk in storage.read(parsed.key):
            data += chunk
            if len(data) > max_bytes:
                raise ValueError(f"{uri!r} is larger than {max_bytes} bytes")
        return bytes(data)
    finally:
        await storage.close()


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise BlobNotFound(path.as_uri()) from exc
    if len(data) > max_bytes:
        raise ValueError(f"{path.as_uri()!r} is larger than {max_bytes} bytes")
    return data
