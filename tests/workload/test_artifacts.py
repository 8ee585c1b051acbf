"""Artifacts are all or nothing: a writer killed between writing its files and committing
leaves the previous artifact (or none), never a half-written one that reads as complete.
On the local backend and on S3 (moto)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.upload_service import AWS_ENV, MotoServer
from trainyard.blobs import BlobStorage, StorageSettings, storage_at
from trainyard.workload import ArtifactCorrupt, ArtifactNotFound, Artifacts

BUCKET = "trainyard-artifacts-test"
PREFIX = "models/m-1/"


@pytest.fixture(params=["local", "s3"])
async def root_uri(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A folder URI of a fresh storage, and the env a child process needs to reach it."""
    if request.param == "local":
        yield (tmp_path / "blobs").as_uri() + "/"
        return
    moto: MotoServer = request.getfixturevalue("moto")
    moto.client().create_bucket(Bucket=BUCKET)
    request.getfixturevalue("monkeypatch").setenv("TRAINYARD_S3_ENDPOINT_URL", moto.endpoint)
    yield f"s3://{BUCKET}/{os.urandom(4).hex()}/"


async def open_storage(uri: str) -> BlobStorage:
    storage = storage_at(uri, StorageSettings())
    await storage.start()
    return storage


def killed_writer(uri: str, files: dict[str, bytes]) -> None:
    """A child process that writes every file of a new version of `model`, then is killed
    (SIGKILL) before its commit."""
    code = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from trainyard.blobs import storage_at
        from trainyard.workload import Artifacts

        async def main():
            storage = storage_at({uri!r})
            await storage.start()
            writer = Artifacts(storage, {PREFIX!r}).writer("model")
            for path, data in {files!r}.items():
                await writer.add_bytes(path, data)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    env = {**os.environ, **AWS_ENV}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr.decode()


async def test_a_killed_writer_leaves_no_artifact_that_reads_as_complete(root_uri: str) -> None:
    storage = await open_storage(root_uri)
    try:
        artifacts = Artifacts(storage, PREFIX)
        killed_writer(root_uri, {"weights.bin": b"half", "vocab.txt": b"a\nb\n"})
        with pytest.raises(ArtifactNotFound):
            await artifacts.manifest("model")
        with pytest.raises(ArtifactNotFound):
            await artifacts.read_bytes("model", "weights.bin")

        weights = os.urandom(300_000)
        first = await artifacts.write(
            "model", {"weights.bin": weights, "meta/vocab.txt": b"x\n"}, {"epochs": 2}
        )
        assert [f.path for f in first.files] == ["meta/vocab.txt", "weights.bin"]
        assert first.file("weights.bin").sha256 == hashlib.sha256(weights).hexdigest()
        assert first.written_by["python"] and first.metadata == {"epochs": 2}

        # A second write dies before its commit: the first artifact is still the artifact.
        killed_writer(root_uri, {"weights.bin": b"second, never committed"})
        assert (await artifacts.manifest("model")).version == first.version
        assert await artifacts.read_bytes("model", "weights.bin") == weights

        assert len(await artifacts.sweep("model")) == 2, "both dead writers' versions"
        assert await artifacts.sweep("model") == []
        assert await artifacts.read_bytes("model", "meta/vocab.txt") == b"x\n"
    finally:
        await storage.close()


async def doomed_write(artifacts: Artifacts) -> None:
    async with artifacts.writer("model") as writer:
        await writer.add_bytes("a.txt", b"new but doomed")
        raise RuntimeError("training blew up")


async def test_a_block_that_raises_aborts_and_a_new_version_replaces_the_old(
    root_uri: str, tmp_path: Path
) -> None:
    storage = await open_storage(root_uri)
    try:
        artifacts = Artifacts(storage, PREFIX)
        old = await artifacts.write("model", {"a.txt": b"old"})
        with pytest.raises(RuntimeError, match="training blew up"):
            await doomed_write(artifacts)
        assert (await artifacts.manifest("model")).version == old.version
        assert await artifacts.sweep("model") == [], "the aborted version left nothing"

        source = tmp_path / "big.bin"
        source.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
        async with artifacts.writer("model") as writer:
            await writer.add_file("big.bin", source)
            with pytest.raises(ValueError, match="already has a file"):
                await writer.add_bytes("big.bin", b"")
            new = await writer.commit({"note": "v2"})
        assert new.version != old.version
        with pytest.raises(ArtifactNotFound, match=r"no file 'a\.txt'"):
            await artifacts.read_bytes("model", "a.txt")
        dest = tmp_path / "download"
        await artifacts.download("model", dest)
        assert (dest / "big.bin").read_bytes() == source.read_bytes()
        assert await artifacts.sweep("model") == [old.version]
    finally:
        await storage.close()


async def test_a_file_that_differs_from_its_manifest_is_corrupt(tmp_path: Path) -> None:
    storage = await open_storage((tmp_path / "blobs").as_uri() + "/")
    artifacts = Artifacts(storage, PREFIX)
    written = await artifacts.write("model", {"w.bin": b"12345"})
    version_dir = tmp_path / "blobs" / "models" / "m-1" / "model" / "versions" / written.version
    (version_dir / "w.bin").write_bytes(b"1234X")
    with pytest.raises(ArtifactCorrupt, match="does not match its manifest"):
        await artifacts.read_bytes("model", "w.bin")
    (version_dir / "w.bin").unlink()
    with pytest.raises(ArtifactCorrupt, match="missing from storage"):
        await artifacts.read_bytes("model", "w.bin")
    for bad in ("a/b", "..", ""):
        with pytest.raises(ValueError):
            artifacts.writer(bad)
    with pytest.raises(ValueError, match="invalid blob key"):
        async with artifacts.writer("model") as writer:
            await writer.add_bytes("../escape", b"")
