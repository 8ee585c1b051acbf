"""Kill the upload service (SIGKILL, a real child process behind real Envoy) in the middle of a
large upload: after it restarts on the same port there is no upload record and no stray file,
object or S3 multipart upload (the start-up sweep removed them), and the next upload works."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.harness import TEST_SECRET
from tests.support.upload_service import AWS_ENV, MotoServer, upload_process
from tests.support.wait import eventually
from trainyard.gateway.config import render
from trainyard.gateway.process import EnvoyProcess
from trainyard.runtime.auth import TokenAuthority

MiB = 1024 * 1024
BUCKET = "trainyard-kill"
PREFIX = "kill/"
SENT_BEFORE_STALL = 48 * MiB


class Scenario:
    """How to configure a backend and what to look at in its storage."""

    def __init__(self, env: dict[str, str], leftovers: Callable[[], list[str]]) -> None:
        self.env = env
        self.leftovers = leftovers
        self.in_flight: Callable[[], bool] = lambda: False


def local_scenario(data: Path) -> Scenario:
    root = data / "uploads"

    def leftovers() -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def partial_bytes() -> int:
        total = 0
        for path in root.rglob("*.partial"):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        return total

    scenario = Scenario({}, leftovers)
    scenario.in_flight = lambda: partial_bytes() >= 16 * MiB
    return scenario


def s3_scenario(moto: MotoServer) -> Scenario:
    moto.client().create_bucket(Bucket=BUCKET)
    env = {
        **AWS_ENV,
        "TRAINYARD_STORAGE_BACKEND": "s3",
        "TRAINYARD_S3_BUCKET": BUCKET,
        "TRAINYARD_S3_PREFIX": PREFIX,
        "TRAINYARD_S3_ENDPOINT_URL": moto.endpoint,
    }

    def leftovers() -> list[str]:
        return moto.keys(BUCKET, PREFIX) + [
            f"multipart upload {k}" for k in moto.multipart_uploads(BUCKET, PREFIX)
        ]

    def parts_stored() -> bool:
        client = moto.client()
        uploads = client.list_multipart_uploads(Bucket=BUCKET, Prefix=PREFIX).get("Uploads", [])
        return any(
            client.list_parts(Bucket=BUCKET, Key=u["Key"], UploadId=u["UploadId"]).get("Parts")
            for u in uploads
        )

    scenario = Scenario(env, leftovers)
    scenario.in_flight = parts_stored
    return scenario


@pytest.fixture(params=["local", "s3"])
def scenario(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scenario]:
    (tmp_path / "data").mkdir()
    if request.param == "local":
        yield local_scenario(tmp_path / "data")
        return
    moto = MotoServer(tmp_path)
    moto.start()
    try:
        yield s3_scenario(moto)
    finally:
        moto.stop()


def test_a_killed_upload_leaves_nothing_behind(scenario: Scenario, tmp_path: Path) -> None:
    data = tmp_path / "data"
    # Grace 0: whatever the dead process left is swept as soon as the service starts again.
    service = upload_process(data, {"TRAINYARD_UPLOAD_ORPHAN_GRACE_SECONDS": "0", **scenario.env})
    envoy = EnvoyProcess(render({"upload": service.start()}, http_port=0), tmp_path / "envoy")
    stall = threading.Event()
    try:
        envoy.start()
        envoy.wait_healthy()
        url = f"http://127.0.0.1:{envoy.http_port}/api/v2/train/upload-data"
        token = TokenAuthority(TEST_SECRET).mint_user("alice")
        headers = {"authorization": f"Bearer {token}"}

        def body() -> Iterator[bytes]:
            yield (
                b'--b\r\nContent-Disposition: form-data; name="f"; filename="first.csv"\r\n\r\n'
                b"1,2\r\n"
                b'--b\r\nContent-Disposition: form-data; name="f"; filename="big.bin"\r\n\r\n'
            )
            block = bytes(MiB)
            for _ in range(SENT_BEFORE_STALL // MiB):
                yield block
            stall.wait(120)  # hold the upload open until the service has been killed

        outcome: list[object] = []

        def send() -> None:
            try:
                outcome.append(
                    httpx.post(
                        url,
                        content=body(),
                        headers={**headers, "content-type": "multipart/form-data; boundary=b"},
                        timeout=120,
                    )
                )
            except httpx.HTTPError as exc:
                outcome.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        eventually(scenario.in_flight, timeout=60, message="the upload never got under way")
        service.kill()
        stall.set()
        sender.join(60)
        [result] = outcome
        assert not isinstance(result, httpx.Response) or result.status_code >= 500, result
        assert scenario.leftovers(), "the dead upload left its marker and files behind"

        service.start()  # the same port; ready only after the start-up sweep
        assert scenario.leftovers() == []
        with sqlite3.connect(data / "upload.db") as db:
            assert db.execute("SELECT count(*) FROM upload_uploads").fetchone() == (0,)
            assert db.execute("SELECT count(*) FROM upload_files").fetchone() == (0,)

        def uploaded() -> httpx.Response | None:
            resp = httpx.post(url, headers=headers, files={"f": ("again.csv", b"3,4")}, timeout=30)
            return resp if resp.status_code == 200 else None

        resp = eventually(uploaded, timeout=30, message="no upload works after the restart")
        assert resp is not None
        upload_id = resp.json()["upload_id"]
        listed = httpx.get(
            f"http://127.0.0.1:{envoy.http_port}/api/v2/train/uploads", headers=headers
        ).json()
        assert [u["upload_id"] for u in listed["uploads"]] == [upload_id]
        assert [name.rsplit("/", 1)[-1] for name in scenario.leftovers()] == ["again.csv"]
    finally:
        stall.set()
        envoy.stop()
        service.stop()
