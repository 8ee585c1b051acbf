"""Assembles the upload process. Its RPCs answer UNIMPLEMENTED until their issue lands."""

from __future__ import annotations

from pathlib import Path

from trainyard.api.upload.v1 import service_pb2_grpc as svc
from trainyard.runtime.db import Database
from trainyard.runtime.server import App, Registration
from trainyard.runtime.settings import CommonSettings, database_url_for
from trainyard.upload.settings import UploadSettings

NAME = "upload"
MIGRATIONS = Path(__file__).parent / "migrations"


async def build(common: CommonSettings, own: UploadSettings) -> App:
    db = Database(NAME, database_url_for(NAME, common, own), MIGRATIONS, common.database_schema)
    return App(
        name=NAME,
        registrations=[
            Registration(
                svc.add_UploadServiceServicer_to_server,
                svc.UploadServiceServicer(),  # type: ignore[abstract]
                "trainyard.api.upload.v1.UploadService",
            ),
        ],
        on_start=db.start,
        on_stop=db.close,
    )
