"""gRPC servicer of the upload service: proto <-> UploadStore mapping only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from trainyard.api.upload.v1 import messages_pb2 as msgs
from trainyard.api.upload.v1 import service_pb2_grpc as svc
from trainyard.runtime.auth import current_user
from trainyard.runtime.errors import InvalidArgument
from trainyard.upload.store import BodyChunk, NamedChunk, UploadRecord, UploadStore

Context = grpc.aio.ServicerContext[Any, Any]


async def _chunks(
    requests: AsyncIterator[msgs.UploadDataRequest],
) -> AsyncIterator[BodyChunk | NamedChunk]:
    async for request in requests:
        has_body, has_file = request.HasField("http_body"), request.HasField("file")
        if has_body and has_file:
            raise InvalidArgument(
                "a message carries either http_body or file, not both",
                reason="MIXED_UPLOAD_STREAM",
            )
        if has_body:
            yield BodyChunk(request.http_body.content_type, request.http_body.data)
        elif has_file:
            yield NamedChunk(request.file.filename, request.file.data)


def _upload_proto(record: UploadRecord, *, with_local_paths: bool) -> msgs.Upload:
    upload = msgs.Upload(
        upload_id=record.upload_id,
        owner=record.owner,
        total_size_bytes=record.total_size_bytes,
        files=[
            msgs.UploadedFile(
                name=f.name,
                size_bytes=f.size_bytes,
                sha256=f.sha256,
                # Server locations (file:// paths, s3:// keys) are for services only.
                uri=f.uri if with_local_paths else "",
                local_path=str(f.local_path) if with_local_paths and f.local_path else "",
            )
            for f in record.files
        ],
    )
    upload.create_time.FromDatetime(record.created_at)
    return upload


class UploadServicer(svc.UploadServiceServicer):
    """UploadData/List/Get/Delete for users; Resolve/ReadUploadFile for services (a service token
    acting for `owner`). Server locations (local_path, uri) are only given to services."""

    def __init__(self, store: UploadStore) -> None:
        self._store = store

    async def UploadData(
        self, request_iterator: AsyncIterator[msgs.UploadDataRequest], context: Context
    ) -> msgs.UploadDataResponse:
        record = await self._store.ingest(current_user(), _chunks(request_iterator))
        return msgs.UploadDataResponse(upload_id=record.upload_id)

    async def ListUploads(
        self, request: msgs.ListUploadsRequest, context: Context
    ) -> msgs.ListUploadsResponse:
        page = await self._store.list_uploads(current_user(), request.page_size, request.page_token)
        return msgs.ListUploadsResponse(
            uploads=[_upload_proto(r, with_local_paths=False) for r in page.uploads],
            next_page_token=page.next_page_token,
        )

    async def GetUpload(
        self, request: msgs.GetUploadRequest, context: Context
    ) -> msgs.GetUploadResponse:
        record = await self._store.get(request.upload_id, current_user())
        return msgs.GetUploadResponse(upload=_upload_proto(record, with_local_paths=False))

    async def DeleteUpload(
        self, request: msgs.DeleteUploadRequest, context: Context
    ) -> msgs.DeleteUploadResponse:
        await self._store.delete(request.upload_id, current_user())
        return msgs.DeleteUploadResponse()

    async def ResolveUpload(
        self, request: msgs.ResolveUploadRequest, context: Context
    ) -> msgs.ResolveUploadResponse:
        record = await self._store.get(request.upload_id, request.owner)
        return msgs.ResolveUploadResponse(upload=_upload_proto(record, with_local_paths=True))

    async def ReadUploadFile(
        self, request: msgs.ReadUploadFileRequest, context: Context
    ) -> AsyncIterator[msgs.ReadUploadFileResponse]:
        chunks = await self._store.read_file(request.upload_id, request.owner, request.name)
        async for chunk in chunks:
            yield msgs.ReadUploadFileResponse(data=chunk)
