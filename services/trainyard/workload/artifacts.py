"""A workload's artifacts (a trained model's files) in blob storage, all or nothing.

An artifact is a named set of files under a prefix, e.g. `models/<model_id>/` + `model`. Each
write goes to a fresh version folder, `<name>/versions/<version>/<file>`, and becomes the
artifact only when its manifest, `<name>/MANIFEST.json` (the version, each file's size and
SHA-256, the metadata, the versions of what wrote it), is committed: one object, put
atomically by the blob storage. So a writer killed at any point leaves either the previous
artifact or none, never a half-written one that reads as complete; reads check every file
against the manifest. `sweep()` removes what killed writers left.
"""

from __future__ import annotations

import hashlib
import json
import platform
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from types import TracebackType
from typing import Any

from trainyard.blobs import (
    READ_CHUNK_BYTES,
    BlobNotFound,
    BlobStorage,
    BlobWriter,
    check_key,
    check_prefix,
)

MANIFEST_NAME = "MANIFEST.json"
#: Largest manifest read (a manifest lists files; a bigger one is not one this library wrote).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
FORMAT = 1


class ArtifactNotFound(LookupError):
    """No complete artifact of that name (never written, or no write got to its commit)."""


class ArtifactCorrupt(ValueError):
    """A file of the artifact is missing or differs from its manifest."""


