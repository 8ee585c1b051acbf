"""A trainer's data through the orchestrator (workload.relay), against a TrainService double
on a real socket: what `fetch_inputs` and `storage_for` do when the config says
`"relay": "orchestrator"`, and that an orchestrator away for a moment costs a retry, not the
training (an input read again from its start, a blob written again whole)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.train_service import RelayTrainService, serve
from trainyard.workload import (
    CONFIG_JSON_VAR,
    Artifacts,
    InputError,
    OrchestratorBlobStorage,
    fetch_inputs,
    load_config,
    storage_for,
)

ROOT = "s3://platform/artifacts/"


@pytest.fixture
async def relay() -> AsyncIterator[RelayTrainService]:
    service = RelayTrainService()  # type: ignore[abstract]  # see tests/support/train_service.py
    server, address = await serve(service)
    platform = {"relay": "orchestrator", "orchestrator_address": address, "job_token": "t0k"}
    await load_config({CONFIG_JSON_VAR: json.dumps({"platform": platform})})
    try:
        yield service
    finally:
        await load_config({CONFIG_JSON_VAR: json.dumps({"platform": {}})})  # relay off again
        await server.stop(None)


async def test_inputs_are_streamed_into_the_work_dir_and_reread_after_a_restart(
    relay: RelayTrainService, tmp_path: Path
) -> None:
    relay.inputs["s3://data/docs/"] = [("sports/a.txt", b"A" * 1000), ("b.txt", b"B" * 10)]
    relay.inputs["file:///srv/one.csv"] = [("one.csv", b"x,y\n1,2\n")]
    relay.fail_once.add("ReadTrainInput")
    files = await fetch_inputs(["s3://data/docs/", "file:///srv/one.csv"], tmp_path)
    assert [(f.name, f.uri, f.path.read_bytes()) for f in files] == [
        ("sports/a.txt", "s3://data/docs/", b"A" * 1000),
        ("b.txt", "s3://data/docs/", b"B" * 10),
        ("one.csv", "file:///srv/one.csv", b"x,y\n1,2\n"),
    ]
    assert all(f.path.is_relative_to(tmp_path) for f in files)
    assert relay.calls["ReadTrainInput"] == 3  # the first one failed half way
    assert {r.authorization for r in relay.received} <= {"Bearer t0k"}


async def test_inputs_of_the_same_name_stay_apart(relay: RelayTrainService, tmp_path: Path) -> None:
    relay.inputs["upload-a"] = [("reviews.csv", b"training rows")]
    relay.inputs["upload-b"] = [("reviews.csv", b"test rows")]
    train = await fetch_inputs(["upload-a"], tmp_path)
    test = await fetch_inputs(["upload-b"], tmp_path)  # as a trainer reads its test_files
    assert train[0].path != test[0].path
    assert train[0].path.read_bytes() == b"training rows"
    assert test[0].path.read_bytes() == b"test rows"


async def test_an_input_the_orchestrator_refuses_is_an_input_error(
    relay: RelayTrainService, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match="PERMISSION_DENIED"):
        await fetch_inputs(["s3://someone-else/data.csv"], tmp_path)
    assert relay.calls["ReadTrainInput"] == 1  # refused, not retried
    # What its owner reads names neither the platform's address nor a server path.
    with pytest.raises(InputError) as refused:
        await fetch_inputs(["file:///srv/trainyard/uploads/u1/data.csv"], tmp_path)
    assert str(refused.value).startswith("input file 'data.csv': ReadTrainInput failed")
    assert "127.0.0.1" not in str(refused.value) and "/srv/" not in str(refused.value)


async def test_artifacts_are_written_and_read_through_the_orchestrator(
    relay: RelayTrainService,
) -> None:
    storage = storage_for(ROOT)
    assert isinstance(storage, OrchestratorBlobStorage)
    relay.fail_once |= {"WriteTrainBlob", "ReadTrainBlob"}
    await storage.start()
    try:
        artifacts = Artifacts(storage, "models/m1/")
        big = bytes(range(256)) * 20_000  # over the spool's memory part
        manifest = await artifacts.write("model", {"weights.bin": big, "model.json": b"{}"})
        assert artifacts.uri("model") == ROOT + "models/m1/model/MANIFEST.json"
        assert relay.blobs[f"models/m1/model/versions/{manifest.version}/weights.bin"] == big
        assert await artifacts.read_bytes("model", "weights.bin") == big
        writer = artifacts.writer("model")
        await writer.add_bytes("half.bin", b"half")
        await writer.abort()  # DeleteTrainBlobs of its version folder
        assert not [k for k in relay.blobs if f"/versions/{writer.version}/" in k]
    finally:
        await storage.close()
    # weights.bin (twice: the first try met the restart), model.json, MANIFEST, half.bin
    assert relay.calls["WriteTrainBlob"] == 5
    assert await _manifest_unchanged(relay, manifest.version)


async def _manifest_unchanged(relay: RelayTrainService, version: str) -> bool:
    found: str = json.loads(relay.blobs["models/m1/model/MANIFEST.json"])["version"]
    return found == version
