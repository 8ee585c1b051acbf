"""Trainings on S3 (a moto server), as a user does them through Envoy: the upload service and
the orchestrator keep their blobs in S3, a train request names an S3 prefix among the
locations the operator allowed, and the trainer (whose environment holds no AWS credentials
nor endpoint) reads it and writes its model through the orchestrator, with its job token.

Outside the allowed locations, the platform's own storage (where every user's uploads are)
and another user's upload answer 403; a job token reads no input or blob but its own model's."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from tests.support.platform import Platform, start_platform, unique_name
from tests.support.upload_service import MotoServer
from trainyard.api.orchestrator.v1 import messages_pb2 as msgs
from trainyard.api.orchestrator.v1 import service_pb2_grpc as svc

PLATFORM_BUCKET = "ty-platform"
DATA_BUCKET = "ty-data"
OTHER_BUCKET = "ty-other"
MISSING_BUCKET = "ty-never-created"


def _text_csv(repeat: int = 6) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    for i in range(repeat):
        for text in ("a great film", "wonderful acting", "loved every minute"):
            writer.writerow([f"{text} {i}", "pos"])
        for text in ("a dull film", "terrible acting", "hated every minute"):
            writer.writerow([f"{text} {i}", "neg"])
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def platform(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    s3 = moto.client()
    for bucket in (PLATFORM_BUCKET, DATA_BUCKET, OTHER_BUCKET):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=DATA_BUCKET, Key="reviews/train.csv", Body=_text_csv())
    s3.put_object(Bucket=DATA_BUCKET, Key="private/train.csv", Body=_text_csv())
    s3.put_object(Bucket=OTHER_BUCKET, Key="train.csv", Body=_text_csv())
    storage: dict[str, Any] = {
        "storage_backend": "s3",
        "s3_bucket": PLATFORM_BUCKET,
        "s3_prefix": "ty/",
        "s3_endpoint_url": moto.endpoint,
    }
    p = start_platform(
        tmp_path_factory.mktemp("s3-train"),
        upload_settings=storage,
        # The platform's own bucket is allowed on purpose: its storage is refused all the same.
        s3_input_locations=[f"{DATA_BUCKET}/reviews/", PLATFORM_BUCKET, MISSING_BUCKET],
        **storage,
    )
    try:
        yield p
    finally:
        p.harness.close()


def _body(path: str, location: str = "s3") -> dict[str, object]:
    return {
        "model_name": unique_name("s3"),
        "model_options": {"text_column": "text", "label_column": "label", "n_target_classes": 2},
        "data": {"supervised_files": [{"location": location, "path": path}]},
        "train_options": {"test_split": 0.25},
    }


def test_nlp_text_trains_from_an_s3_prefix_into_s3(platform: Platform, moto: MotoServer) -> None:
    resp = platform.train("nlp-text", _body(f"s3://{DATA_BUCKET}/reviews/"))
    assert resp.status_code == 200, resp.text
    model_id = resp.json()["model_id"]
    status = platform.wait_final(model_id)
    assert status["status"] == "complete", status

    # The model lives in the platform's bucket, written through the orchestrator.
    keys = moto.keys(PLATFORM_BUCKET, f"ty/artifacts/models/{model_id}/")
    assert f"ty/artifacts/models/{model_id}/model/MANIFEST.json" in keys, keys
    predicted = httpx.post(
        f"{platform.http}/api/v2/model/{model_id}/predict",
        headers=platform.headers(),
        json={"queries": ["a great film 9", "terrible acting 9"], "top_k": 1},
        timeout=60,
    )
    assert predicted.status_code == 200, predicted.text
    labels = [p["predicted_classes"][0][0] for p in predicted.json()["predictions"]]
    assert labels == ["pos", "neg"]
    report = httpx.get(
        f"{platform.http}/api/v2/train/{model_id}/report", headers=platform.headers(), timeout=60
    )
    assert report.status_code == 200, report.text


@pytest.mark.parametrize(
    "path",
    [
        f"s3://{OTHER_BUCKET}/train.csv",  # a bucket not allowed
        f"s3://{DATA_BUCKET}/private/train.csv",  # the allowed bucket, outside the prefix
        f"s3://{DATA_BUCKET}/reviews",  # a sibling of the allowed prefix: reviews-old/ ...
        f"s3://{PLATFORM_BUCKET}/ty/uploads/",  # the platform's own storage: every upload
        f"s3://{PLATFORM_BUCKET}/ty/",  # ... and all of it
        f"s3://{PLATFORM_BUCKET}/t",  # ... and what holds it
    ],
)
def test_s3_paths_outside_the_allowed_locations_are_403(platform: Platform, path: str) -> None:
    resp = platform.train("nlp-text", _body(path))
    assert resp.status_code == 403, resp.text
    assert "outside the S3 locations" in resp.json()["message"]


def test_a_missing_s3_input_is_404(platform: Platform) -> None:
    resp = platform.train("nlp-text", _body(f"s3://{DATA_BUCKET}/reviews/nothing.csv"))
    assert resp.status_code == 404, resp.text
    assert "names no S3 object" in resp.json()["message"]


def test_an_allowed_bucket_s3_cannot_read_is_503_not_a_crash(platform: Platform) -> None:
    resp = platform.train("nlp-text", _body(f"s3://{MISSING_BUCKET}/train.csv"))
    assert resp.status_code == 503, resp.text
    assert "cannot be read now" in resp.json()["message"]


def test_another_users_upload_in_s3_is_unreachable(platform: Platform, moto: MotoServer) -> None:
    bobs = platform.upload([("secret.csv", _text_csv())], user="bob")
    keys = moto.keys(PLATFORM_BUCKET, "ty/uploads/")
    bobs_key = next(k for k in keys if k.endswith("secret.csv"))

    by_id = platform.train("nlp-text", _body(bobs, location="upload"))
    assert by_id.status_code == 403, by_id.text
    by_key = platform.train("nlp-text", _body(f"s3://{PLATFORM_BUCKET}/{bobs_key}"))
    assert by_key.status_code == 403, by_key.text

    # Alice's own training's job token cannot read Bob's upload either, by any URI.
    own = platform.upload([("mine.csv", _text_csv())])
    resp = platform.train("nlp-text", _body(own, location="upload"))
    assert resp.status_code == 200, resp.text
    model_id = resp.json()["model_id"]
    token = platform.harness.authority.mint_job("alice", model_id=model_id)
    address = platform.harness.servers["orchestrator"].address
    channel = grpc.insecure_channel(address)
    try:
        stub = svc.TrainServiceStub(channel)
        meta = (("authorization", f"Bearer {token}"),)
        for uri in (f"s3://{PLATFORM_BUCKET}/{bobs_key}", f"s3://{DATA_BUCKET}/reviews/"):
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.ReadTrainInput(msgs.ReadTrainInputRequest(uri=uri), metadata=meta))
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, uri
        with pytest.raises(grpc.RpcError) as refused:
            list(
                stub.ReadTrainBlob(
                    msgs.ReadTrainBlobRequest(key=f"uploads/{bobs_key}"), metadata=meta
                )
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as refused:
            stub.WriteTrainBlob(
                iter([msgs.WriteTrainBlobRequest(key="models/another-model/model/x", data=b"x")]),
                metadata=meta,
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Its own input is readable: what the trainer itself does.
        config_uris = [
            m.file.uri
            for m in stub.ReadTrainInput(
                msgs.ReadTrainInputRequest(uri=_own_input(platform, model_id)), metadata=meta
            )
            if m.WhichOneof("chunk") == "file"
        ]
        assert len(config_uris) == 1
    finally:
        channel.close()
    assert platform.wait_final(model_id)["status"] == "complete"


def _own_input(platform: Platform, model_id: str) -> str:
    registry = platform.harness.servers["orchestrator"].app.state["registry"]  # type: ignore[union-attr]
    model = platform.harness.loop.run(registry.get(model_id))
    uri: str = model.train_config["config"]["supervised_files"][0]
    return uri