@dataclass(frozen=True)
class ArtifactFile:
    """One file of an artifact: its path inside the artifact, size and hex SHA-256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a committed artifact holds."""

    name: str
    version: str
    files: tuple[ArtifactFile, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    written_by: dict[str, str] = field(default_factory=dict)

    def file(self, path: str) -> ArtifactFile:
        for f in self.files:
            if f.path == path:
                return f
        raise ArtifactNotFound(f"artifact {self.name!r} has no file {path!r}")

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
            "metadata": self.metadata,
            "created_at": self.created_at,
            "written_by": self.written_by,
        }
        return json.dumps(body, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            body = json.loads(raw)
            return cls(
                name=str(body["name"]),
                version=str(body["version"]),
                files=tuple(
                    ArtifactFile(str(f["path"]), int(f["size"]), str(f["sha256"]))
                    for f in body["files"]
                ),
                metadata=dict(body.get("metadata") or {}),
                created_at=str(body.get("created_at", "")),
                written_by={str(k): str(v) for k, v in (body.get("written_by") or {}).items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactCorrupt(f"unreadable artifact manifest: {exc}") from exc


def written_by() -> dict[str, str]:
    """The versions of what writes an artifact (kept in its manifest)."""
    try:
        trainyard = importlib_metadata.version("trainyard")
    except importlib_metadata.PackageNotFoundError:
        trainyard = "unknown"
    return {"trainyard": trainyard, "python": platform.python_version()}


class Artifacts:
    """The artifacts under one prefix (a folder ending in `/`, e.g. `models/<model_id>/`) of a
    started blob storage."""

    def __init__(self, storage: BlobStorage, prefix: str = "") -> None:
        self.storage = storage
        self.prefix = check_prefix(prefix)

    def _folder(self, name: str) -> str:
        if "/" in name:
            raise ValueError(f"an artifact name is one path segment, not {name!r}")
        check_key(name)
        return f"{self.prefix}{name}/"

    def _manifest_key(self, name: str) -> str:
        return self._folder(name) + MANIFEST_NAME

    def _file_key(self, name: str, version: str, path: str) -> str:
        # Both come from a manifest, which whoever wrote the artifact controls: keep them inside
        # the artifact's folder.
        check_key(path)
        if "/" in version or not version:
            raise ArtifactCorrupt(f"artifact {name!r} names a bad version {version[:80]!r}")
        check_key(version)
        return f"{self._folder(name)}versions/{version}/{path}"

    def uri(self, name: str) -> str:
        """Where the artifact's manifest is (file:///... or s3://...): what names it."""
        return self.storage.uri(self._manifest_key(name))

    def writer(self, name: str) -> ArtifactWriter:
        """A new version of `name`; it replaces the current one only on commit."""
        self._folder(name)
        version = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"
        return ArtifactWriter(self, name, version)

    async def write(
        self,
        name: str,
        files: Mapping[str, bytes],
        metadata: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """Write a whole artifact from bytes in memory."""
        async with self.writer(name) as writer:
            for path, data in files.items():
                await writer.add_bytes(path, data)
            return await writer.commit(metadata)

    async def manifest(self, name: str) -> Manifest:
        """The committed artifact's manifest; ArtifactNotFound when there is none."""
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in self.storage.read(self._manifest_key(name)):
                size += len(chunk)
                if size > MAX_MANIFEST_BYTES:
                    raise ArtifactCorrupt(
                        f"the manifest of artifact {name!r} is over {MAX_MANIFEST_BYTES} bytes"
                    )
                chunks.append(chunk)
        except BlobNotFound as exc:
            raise ArtifactNotFound(f"no complete artifact {name!r} under {self.prefix!r}") from exc
        found = Manifest.from_json(b"".join(chunks))
        if found.name != name:
            raise ArtifactCorrupt(f"the manifest of artifact {name!r} names {found.name[:80]!r}")
        return found

    async def read_bytes(self, name: str, path: str) -> bytes:
        """One file of the committed artifact, checked against its manifest."""
        found = await self.manifest(name)
        entry = found.file(path)
        data = bytearray()
        digest = hashlib.sha256()
        async for chunk in self._chunks(name, found.version, entry):
            data += chunk
            digest.update(chunk)
        _check(entry, len(data), digest.hexdigest(), name)
        return bytes(data)

    async def stream(self, manifest: Manifest, path: str) -> AsyncIterator[bytes]:
        """One file of a committed artifact (of `manifest`, from `manifest()`) in chunks,
        checked against the manifest at its end (ArtifactCorrupt when it differs)."""
        entry = manifest.file(path)
        digest = hashlib.sha256()
        size = 0
        async for chunk in self._chunks(manifest.name, manifest.version, entry):
            size += len(chunk)
            if size > entry.size:
                break
            digest.update(chunk)
            yield chunk
        _check(entry, size, digest.hexdigest(), manifest.name)

    async def download(self, name: str, dest: Path) -> Manifest:
        """Every file of the committed artifact into folder `dest`, each checked."""
        found = await self.manifest(name)
        for entry in found.files:
            target = dest.joinpath(*check_key(entry.path))
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            size = 0
            with open(target, "wb") as fh:  # noqa: ASYNC230 - small writes, the trainer's own disk
                async for chunk in self._chunks(name, found.version, entry):
                    fh.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            _check(entry, size, digest.hexdigest(), name)
        return found

    async def _chunks(self, name: str, version: str, entry: ArtifactFile) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.storage.read(self._file_key(name, version, entry.path)):
                yield chunk
        except BlobNotFound as exc:
            raise ArtifactCorrupt(
                f"file {entry.path!r} of artifact {name!r} is missing from storage"
            ) from exc

    async def sweep(self, name: str) -> list[str]:
        """Delete the versions of `name` that no manifest names (left by writers that died
        before their commit); returns them. Do not run it while a writer of `name` is busy."""
        try:
            current: str | None = (await self.manifest(name)).version
        except ArtifactNotFound:
            current = None
        versions_prefix = f"{self._folder(name)}versions/"
        found = {
            info.key[len(versions_prefix) :].split("/", 1)[0]
            async for info in self.storage.list_blobs(versions_prefix)
        }
        stale = sorted(v for v in found if v != current)
        for version in stale:
            await self.storage.delete_prefix(f"{versions_prefix}{version}/")
        return stale


def _check(entry: ArtifactFile, size: int, sha256: str, name: str) -> None:
    if size != entry.size or sha256 != entry.sha256:
        raise ArtifactCorrupt(
            f"file {entry.path!r} of artifact {name!r} does not match its manifest "
            f"({size} bytes, sha256 {sha256[:12]}...; expected {entry.size}, "
            f"{entry.sha256[:12]}...)"
        )


class ArtifactWriter:
    """Adds files to one new version; `commit()` makes it the artifact. As a context manager
    it aborts (deletes the version) when the block raises; leaving without commit aborts too."""

    def __init__(self, artifacts: Artifacts, name: str, version: str) -> None:
        self._artifacts = artifacts
        self.name = name
        self.version = version
        self._files: dict[str, ArtifactFile] = {}
        self._done = False

    async def __aenter__(self) -> ArtifactWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            await self.abort()

    async def _open(self, path: str) -> BlobWriter:
        if self._done:
            raise RuntimeError(f"the writer of artifact {self.name!r} is closed")
        if path in self._files:
            raise ValueError(f"artifact {self.name!r} already has a file {path!r}")
        key = self._artifacts._file_key(self.name, self.version, path)
        return await self._artifacts.storage.open_writer(key)

    async def add_bytes(self, path: str, data: bytes) -> ArtifactFile:
        """Add a file (a `/`-separated path inside the artifact) from bytes."""
        writer = await self._open(path)
        try:
            await writer.write(data)
            stored = await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        return self._added(path, stored.size, stored.sha256)

    async def add_file(self, path: str, source: Path) -> ArtifactFile:
        """Add a file from the local disk, streamed."""

        async def chunks() -> AsyncIterator[bytes]:
            with open(source, "rb") as fh:  # noqa: ASYNC230 - chunked reads of a local file
                while chunk := fh.read(READ_CHUNK_BYTES):
                    yield chunk

        return await self.add_chunks(path, chunks())

    async def add_chunks(self, path: str, chunks: AsyncIterator[bytes]) -> ArtifactFile:
        """Add a file from a stream of chunks (e.g. relayed from a workload)."""
        writer = await self._open(path)
        try:
            async for chunk in chunks:
                await writer.write(chunk)
            stored = await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        return self._added(path, stored.size, stored.sha256)

    def _added(self, path: str, size: int, sha256: str) -> ArtifactFile:
        entry = ArtifactFile(path, size, sha256)
        self._files[path] = entry
        return entry

    async def commit(self, metadata: Mapping[str, Any] | None = None) -> Manifest:
        """Make this version the artifact (one atomic put of its manifest)."""
        if self._done:
            raise RuntimeError(f"the writer of artifact {self.name!r} is closed")
        manifest = Manifest(
            name=self.name,
            version=self.version,
            files=tuple(sorted(self._files.values(), key=lambda f: f.path)),
            metadata=dict(metadata or {}),
            created_at=datetime.now(UTC).isoformat(),
            written_by=written_by(),
        )
        await self._artifacts.storage.put_bytes(
            self._artifacts._manifest_key(self.name), manifest.to_json()
        )
        self._done = True
        return manifest

    async def abort(self) -> None:
        """Drop this version's files; the current artifact stays as it was."""
        if self._done:
            return
        self._done = True
        folder = f"{self._artifacts._folder(self.name)}versions/{self.version}/"
        await self._artifacts.storage.delete_prefix(folder)
