"""Assembles the finetuning process. Its RPCs answer UNIMPLEMENTED until their issue lands."""

from __future__ import annotations

from pathlib import Path

from trainyard.api.finetuning.v1 import service_pb2_grpc as svc
from trainyard.finetuning.settings import FinetuningSettings
from trainyard.runtime.db import Database
from trainyard.runtime.server import App, Registration
from trainyard.runtime.settings import CommonSettings, database_url_for

NAME = "finetuning"
MIGRATIONS = Path(__file__).parent / "migrations"


async def build(common: CommonSettings, own: FinetuningSettings) -> App:
    db = Database(NAME, database_url_for(NAME, common, own), MIGRATIONS, common.database_schema)
    return App(
        name=NAME,
        registrations=[
            Registration(
                svc.add_FinetuningServiceServicer_to_server,
                svc.FinetuningServiceServicer(),  # type: ignore[abstract]
                "trainyard.api.finetuning.v1.FinetuningService",
            ),
        ],
        on_start=db.start,
        on_stop=db.close,
    )
