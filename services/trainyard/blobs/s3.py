"""Blobs in an S3 bucket (or any S3-compatible store) through aioboto3."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
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

S3_PART_BYTES = 8 * MiB
S3_MAX_PART_BYTES = 5 * 1024 * MiB
S3_MAX_PARTS = 10_000


class S3BlobStorage(BlobStorage):
    """Objects under `prefix` in an S3 bucket, through one aioboto3 client."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        part_bytes: int = S3_PART_BYTES,
    ) -> None:
        if part_bytes < 5 * MiB:
            raise ValueError("S3 multipart parts must be at least 5 MiB")
        self.bucket = bucket
        self.prefix = "/".join(p for p in prefix.split("/") if p)
        if self.prefix:
            self.prefix += "/"
        self.endpoint_url = endpoint_url
        self.region = region
        self.part_bytes = part_bytes
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3BlobStorage.start() was not called")
        return self._client

    async def start(self) -> None:
        import aioboto3
        from botocore.exceptions import BotoCoreError, ClientError

        session = aioboto3.Session()
        self._client = await self._stack.enter_async_context(
            session.client("s3", endpoint_url=self.endpoint_url, region_name=self.region)
        )
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            await self.close()
            raise RuntimeError(
                f"S3 bucket {self.bucket!r} is not reachable"
                f"{' at ' + self.endpoint_url if self.endpoint_url else ''}: {exc}; check "
                "TRAINYARD_S3_BUCKET, TRAINYARD_S3_ENDPOINT_URL and the AWS credentials"
            ) from exc

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    def full_key(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) :]

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.full_key(key)}"

    async def open_writer(self, key: str) -> BlobWriter:
        return _S3Writer(self, key, self.full_key(key))

    async def read(self, key: str, chunk_size: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
        from botocore.exceptions import ClientError

        try:
            resp = await self.client.get_object(Bucket=self.bucket, Key=self.full_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise BlobNotFound(key) from exc
            raise
        body = resp["Body"]
        try:
            async for chunk in body.iter_chunks(chunk_size):
                if chunk:
                    yield chunk
        finally:
            body.close()

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            await self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise
        return True

    async def delete(self, key: str) -> None:
        await self.client.delete_object(Bucket=self.bucket, Key=self.full_key(key))

    async def _full_keys(self, full_prefix: str) -> AsyncIterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            for obj in page.get("Contents", []):
                yield obj

    async def _multipart_uploads(self, full_prefix: str) -> AsyncIterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            for upload in page.get("Uploads", []):
                yield upload

    async def delete_prefix(self, prefix: str) -> None:
        prefix = check_prefix(prefix)
        if prefix == "":
            raise ValueError("refusing to delete the whole storage prefix")
        full_prefix = self.prefix + prefix
        async for upload in self._multipart_uploads(full_prefix):
            await self.abort_multipart(upload["Key"], upload["UploadId"])
        batch: list[dict[str, str]] = []
        async for obj in self._full_keys(full_prefix):
            batch.append({"Key": obj["Key"]})
            if len(batch) == 1000:
                await self._delete_batch(batch)
                batch = []
        if batch:
            await self._delete_batch(batch)

    async def _delete_batch(self, batch: list[dict[str, str]]) -> None:
        resp = await self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
        )
        errors = resp.get("Errors") or []
        if errors:
            first = errors[0]
            raise OSError(
                f"S3 refused to delete {len(errors)} object(s), e.g. {first.get('Key')!r}: "
                f"{first.get('Code')} {first.get('Message')}"
            )

    async def abort_multipart(self, full_key: str, upload_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise

    async def list_blobs(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        prefix = check_prefix(prefix)
        async for obj in self._full_keys(self.prefix + prefix):
            modified: datetime = obj["LastModified"]
            if modified.tzinfo is None:
                modified = modified.replace(tzinfo=UTC)
            yield BlobInfo(key=self._relative(obj["Key"]), size=int(obj["Size"]), modified=modified)

    async def abort_incomplete_writes(
        self, older_than: datetime, keep: Sequence[str] = ()
    ) -> list[str]:
        aborted: list[str] = []
        async for upload in self._multipart_uploads(self.prefix):
            key = self._relative(upload["Key"])
            initiated: datetime = upload["Initiated"]
            if initiated.tzinfo is None:
                initiated = initiated.replace(tzinfo=UTC)
            if initiated >= older_than or any(key.startswith(k) for k in keep):
                continue
            await self.abort_multipart(upload["Key"], upload["UploadId"])
            aborted.append(key)
        return aborted


class _S3Writer(BlobWriter):
    """PutObject for objects smaller than one part, else a multipart upload; one part uploads
    while the next one fills."""

    def __init__(self, storage: S3BlobStorage, key: str, full_key: str) -> None:
        super().__init__(key)
        self._s3 = storage
        self._full_key = full_key
        self._hash = hashlib.sha256()
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._inflight: asyncio.Task[None] | None = None
        self._closed = False

    def _part_limit(self) -> int:
        # Parts grow as the object does, so 10,000 parts cover objects far beyond 50 GiB.
        doubling = len(self._parts) // 1000
        return int(min(self._s3.part_bytes * (2**doubling), S3_MAX_PART_BYTES))

    def _take(self) -> bytes:
        pieces, self._pending, self._pending_bytes = self._pending, [], 0
        return b"".join(pieces)

    async def _send_part(self, number: int, body: bytes) -> None:
        await asyncio.to_thread(self._hash.update, body)
        resp = await self._s3.client.upload_part(
            Bucket=self._s3.bucket,
            Key=self._full_key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
        )
        self._parts.append({"ETag": resp["ETag"], "PartNumber": number})

    async def _drain(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def _flush_part(self) -> None:
        body = self._take()
        await self._drain()
        if self._upload_id is None:
            resp = await self._s3.client.create_multipart_upload(
                Bucket=self._s3.bucket, Key=self._full_key
            )
            self._upload_id = resp["UploadId"]
        number = len(self._parts) + 1
        if number > S3_MAX_PARTS:
            raise OSError(f"object {self.key!r} needs more than {S3_MAX_PARTS} parts")
        self._inflight = asyncio.create_task(self._send_part(number, body))

    async def write(self, data: bytes | memoryview) -> None:
        if self._closed:
            raise RuntimeError(f"writer for {self.key!r} is closed")
        if not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.size += len(data)
        if self._pending_bytes >= self._part_limit():
            await self._flush_part()

    async def commit(self) -> StoredBlob:
        if self._closed:
            raise RuntimeError(f"writer for {self.key!r} is closed")
        try:
            if self._upload_id is None:
                body = self._take()
                await asyncio.to_thread(self._hash.update, body)
                await self._s3.client.put_object(
                    Bucket=self._s3.bucket, Key=self._full_key, Body=body
                )
            else:
                if self._pending_bytes:
                    await self._flush_part()
                await self._drain()
                await self._s3.client.complete_multipart_upload(
                    Bucket=self._s3.bucket,
                    Key=self._full_key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": sorted(self._parts, key=lambda p: p["PartNumber"])},
                )
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
        if self._inflight is not None:
            self._inflight.cancel()
            with contextlib.suppress(BaseException):
                await self._inflight
            self._inflight = None
        if self._upload_id is not None:
            with contextlib.suppress(Exception):
                await self._s3.abort_multipart(self._full_key, self._upload_id)
