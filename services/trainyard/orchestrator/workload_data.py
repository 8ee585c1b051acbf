"""A training workload's data, relayed by the orchestrator: its inputs and its model's blobs.

A workload has no access of its own to the platform's stores: on the local backend it runs as
an unprivileged user that cannot read the upload store nor write the artifact store, on
Kubernetes its pod mounts nothing of the platform's, and in neither does it hold storage
credentials. It reads and writes through the orchestrator with its job token instead, and only
what that token's model may touch:

- inputs: exactly the URIs its trainer config lists (resolved and authorised for the model's
  owner when the training was requested), read here with the platform's own access: an upload
  through the upload service (acting for the owner), a local file or folder re-checked against
  the allowed roots (a symlink swapped in since the request does not get out), an S3 object or
  prefix re-checked against the allowed S3 locations, with the orchestrator's S3 settings;
- blobs: keys under `models/<model_id>/` of its own model (read, write, delete) and of its base
  model (read only).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import structlog

from trainyard.blobs import (
    READ_CHUNK_BYTES,
    BlobNotFound,
    BlobStorage,
    S3BlobStorage,
    StorageSettings,
    StoredBlob,
    check_key,
    parse_blob_uri,
)
from trainyard.orchestrator.peers import Peers
from trainyard.orchestrator.registry import ModelRegistry, ModelView
from trainyard.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)

log = structlog.get_logger("trainyard.orchestrator.workload_data")

#: The key of a train config listing every input URI its trainer may read (resolved for the
#: owner at request time, whatever config key the trainer finds them under).
INPUTS = "inputs"
#: The key of a train config mapping an upload's file URI to [upload_id, file name].
UPLOAD_SOURCES = "upload_sources"


@dataclass(frozen=True)
class InputStart:
    """The start of one file of a streamed input."""

    name: str
    uri: str


@dataclass(frozen=True)
class S3Location:
    """An S3 bucket, or a prefix (ending in '/') inside one, that inputs may come from."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, text: str) -> S3Location:
        bucket, _, prefix = text.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"{text!r}: expected bucket or bucket/prefix/")
        return cls(bucket, prefix if not prefix or prefix.endswith("/") else prefix + "/")

    def holds(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)


