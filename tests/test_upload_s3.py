"""The upload service on S3 (a moto server: a real HTTP S3 endpoint in a child process) behind
real Envoy. The S3 backend's own tests are in tests/blobs/test_s3.py."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from tests.support.harness import TEST_SECRET, Harness
from tests.support.upload_service import MotoServer
from trainyard.api.upload.v1 import messages_pb2 as msgs
from trainyard.api.upload.v1 import service_pb2_grpc as svc
from trainyard.runtime.settings import CommonSettings
from trainyard.upload.app import build
from trainyard.upload.settings import UploadSettings

BUCKET = "trainyard-test"
MiB = 1024 * 1024


@pytest.fixture(scope="module", autouse=True)
def bucket(moto: MotoServer) -> str:
    moto.client().create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture(scope="module")
def s3_gateway(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    tmp: Path = tmp_path_factory.mktemp("upload-s3")
    harness = Harness(tmp)
    common = CommonSettings(data_dir=tmp, auth_secret=TEST_SECRET)
    own = UploadSettings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'upload.db'}",
        storage_backend="s3",
        s3_bucket=BUCKET,
        s3_prefix="svc/",
        s3_endpoint_url=moto.endpoint,
    )
    harness.start_app("upload", harness.loop.run(build(common, own)))
    harness.start_envoy()
    try:
        yield harness
    finally:
        harness.close()


def test_upload_resolve_read_delete_on_s3(s3_gateway: Harness, moto: MotoServer) -> None:
    big = os.urandom(12 * MiB)
    resp = httpx.post(
        s3_gateway.http + "/api/v2/train/upload-data",
        headers=s3_gateway.user_headers("alice"),
        files=[("file", ("big.bin", big)), ("file", ("../small.csv", b"1,2"))],
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    upload_id = resp.json()["upload_id"]
    prefix = f"svc/uploads/{upload_id}/"
    assert moto.keys(BUCKET, "svc/") == [prefix + "big.bin", prefix + "small.csv"]
    assert moto.multipart_uploads(BUCKET) == []

    service = tuple(s3_gateway.service_headers("orchestrator").items())
    with grpc.insecure_channel(s3_gateway.servers["upload"].address) as channel:
        stub = svc.UploadServiceStub(channel)
        resolved = stub.ResolveUpload(
            msgs.ResolveUploadRequest(upload_id=upload_id, owner="alice"), metadata=service
        ).upload
        assert [(f.name, f.uri, f.local_path) for f in resolved.files] == [
            ("big.bin", f"s3://{BUCKET}/{prefix}big.bin", ""),
            ("small.csv", f"s3://{BUCKET}/{prefix}small.csv", ""),
        ]
        assert resolved.files[0].sha256 == hashlib.sha256(big).hexdigest()
        read = stub.ReadUploadFile(
            msgs.ReadUploadFileRequest(upload_id=upload_id, owner="alice", name="big.bin"),
            metadata=service,
        )
        assert b"".join(c.data for c in read) == big
        with pytest.raises(grpc.RpcError) as err:
            stub.ResolveUpload(
                msgs.ResolveUploadRequest(upload_id=upload_id, owner="bob"), metadata=service
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    deleted = httpx.delete(
        f"{s3_gateway.http}/api/v2/train/uploads/{upload_id}",
        headers=s3_gateway.user_headers("alice"),
    )
    assert deleted.status_code == 200
    assert moto.keys(BUCKET, "svc/") == []


def test_a_failed_s3_upload_leaves_no_object(s3_gateway: Harness, moto: MotoServer) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="f"; filename="a.csv"\r\n\r\n1,2\r\n'
        b'--b\r\nContent-Disposition: form-data; name="f"; filename="cut.bin"\r\n\r\n'
        + bytes(11 * MiB)  # a multipart upload is under way when the body ends
    )
    resp = httpx.post(
        s3_gateway.http + "/api/v2/train/upload-data",
        content=body,
        headers={**s3_gateway.user_headers(), "content-type": "multipart/form-data; boundary=b"},
        timeout=60,
    )
    assert resp.status_code == 400 and "closing boundary" in resp.json()["message"]
    assert moto.keys(BUCKET, "svc/") == []
    assert moto.multipart_uploads(BUCKET, "svc/") == []
