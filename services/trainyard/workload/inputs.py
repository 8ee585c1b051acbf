"""A workload's input files, made readable on local disk: `await fetch_inputs(uris, dest)`.

The orchestrator hands a trainer the URIs of its data: `file:///abs/path` (a file or a folder
under a root the operator allowed, or an upload on the same machine), `s3://bucket/key` (an
object or a prefix ending in `/`). Each becomes one or more `InputFile`s: a path the trainer
opens with plain file I/O and a name relative to what the URI named (`sports/a.txt` for a file
found under a folder or prefix, the base name for a single file), so document folders keep
their category. Local files are read in place; S3 objects are streamed to `dest` (the job's
working directory) without being held in memory. Symlinks inside a folder are skipped: a
folder's content is what lies in it. When the config relays data through the orchestrator (a
trainer it started: see relay.py), every URI is read through it into `dest` instead, whatever
its scheme: the workload itself may read none of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from trainyard.blobs import BlobNotFound, S3BlobStorage, StorageSettings, parse_blob_uri
from trainyard.workload.relay import RelayError, read_input, relay


class InputError(Exception):
    """An input URI that names nothing readable; the message says which and why."""


@dataclass(frozen=True)
class InputFile:
    path: Path  # a local file, readable by this process
    name: str  # relative to what the URI named: "sports/a.txt", or the base name of a file
    uri: str  # where it came from


async def fetch_inputs(
    uris: Sequence[str], dest: Path, settings: StorageSettings | None = None
) -> list[InputFile]:
    """Every file the URIs name, in order (files of a folder sorted by name); InputError
    for a URI that is malformed or names nothing."""
    out: list[InputFile] = []
    relayed = relay()
    if relayed is not None:
        for uri in uris:
            # One folder per URI (its files keep their names; two inputs, or the training and
            # the test files, may hold files of the same name).
            folder = dest / "inputs" / hashlib.sha256(uri.encode()).hexdigest()[:24]
            try:
                files = await read_input(uri, folder, *relayed)
            except RelayError as exc:
                raise InputError(f"{_shown(uri)}: {exc}") from exc
            out += [InputFile(path, name, uri) for path, name in files]
        return out
    for uri in uris:
        try:
            parsed = parse_blob_uri(uri)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        if parsed.scheme == "file":
            out += _local(Path(parsed.path), uri)
        else:
            out += await _s3(parsed.bucket, parsed.key, uri, dest / "inputs", settings)
    return out


def _shown(uri: str) -> str:
    """An input URI as its owner may see it: an S3 URI whole (they gave it); a file on the
    platform (an upload's, say) by its name only, never the server's path."""
    if uri.startswith("file:"):
        return f"input file {PurePosixPath(uri).name!r}"
    return uri


def _local(path: Path, uri: str) -> list[InputFile]:
    if path.is_file():
        return [InputFile(path, path.name, uri)]
    if not path.is_dir():
        raise InputError(f"{uri}: no such file or folder")
    found: list[InputFile] = []
    for root, dirs, files in os.walk(path, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            full = Path(root) / name
            if full.is_symlink() or not full.is_file():
                continue
            found.append(InputFile(full, full.relative_to(path).as_posix(), full.as_uri()))
    if not found:
        raise InputError(f"{uri}: the folder holds no files")
    return found


async def _s3(
    bucket: str, key: str, uri: str, dest: Path, settings: StorageSettings | None
) -> list[InputFile]:
    s = settings if settings is not None else StorageSettings()
    storage = S3BlobStorage(bucket, endpoint_url=s.s3_endpoint_url, region=s.s3_region)
    await storage.start()
    try:
        if key and not key.endswith("/"):
            keys = [(key, PurePosixPath(key).name)]
        else:
            listed = sorted([info.key async for info in storage.list_blobs(key)])
            keys = [(k, k[len(key) :]) for k in listed if not k.endswith("/")]
            if not keys:
                raise InputError(f"{uri}: no objects under this prefix")
        found: list[InputFile] = []
        for item, name in keys:
            local = dest / bucket / item
            local.parent.mkdir(parents=True, exist_ok=True)
            partial = local.with_name(local.name + ".part")
            try:
                fh = await asyncio.to_thread(open, partial, "wb")
                try:
                    async for chunk in storage.read(item):
                        await asyncio.to_thread(fh.write, chunk)
                finally:
                    fh.close()
            except BlobNotFound as exc:
                partial.unlink(missing_ok=True)
                raise InputError(f"s3://{bucket}/{item}: no such object") from exc
            partial.replace(local)
            found.append(InputFile(local, name, f"s3://{bucket}/{item}"))
        return found
    finally:
        await storage.close()