class S3Inputs:
    """Which S3 keys a train request may name: inside an allowed location and outside the
    platform's own storage (its uploads and artifacts are nobody's raw input)."""

    def __init__(self, allowed: Sequence[str], platform: StorageSettings) -> None:
        self.allowed = [S3Location.parse(text) for text in allowed]
        self.platform = (
            S3Location(platform.s3_bucket, platform.s3_prefix.strip("/") + "/")
            if platform.s3_bucket and platform.s3_prefix.strip("/")
            else S3Location(platform.s3_bucket, "")
            if platform.s3_bucket
            else None
        )
        self.settings = platform

    def check(self, uri: str, where: str) -> tuple[str, str]:
        """(bucket, key) of an S3 input URI this server lets a request read; PermissionDenied
        naming what to do otherwise."""
        try:
            parsed = parse_blob_uri(uri)
        except ValueError as exc:
            raise InvalidArgument(f"{where}: {exc}", reason="S3_URI_INVALID") from exc
        if not self.allowed:
            raise PermissionDenied(
                f"{where}: S3 inputs are not enabled on this server; upload the file and use "
                '{"location": "upload"}',
                reason="S3_INPUTS_DISABLED",
            )
        bucket, key = parsed.bucket, parsed.key
        inside_platform = self.platform is not None and (
            self.platform.holds(bucket, key)
            or (bucket == self.platform.bucket and self.platform.prefix.startswith(key))
        )
        if inside_platform or not any(loc.holds(bucket, key) for loc in self.allowed):
            raise PermissionDenied(
                f"{where}: {uri!r} is outside the S3 locations this server reads inputs from",
                reason="S3_PATH_DENIED",
            )
        return bucket, key

    def storage(self, bucket: str) -> S3BlobStorage:
        return S3BlobStorage(
            bucket, endpoint_url=self.settings.s3_endpoint_url, region=self.settings.s3_region
        )

    async def check_exists(self, uri: str, where: str) -> None:
        """NotFound when an allowed S3 input names no object (a key) or nothing (a prefix);
        Unavailable when S3 cannot answer (the operator's bucket, endpoint or credentials)."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = self.check(uri, where)
        storage = self.storage(bucket)
        try:
            await storage.start()
        except RuntimeError as exc:
            log.warning("s3_inputs.unreachable", bucket=bucket, error=str(exc))
            raise Unavailable(
                f"{where}: S3 bucket {bucket!r} cannot be read now; try again later",
                reason="S3_UNAVAILABLE",
            ) from exc
        try:
            if key and not key.endswith("/"):
                found = await storage.exists(key)
            else:
                found = False
                async for _ in storage.list_blobs(key):
                    found = True
                    break
        except (BotoCoreError, ClientError) as exc:
            log.warning("s3_inputs.unreadable", bucket=bucket, error=str(exc))
            raise Unavailable(
                f"{where}: {uri!r} cannot be read now; try again later", reason="S3_UNAVAILABLE"
            ) from exc
        finally:
            await storage.close()
        if not found:
            raise NotFound(f"{where}: {uri!r} names no S3 object", reason="S3_INPUT_NOT_FOUND")


def _model_key(model_id: str) -> str:
    return f"models/{model_id}/"


class WorkloadData:
    """What a job token's workload reads and writes through the orchestrator."""

    def __init__(
        self,
        registry: ModelRegistry,
        peers: Peers,
        artifacts: BlobStorage,
        s3_inputs: S3Inputs,
        local_roots: Sequence[Path],
        max_blob_bytes: int,
    ) -> None:
        self._registry = registry
        self._peers = peers
        self._artifacts = artifacts
        self._s3 = s3_inputs
        self._roots = list(local_roots)
        self._max_blob_bytes = max_blob_bytes

    # ---- inputs ----------------------------------------------------------------------------

    async def read_input(self, model_id: str, uri: str) -> AsyncIterator[InputStart | bytes]:
        """Each file `uri` names (an InputStart, then its bytes), if the model lists it."""
        model = await self._registry.get(model_id)
        listed = model.train_config.get(INPUTS) or []
        if not isinstance(listed, list) or uri not in listed:
            raise PermissionDenied(
                "this input is not one of the training's inputs", reason="INPUT_NOT_LISTED"
            )
        source = (model.train_config.get(UPLOAD_SOURCES) or {}).get(uri)
        if source is not None:
            upload_id, name = str(source[0]), str(source[1])
            yield InputStart(PurePosixPath(name).name, uri)
            async for chunk in self._peers.read_upload_file(upload_id, model.owner, name):
                yield chunk
            return
        parsed = parse_blob_uri(uri)
        if parsed.scheme == "file":
            for path, name in self._local_files(Path(parsed.path), uri):
                yield InputStart(name, path.as_uri())
                async for chunk in _file_chunks(path):
                    yield chunk
            return
        async for item in self._s3_files(uri):
            yield item

    def _inside_roots(self, path: Path) -> Path | None:
        real = Path(os.path.realpath(path))
        if any(real == root or real.is_relative_to(root) for root in self._roots):
            return real
        return None

    def _local_files(self, path: Path, uri: str) -> Iterator[tuple[Path, str]]:
        real = self._inside_roots(path)
        if real is None:
            raise PermissionDenied(
                f"{uri!r} is no longer inside the allowed local folders",
                reason="LOCAL_PATH_DENIED",
            )
        if real.is_file():
            yield real, real.name
            return
        if not real.is_dir():
            raise NotFound(f"{uri!r}: no such file or folder", reason="INPUT_NOT_FOUND")
        found = False
        for root, dirs, files in os.walk(real, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                full = Path(root) / name
                if full.is_symlink() or not full.is_file() or self._inside_roots(full) is None:
                    continue
                found = True
                yield full, full.relative_to(real).as_posix()
        if not found:
            raise NotFound(f"{uri!r}: the folder holds no files", reason="INPUT_NOT_FOUND")

    async def _s3_files(self, uri: str) -> AsyncIterator[InputStart | bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = self._s3.check(uri, "input")
        storage = self._s3.storage(bucket)
        try:
            await storage.start()
        except RuntimeError as exc:
            raise Unavailable(
                f"S3 bucket {bucket!r} cannot be read now", reason="S3_UNAVAILABLE"
            ) from exc
        try:
            if key and not key.endswith("/"):
                keys = [(key, PurePosixPath(key).name)]
            else:
                listed = sorted([info.key async for info in storage.list_blobs(key)])
                keys = [(k, k[len(key) :]) for k in listed if not k.endswith("/")]
                if not keys:
                    raise NotFound(
                        f"{uri!r}: no objects under this prefix", reason="INPUT_NOT_FOUND"
                    )
            for item, name in keys:
                yield InputStart(name, f"s3://{bucket}/{item}")
                try:
                    async for chunk in storage.read(item):
                        yield chunk
                except BlobNotFound as exc:
                    raise NotFound(
                        f"s3://{bucket}/{item}: no such object", reason="INPUT_NOT_FOUND"
                    ) from exc
        except (BotoCoreError, ClientError) as exc:
            log.warning("s3_inputs.unreadable", bucket=bucket, error=str(exc))
            raise Unavailable(f"{uri!r} cannot be read now", reason="S3_UNAVAILABLE") from exc
        finally:
            await storage.close()

    # ---- the model's blobs -----------------------------------------------------------------

    async def _model(self, model_id: str, *, writing: bool = False) -> ModelView:
        model = await self._registry.get(model_id)
        if writing and model.final:
            # A stopped (or otherwise ended) training's straggler adds nothing to its model.
            raise FailedPrecondition(
                f"the training of model {model_id!r} has ended ({model.status})",
                reason="TRAINING_ENDED",
            )
        return model

    @staticmethod
    def _checked(key: str, allowed: Sequence[str]) -> str:
        try:
            check_key(key[:-1] if key.endswith("/") else key)
        except ValueError as exc:
            raise InvalidArgument(f"bad blob key: {exc}", reason="BLOB_KEY_INVALID") from exc
        if not any(key.startswith(prefix) and key != prefix for prefix in allowed):
            raise PermissionDenied(
                "this job token may not touch that blob", reason="BLOB_ACCESS_DENIED"
            )
        return key

    async def read_blob(self, model_id: str, key: str) -> AsyncIterator[bytes]:
        model = await self._model(model_id)
        allowed = [_model_key(model_id)]
        if model.base_model_id:
            allowed.append(_model_key(model.base_model_id))
        try:
            async for chunk in self._artifacts.read(self._checked(key, allowed)):
                yield chunk
        except BlobNotFound as exc:
            raise NotFound("no such blob", reason="BLOB_NOT_FOUND") from exc

    async def write_blob(self, model_id: str, key: str, chunks: AsyncIterator[bytes]) -> StoredBlob:
        await self._model(model_id, writing=True)
        writer = await self._artifacts.open_writer(self._checked(key, [_model_key(model_id)]))
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > self._max_blob_bytes:
                    raise ResourceExhausted(
                        f"an artifact file may hold at most {self._max_blob_bytes} bytes",
                        reason="BLOB_TOO_LARGE",
                    )
                await writer.write(chunk)
            return await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def delete_blobs(self, model_id: str, prefix: str) -> None:
        await self._model(model_id, writing=True)
        key = self._checked(prefix, [_model_key(model_id)])
        if key.endswith("/"):
            await self._artifacts.delete_prefix(key)
        else:
            await self._artifacts.delete(key)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    fh = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(fh.read, READ_CHUNK_BYTES):
            yield chunk
    finally:
        fh.close()
