"""Finished jobs' logs are archived to blob storage (S3 on a moto server) and outlive the
job-runner's disk: a new runner with an empty disk still serves them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.jobs import job_spec, lines
from tests.support.upload_service import MotoServer
from trainyard.blobs import S3BlobStorage
from trainyard.jobrunner.app import MIGRATIONS
from trainyard.jobrunner.backends.local import LocalBackend
from trainyard.jobrunner.runner import JobRunner
from trainyard.runtime.db import Database

BUCKET = "trainyard-job-logs"


@pytest.fixture(scope="module", autouse=True)
def bucket(moto: MotoServer) -> str:
    moto.client().create_bucket(Bucket=BUCKET)
    return BUCKET


async def test_logs_outlive_the_runner_disk(moto: MotoServer, tmp_path: Path) -> None:
    db = Database("jobrunner", f"sqlite+aiosqlite:///{tmp_path / 'jr.db'}", MIGRATIONS)
    await db.start()
    archive = S3BlobStorage(BUCKET, "prod/job-logs", endpoint_url=moto.endpoint)
    await archive.start()

    def runner(disk: Path) -> JobRunner:
        return JobRunner(db.sessions, LocalBackend(disk, 1.0), disk, 2, archive)

    first = runner(tmp_path / "disk-1")
    await first.start()
    try:
        view = await first.submit(
            job_spec({"command": ["python", "-c", "print('kept'); print('too')"]}), "alice"
        )
        assert (await first.wait(view.id, 30)).state == "SUCCEEDED"
        local = (tmp_path / "disk-1" / view.id / "log").read_bytes()
        assert moto.keys(BUCKET, "prod/job-logs/") == [f"prod/job-logs/{view.id}/log"]
        archived = moto.client().get_object(Bucket=BUCKET, Key=f"prod/job-logs/{view.id}/log")
        assert archived["Body"].read() == local
    finally:
        await first.close()
    shutil.rmtree(tmp_path / "disk-1")

    second = runner(tmp_path / "disk-2")  # a new pod: same database, empty disk
    await second.start()
    try:
        assert [r.text for r in await lines(second, view.id)] == ["kept", "too"]
        assert [r.seq for r in await lines(second, view.id, from_seq=2)] == [2]
        await second.delete(view.id)
        assert moto.keys(BUCKET, "prod/job-logs/") == []
    finally:
        await second.close()
        await archive.close()
        await db.close()
