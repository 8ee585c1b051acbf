"""Assembles the upload process: database, blob storage, the store and its servicer."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from trainyard.api.upload.v1 import service_pb2_grpc as svc
from trainyard.blobs import create_blob_storage
from trainyard.runtime.db import Database
from trainyard.runtime.server import App, Registration
from trainyard.runtime.settings import CommonSettings, database_url_for
from trainyard.upload.servicer import UploadServicer
from trainyard.upload.settings import UploadSettings
from trainyard.upload.store import UploadLimits, UploadStore
from trainyard.upload.validation import VALIDATORS

NAME = "upload"
MIGRATIONS = Path(__file__).parent / "migrations"


async def build(common: CommonSettings, own: UploadSettings) -> App:
    db = Database(NAME, database_url_for(NAME, common, own), MIGRATIONS, common.database_schema)
    storage = create_blob_storage(
        own.storage_settings(), namespace="uploads", local_root=own.local_root_for(common)
    )
    store = UploadStore(
        db.sessions,
        storage,
        UploadLimits(
            max_file_bytes=own.max_file_bytes,
            max_files=own.max_files,
            max_total_bytes=own.max_total_bytes,
        ),
        orphan_grace=timedelta(seconds=own.orphan_grace_seconds),
    )

    async def start() -> None:
        await db.start()
        await store.start()

    async def stop() -> None:
        try:
            await store.close()
        finally:
            await db.close()

    app = App(
        validators=VALIDATORS,
        name=NAME,
        registrations=[
            Registration(
                svc.add_UploadServiceServicer_to_server,
                UploadServicer(store),
                "trainyard.api.upload.v1.UploadService",
            ),
        ],
        on_start=start,
        on_stop=stop,
    )
    # Uploads interrupted by a crash elsewhere (another replica, a killed request) leave
    # markers; the start-up sweep took the old ones, this takes those that come later.
    app.background.every("upload-sweep", own.sweep_interval_seconds, store.sweep)
    return app
