"""What a job token may read and write through the orchestrator (ReadTrainInput, ReadTrainBlob,
WriteTrainBlob, DeleteTrainBlobs), called over gRPC as a trainer does: its own model's inputs
and blobs only, with the local roots checked again at read time, so a file swapped for a
symlink out of the root after the request reads nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.orchestrator.test_training_e2e import _text_csv
from tests.support.platform import Platform, start_platform, unique_name
from trainyard.api.orchestrator.v1 import messages_pb2 as msgs
from trainyard.api.orchestrator.v1 import service_pb2_grpc as svc


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("wl-data")
    root = tmp / "root"
    (root / "folder" / "sports").mkdir(parents=True)
    (root / "folder" / "sports" / "a.csv").write_bytes(_text_csv())
    (root / "single.csv").write_bytes(_text_csv())
    # The trainer sleeps: its model stays in training while the test plays the trainer.
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    trainer = bin_dir / "trainer"
    trainer.write_text("#!/bin/sh\nexec sleep 600\n")
    trainer.chmod(0o755)
    p = start_platform(
        tmp / "data",
        local_roots=[root],
        trainer_python=str(trainer),
        jobrunner_settings={"workload_user": ""},  # the script lives under a private tmp
    )
    try:
        yield p
    finally:
        p.harness.close()


def _root(platform: Platform) -> Path:
    return platform.data.parent / "root"


def _model(platform: Platform, *paths: str, user: str = "alice") -> tuple[str, Any, Any]:
    """A model whose training reads `paths` (local), its job token's stub and metadata."""
    resp = platform.train(
        "nlp-text",
        {
            "model_name": unique_name("data"),
            "model_options": {
                "text_column": "text",
                "label_column": "label",
                "n_target_classes": 2,
            },
            "data": {"supervised_files": [{"location": "local", "path": p} for p in paths]},
        },
        user=user,
    )
    assert resp.status_code == 200, resp.text
    model_id: str = resp.json()["model_id"]
    token = platform.harness.authority.mint_job(user, model_id=model_id)
    channel = grpc.insecure_channel(platform.harness.servers["orchestrator"].address)
    return model_id, svc.TrainServiceStub(channel), (("authorization", f"Bearer {token}"),)


def _read(stub: Any, meta: Any, uri: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    name = ""
    for message in stub.ReadTrainInput(msgs.ReadTrainInputRequest(uri=uri), metadata=meta):
        if message.WhichOneof("chunk") == "file":
            name = message.file.name
            files[name] = b""
        else:
            files[name] += message.data
    return files


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    code: grpc.StatusCode = refused.value.code()
    return code


def test_a_folder_input_streams_its_files_and_a_swapped_symlink_reads_nothing(
    platform: Platform,
) -> None:
    root = _root(platform)
    model_id, stub, meta = _model(platform, str(root / "folder"), str(root / "single.csv"))
    folder_uri = (root / "folder").resolve().as_uri() + "/"
    single_uri = (root / "single.csv").resolve().as_uri()
    assert _read(stub, meta, folder_uri) == {"sports/a.csv": _text_csv()}
    assert _read(stub, meta, single_uri) == {"single.csv": _text_csv()}

    # A URI the config does not list, even inside the root, is refused.
    other = (root / "folder" / "sports" / "a.csv").resolve().as_uri()
    assert _code(lambda: _read(stub, meta, other)) == grpc.StatusCode.PERMISSION_DENIED

    # After the request, the files are swapped for symlinks out of the root.
    secret = platform.data / "auth-secret-like"
    secret.write_text("not for workloads")
    (root / "folder" / "sports" / "a.csv").unlink()
    (root / "folder" / "sports" / "a.csv").symlink_to(secret)
    (root / "single.csv").unlink()
    (root / "single.csv").symlink_to(secret)
    assert _code(lambda: _read(stub, meta, folder_uri)) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: _read(stub, meta, single_uri)) == grpc.StatusCode.PERMISSION_DENIED
    _stop(platform, model_id)


def test_blobs_only_under_the_tokens_own_model(platform: Platform) -> None:
    root = _root(platform)
    (root / "b.csv").write_bytes(_text_csv())
    model_id, stub, meta = _model(platform, str(root / "b.csv"))
    other_id, _, _ = _model(platform, str(root / "b.csv"), user="bob")
    key = f"models/{model_id}/scratch/blob.bin"
    data = b"x" * (3 * 1024 * 1024 + 5)  # more than one message
    written = stub.WriteTrainBlob(
        iter(
            [msgs.WriteTrainBlobRequest(key=key)]
            + [
                msgs.WriteTrainBlobRequest(data=data[i : i + (1 << 20)])
                for i in range(0, len(data), 1 << 20)
            ]
        ),
        metadata=meta,
    )
    assert (written.size, written.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    back = b"".join(
        m.data for m in stub.ReadTrainBlob(msgs.ReadTrainBlobRequest(key=key), metadata=meta)
    )
    assert back == data

    for bad, code in [
        (f"models/{other_id}/model/MANIFEST.json", grpc.StatusCode.PERMISSION_DENIED),
        (f"models/{model_id}", grpc.StatusCode.PERMISSION_DENIED),
        (f"models/{model_id}/../{other_id}/model/x", grpc.StatusCode.INVALID_ARGUMENT),
        ("uploads/anything", grpc.StatusCode.PERMISSION_DENIED),
    ]:
        assert (
            _code(
                lambda bad=bad: list(
                    stub.ReadTrainBlob(msgs.ReadTrainBlobRequest(key=bad), metadata=meta)
                )
            )
            == code
        ), bad
        assert (
            _code(
                lambda bad=bad: stub.WriteTrainBlob(
                    iter([msgs.WriteTrainBlobRequest(key=bad, data=b"planted")]), metadata=meta
                )
            )
            == code
        ), bad
    assert (
        _code(
            lambda: stub.DeleteTrainBlobs(
                msgs.DeleteTrainBlobsRequest(prefix=f"models/{other_id}/"), metadata=meta
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # A user token is no job token.
    user_meta = (("authorization", platform.headers()["authorization"]),)
    assert (
        _code(
            lambda: list(stub.ReadTrainBlob(msgs.ReadTrainBlobRequest(key=key), metadata=user_meta))
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )

    stub.DeleteTrainBlobs(
        msgs.DeleteTrainBlobsRequest(prefix=f"models/{model_id}/scratch/"), metadata=meta
    )
    assert (
        _code(lambda: list(stub.ReadTrainBlob(msgs.ReadTrainBlobRequest(key=key), metadata=meta)))
        == grpc.StatusCode.NOT_FOUND
    )

    # A stopped training's straggler writes nothing more to its model.
    _stop(platform, model_id)
    _stop(platform, other_id, user="bob")
    assert (
        _code(
            lambda: stub.WriteTrainBlob(
                iter([msgs.WriteTrainBlobRequest(key=key, data=b"late")]), metadata=meta
            )
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )


def _stop(platform: Platform, model_id: str, user: str = "alice") -> None:
    resp = httpx.post(
        f"{platform.http}/api/v2/train/{model_id}/stop",
        headers=platform.headers(user),
        json={},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
