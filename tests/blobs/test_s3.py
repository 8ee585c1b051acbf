"""The S3 backend on its own, against a moto server (a real HTTP S3 endpoint in a child
process)."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.upload_service import MotoServer
from trainyard.blobs import BlobNotFound, S3BlobStorage

BUCKET = "trainyard-blobs-test"
MiB = 1024 * 1024


@pytest.fixture(scope="module", autouse=True)
def bucket(moto: MotoServer) -> str:
    moto.client().create_bucket(Bucket=BUCKET)
    return BUCKET


async def test_s3_blob_storage(moto: MotoServer) -> None:
    storage = S3BlobStorage(BUCKET, "/unit/blobs/", endpoint_url=moto.endpoint)
    await storage.start()
    try:
        small = await storage.put_bytes("u1/small.txt", b"hello")
        assert small.sha256 == hashlib.sha256(b"hello").hexdigest()

        big = os.urandom(19 * MiB + 5)  # three parts of a multipart upload
        writer = await storage.open_writer("u1/big.bin")
        for i in range(0, len(big), 700_000):
            await writer.write(big[i : i + 700_000])
        assert moto.keys(BUCKET, "unit/blobs/u1/big") == [], "invisible until commit"
        blob = await writer.commit()
        assert (blob.size, blob.sha256) == (len(big), hashlib.sha256(big).hexdigest())
        assert b"".join([c async for c in storage.read("u1/big.bin")]) == big
        assert storage.uri("u1/big.bin") == f"s3://{BUCKET}/unit/blobs/u1/big.bin"
        assert storage.local_path("u1/big.bin") is None
        assert await storage.exists("u1/big.bin") and not await storage.exists("u1/nope")
        assert sorted([b.key async for b in storage.list_blobs("u1/")]) == [
            "u1/big.bin",
            "u1/small.txt",
        ]

        aborted = await storage.open_writer("u1/aborted.bin")
        await aborted.write(os.urandom(17 * MiB))
        assert moto.multipart_uploads(BUCKET, "unit/") == ["unit/blobs/u1/aborted.bin"]
        await aborted.abort()
        assert moto.multipart_uploads(BUCKET, "unit/") == []

        moto.client().create_multipart_upload(Bucket=BUCKET, Key="unit/blobs/u2/left-over")
        later = datetime.now(UTC) + timedelta(minutes=1)
        assert await storage.abort_incomplete_writes(later, keep=["u2/"]) == []
        assert await storage.abort_incomplete_writes(later) == ["u2/left-over"]

        await storage.delete_prefix("u1/")
        assert moto.keys(BUCKET, "unit/") == []
        with pytest.raises(BlobNotFound):
            [c async for c in storage.read("u1/big.bin")]
    finally:
        await storage.close()
