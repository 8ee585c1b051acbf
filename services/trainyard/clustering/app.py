"""Assembles the clustering process: database, blob storage, trainings, published models and
the servicer, with the job-runner watch and the idle-unpublish sweep as background tasks."""

from __future__ import annotations

from pathlib import Path

from trainyard.api.clustering.v1 import service_pb2_grpc as svc
from trainyard.blobs import create_blob_storage
from trainyard.clustering.inference import Published
from trainyard.clustering.servicer import ClusteringServicer
from trainyard.clustering.settings import ClusteringSettings
from trainyard.clustering.store import ExperimentStore
from trainyard.clustering.training import Trainings
from trainyard.runtime.db import Database
from trainyard.runtime.jobwatch import WatchLost
from trainyard.runtime.server import App, Registration, authority_from, callback_address
from trainyard.runtime.settings import CommonSettings, database_url_for

NAME = "clustering"
MIGRATIONS = Path(__file__).parent / "migrations"


async def build(common: CommonSettings, own: ClusteringSettings) -> App:
    db = Database(NAME, database_url_for(NAME, common, own), MIGRATIONS, common.database_schema)
    authority = authority_from(common)
    storage = create_blob_storage(
        own.storage_settings(), namespace="clustering", local_root=own.storage_root_for(common)
    )
    store = ExperimentStore(db.sessions)
    published = Published(
        storage, workers=own.inference_workers, idle_seconds=own.idle_unpublish_seconds
    )
    trainings = Trainings(
        store,
        storage,
        published,
        authority,
        own,
        common.jobrunner_address,
        deadline=common.call_deadline_seconds,
    )

    async def start() -> None:
        await db.start()
        await storage.start()

    async def serving(address: str) -> None:
        trainings.address = callback_address(own.advertise_address, address)

    async def stop() -> None:
        published.close()
        await trainings.close()
        await storage.close()
        await db.close()

    app = App(
        name=NAME,
        registrations=[
            Registration(
                svc.add_ClusteringTrainingServiceServicer_to_server,
                ClusteringServicer(
                    store, trainings, published, max_assign_texts=own.max_assign_texts
                ),
                "trainyard.api.clustering.v1.ClusteringTrainingService",
            ),
        ],
        on_start=start,
        on_serving=serving,
        on_stop=stop,
        state={"store": store, "trainings": trainings, "published": published, "storage": storage},
    )
    app.background.supervise(
        "follow-jobs",
        trainings.follow_jobs,
        initial_backoff=0.5,
        max_backoff=5.0,
        healthy_after=30.0,
        expected=(WatchLost,),
    )
    app.background.every("reconcile", 30.0, trainings.reconcile)
    app.background.every("idle-unpublish", own.idle_check_seconds, published.sweep_idle)
    return app
