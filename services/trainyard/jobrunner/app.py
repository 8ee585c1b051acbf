"""Assembles the jobrunner process. Its RPCs answer UNIMPLEMENTED until their issue lands."""

from __future__ import annotations

from pathlib import Path

from trainyard.api.jobrunner.v1 import service_pb2_grpc as svc
from trainyard.jobrunner.settings import JobrunnerSettings
from trainyard.runtime.db import Database
from trainyard.runtime.server import App, Registration
from trainyard.runtime.settings import CommonSettings, database_url_for

NAME = "jobrunner"
MIGRATIONS = Path(__file__).parent / "migrations"


async def build(common: CommonSettings, own: JobrunnerSettings) -> App:
    db = Database(NAME, database_url_for(NAME, common, own), MIGRATIONS, common.database_schema)
    return App(
        name=NAME,
        registrations=[
            Registration(
                svc.add_JobRunnerServiceServicer_to_server,
                svc.JobRunnerServiceServicer(),  # type: ignore[abstract]
                "trainyard.api.jobrunner.v1.JobRunnerService",
            ),
            Registration(
                svc.add_TrainingJobsServiceServicer_to_server,
                svc.TrainingJobsServiceServicer(),  # type: ignore[abstract]
                "trainyard.api.jobrunner.v1.TrainingJobsService",
            ),
        ],
        on_start=db.start,
        on_stop=db.close,
    )
