"""Blob storage as a library: one interface over a local directory or S3 (aioboto3).

Servers and workloads alike use it; it imports nothing from any service. `base` holds the
interface and errors, `local` and `s3` the backends, `settings` where blobs live and how a
service overrides that, `uris` reading a `file://` or `s3://` URI.
"""

from trainyard.blobs.base import (
    READ_CHUNK_BYTES,
    BlobInfo,
    BlobNotFound,
    BlobStorage,
    BlobWriter,
    StoredBlob,
    check_key,
    check_prefix,
    is_disk_full,
)
from trainyard.blobs.local import LocalBlobStorage
from trainyard.blobs.s3 import S3BlobStorage
from trainyard.blobs.settings import (
    Backend,
    StorageOverrides,
    StorageSettings,
    create_blob_storage,
    overlay,
)
from trainyard.blobs.uris import BlobUri, parse_blob_uri, read_uri, storage_at

__all__ = [
    "READ_CHUNK_BYTES",
    "Backend",
    "BlobInfo",
    "BlobNotFound",
    "BlobStorage",
    "BlobUri",
    "BlobWriter",
    "LocalBlobStorage",
    "S3BlobStorage",
    "StorageOverrides",
    "StorageSettings",
    "StoredBlob",
    "check_key",
    "check_prefix",
    "create_blob_storage",
    "is_disk_full",
    "overlay",
    "parse_blob_uri",
    "read_uri",
    "storage_at",
]
