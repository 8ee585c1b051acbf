"""Assembles the clustering process. Its RPCs answer UNIMPLEMENTED until their issue lands."""

from __future__ import annotations

from pathlib import Path

from trainyard.api.clustering.v1 import service_pb2_grpc as svc
from trainyard.clustering.settings import ClusteringSettings
from trainyard.runtime.db import Database
from trainyard.runtime.server import App, Registration
from trainyard.runtime.settings import CommonSettings, database_url_for

NAME = "clustering"
MIGRATIONS = Path(__file__).parent / "migrations"


async def build(common: CommonSettings, own: ClusteringSettings) -> App:
    db = Database(NAME, database_url_for(NAME, common, own), MIGRATIONS, common.database_schema)
    return App(
        name=NAME,
        registrations=[
            Registration(
                svc.add_ClusteringTrainingServiceServicer_to_server,
                svc.ClusteringTrainingServiceServicer(),  # type: ignore[abstract]
                "trainyard.api.clustering.v1.ClusteringTrainingService",
            ),
        ],
        on_start=db.start,
        on_stop=db.close,
    )
