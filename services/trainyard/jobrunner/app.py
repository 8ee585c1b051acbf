"""Assembles the job-runner process."""

from __future__ import annotations

from pathlib import Path

from trainyard.api.jobrunner.v1 import service_pb2_grpc as svc
from trainyard.blobs import BlobStorage, create_blob_storage
from trainyard.jobrunner.backends.base import Backend
from trainyard.jobrunner.runner import JobRunner
from trainyard.jobrunner.servicer import JobRunnerServicer, TrainingJobsServicer
from trainyard.jobrunner.settings import JobrunnerSettings
from trainyard.jobrunner.training_jobs import TrainingJobs
from trainyard.jobrunner.validation import VALIDATORS
from trainyard.runtime.db import Database
from trainyard.runtime.server import App, Registration
from trainyard.runtime.settings import CommonSettings, database_url_for

NAME = "jobrunner"
MIGRATIONS = Path(__file__).parent / "migrations"


def make_backend(own: JobrunnerSettings, log_root: Path) -> Backend:
    if own.backend == "kubernetes":
        from trainyard.jobrunner.backends.kubernetes import KubernetesBackend

        backend: Backend = KubernetesBackend.from_settings(own)
        return backend
    from trainyard.jobrunner.backends.local import LocalBackend

    return LocalBackend(log_root, own.kill_grace_seconds, own.workload_user, own.workload_uids)


async def build(common: CommonSettings, own: JobrunnerSettings) -> App:
    db = Database(NAME, database_url_for(NAME, common, own), MIGRATIONS, common.database_schema)
    log_root = (own.log_dir or common.data_dir / "jobs").resolve()
    storage = own.storage_settings()
    # Locally the log files already live in the data dir; with S3 they are archived there too.
    archive: BlobStorage | None = (
        create_blob_storage(storage, namespace="job-logs", local_root=log_root)
        if storage.storage_backend == "s3"
        else None
    )
    runner = JobRunner(
        db.sessions, make_backend(own, log_root), log_root, own.max_concurrent, archive
    )

    async def start() -> None:
        await db.start()
        if archive is not None:
            await archive.start()
        await runner.start()

    async def stop() -> None:
        await runner.close()
        if archive is not None:
            await archive.close()
        await db.close()

    app = App(
        validators=VALIDATORS,
        name=NAME,
        registrations=[
            Registration(
                svc.add_JobRunnerServiceServicer_to_server,
                JobRunnerServicer(runner),
                "trainyard.api.jobrunner.v1.JobRunnerService",
            ),
            Registration(
                svc.add_TrainingJobsServiceServicer_to_server,
                TrainingJobsServicer(TrainingJobs(runner, own)),
                "trainyard.api.jobrunner.v1.TrainingJobsService",
            ),
        ],
        on_start=start,
        on_stop=stop,
        state={"runner": runner},
    )
    return app
