"""A workload's inputs and artifacts through the orchestrator, with its job token.

A trainer the orchestrator starts holds no storage access of its own (it may run as an
unprivileged user that cannot read the upload store nor write the artifact store, or in a pod
without credentials): its config's platform section says `"relay": "orchestrator"`, and then
`fetch_inputs` reads each input URI through ReadTrainInput into the job's working directory,
and `storage_for(artifacts_uri)` is an `OrchestratorBlobStorage` that reads, writes and deletes
the model's blobs through ReadTrainBlob / WriteTrainBlob / DeleteTrainBlobs. The orchestrator
checks every call against the token's model (see trainyard.orchestrator.workload_data). A job
run by hand or by tests, without that section, reads and writes its URIs directly.

An orchestrator that is away for a moment (restarting) does not fail the training: each call
waits for it to be ready and is retried on UNAVAILABLE / DEADLINE_EXCEEDED for up to
RETRY_SECONDS (an input is then read again from its start, a blob written again whole; a blob
read is retried until its first bytes arrive).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import tenacity

from trainyard.api.orchestrator.v1 import messages_pb2 as msgs
from trainyard.api.orchestrator.v1 import service_pb2_grpc as svc
from trainyard.blobs import (
    READ_CHUNK_BYTES,
    BlobInfo,
    BlobNotFound,
    BlobStorage,
    BlobWriter,
    StoredBlob,
    check_key,
    storage_at,
)
from trainyard.workload.config import platform_settings

#: The value of the platform section's `relay` that routes data through the orchestrator.
RELAY_ORCHESTRATOR = "orchestrator"
#: A write is spooled in memory up to this size, then on the job's disk.
_SPOOL_BYTES = 8 * 1024 * 1024
#: How long a relayed call is retried while the orchestrator is away.
RETRY_SECONDS = 300.0
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _retrying() -> tenacity.AsyncRetrying:
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(
            lambda e: isinstance(e, grpc.aio.AioRpcError) and e.code() in _TRANSIENT
        ),
        wait=tenacity.wait_exponential(multiplier=0.5, max=10.0),
        stop=tenacity.stop_after_delay(RETRY_SECONDS),
        reraise=True,
    )


class RelayError(Exception):
    """The orchestrator refused or failed a relayed read or write; the message says which."""


def relay() -> tuple[str, str] | None:
    """(orchestrator address, job token) when the config asks for relayed data, else None."""
    platform = platform_settings()
    if platform.get("relay") != RELAY_ORCHESTRATOR:
        return None
    address, token = platform.get("orchestrator_address"), platform.get("job_token")
    if not address or not token:
        raise RelayError("the config asks for relayed data but names no orchestrator or token")
    return address, token


def storage_for(uri: str) -> BlobStorage:
    """The storage rooted at a folder URI the config gave: relayed through the orchestrator
    when the config says so, else `trainyard.blobs.storage_at(uri)`."""
    found = relay()
    if found is None:
        return storage_at(uri)
    if not uri.endswith("/"):
        raise ValueError(f"{uri!r}: a storage is rooted at a folder; end the URI with '/'")
    return OrchestratorBlobStorage(uri, *found)


class _Connection:
    def __init__(self, address: str, token: str) -> None:
        self.address = address
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    @property
    def stub(self) -> Any:
        if self._stub is None:
            self.channel = grpc.aio.insecure_channel(
                self.address,
                options=[("grpc.max_receive_message_length", 4 * READ_CHUNK_BYTES)],
            )
            self._stub = svc.TrainServiceStub(self.channel)
        return self._stub

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close(grace=None)
        self.channel = None
        self._stub = None

    def error(self, rpc: str, exc: grpc.aio.AioRpcError) -> RelayError:
        # Shown to the model's owner: no address of the platform's.
        return RelayError(f"{rpc} failed: {exc.code().name}: {exc.details()}")


async def read_input(uri: str, dest: Path, address: str, token: str) -> list[tuple[Path, str]]:
    """Every file one input URI names, streamed by the orchestrator into `dest`: (local path,
    name relative to what the URI named)."""
    conn = _Connection(address, token)

    async def once() -> list[tuple[Path, str]]:
        found: list[tuple[Path, str]] = []
        fh: Any = None
        try:
            call = conn.stub.ReadTrainInput(
                msgs.ReadTrainInputRequest(uri=uri), metadata=conn.metadata, wait_for_ready=True
            )
            async for message in call:
                if message.WhichOneof("chunk") == "file":
                    if fh is not None:
                        fh.close()
                    name = message.file.name
                    check_key(name)  # the name stays inside dest
                    local = dest.joinpath(*PurePosixPath(name).parts)
                    local.parent.mkdir(parents=True, exist_ok=True)
                    fh = open(local, "wb")  # noqa: ASYNC230, SIM115 - the job's own disk
                    found.append((local, name))
                elif fh is not None:
                    fh.write(message.data)
        finally:
            if fh is not None:
                fh.close()
        return found

    try:
        async for attempt in _retrying():
            with attempt:
                return await once()
    except grpc.aio.AioRpcError as exc:
        raise conn.error("ReadTrainInput", exc) from exc
    finally:
        await conn.close()
    raise AssertionError("unreachable: the retrying returns or raises")


class OrchestratorBlobStorage(BlobStorage):
    """The orchestrator's artifact store, rooted at `root_uri` (its URI, as the config gave
    it), reached through the orchestrator with a job token. Listing is not relayed."""

    def __init__(self, root_uri: str, address: str, token: str) -> None:
        self.root_uri = root_uri
        self._conn = _Connection(address, token)

    async def close(self) -> None:
        await self._conn.close()

    def uri(self, key: str) -> str:
        check_key(key)
        return self.root_uri + key

    async def open_writer(self, key: str) -> BlobWriter:
        check_key(key)
        return _RelayedWriter(self._conn, key)

    async def read(self, key: str, chunk_size: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
        check_key(key)
        call: Any = None
        first: Any = None

        async def start() -> None:
            nonlocal call, first
            if call is not None:
                call.cancel()
            call = self._conn.stub.ReadTrainBlob(
                msgs.ReadTrainBlobRequest(key=key),
                metadata=self._conn.metadata,
                wait_for_ready=True,
            )
            first = await anext(aiter(call), None)

        try:
            async for attempt in _retrying():
                with attempt:
                    await start()
            if first is not None:
                if first.data:
                    yield first.data
                async for message in call:
                    if message.data:
                        yield message.data
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise BlobNotFound(key) from exc
            raise self._conn.error("ReadTrainBlob", exc) from exc
        finally:
            if call is not None:
                call.cancel()

    async def exists(self, key: str) -> bool:
        try:
            async for _ in self.read(key):
                break
        except BlobNotFound:
            return False
        return True

    async def _delete(self, prefix: str) -> None:
        try:
            async for attempt in _retrying():
                with attempt:
                    await self._conn.stub.DeleteTrainBlobs(
                        msgs.DeleteTrainBlobsRequest(prefix=prefix),
                        metadata=self._conn.metadata,
                        wait_for_ready=True,
                    )
        except grpc.aio.AioRpcError as exc:
            raise self._conn.error("DeleteTrainBlobs", exc) from exc

    async def delete(self, key: str) -> None:
        check_key(key)
        await self._delete(key)

    async def delete_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise ValueError(f"a prefix is a folder ending in '/', not {prefix!r}")
        await self._delete(prefix)

    async def list_blobs(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        raise NotImplementedError("a relayed storage does not list (sweep from the platform)")
        yield  # pragma: no cover - makes this an async generator


class _RelayedWriter(BlobWriter):
    """Spools the blob locally, then streams it in one WriteTrainBlob on commit: the blob
    appears whole or not at all."""

    def __init__(self, conn: _Connection, key: str) -> None:
        super().__init__(key)
        self._conn = conn
        self._spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        self._digest = hashlib.sha256()
        self._size = 0

    async def write(self, data: bytes | memoryview) -> None:
        self._spool.write(data)
        self._digest.update(data)
        self._size += len(data)

    async def commit(self) -> StoredBlob:
        async def messages() -> AsyncIterator[msgs.WriteTrainBlobRequest]:
            self._spool.seek(0)
            yield msgs.WriteTrainBlobRequest(key=self.key)
            while chunk := self._spool.read(READ_CHUNK_BYTES):
                yield msgs.WriteTrainBlobRequest(data=chunk)

        response: Any = None
        try:
            async for attempt in _retrying():  # each attempt writes the blob again, whole
                with attempt:
                    response = await self._conn.stub.WriteTrainBlob(
                        messages(), metadata=self._conn.metadata, wait_for_ready=True
                    )
        except grpc.aio.AioRpcError as exc:
            raise self._conn.error("WriteTrainBlob", exc) from exc
        finally:
            self._spool.close()
        sha256 = self._digest.hexdigest()
        if response.size != self._size or response.sha256 != sha256:
            raise RelayError(f"the orchestrator stored {self.key!r} differently than it was sent")
        return StoredBlob(key=self.key, size=self._size, sha256=sha256)

    async def abort(self) -> None:
        self._spool.close()
