"""Assembles the finetuning process: database, the URI cipher, finetunings and the servicer, with
the job-runner watch and the reconcile as background tasks."""

from __future__ import annotations

import os
from pathlib import Path

from trainyard.api.finetuning.v1 import service_pb2_grpc as svc
from trainyard.finetuning.connections import UriCipher
from trainyard.finetuning.servicer import FinetuningServicer
from trainyard.finetuning.settings import FinetuningSettings
from trainyard.finetuning.store import FinetuningStore
from trainyard.finetuning.work import Finetunings
from trainyard.runtime.db import Database
from trainyard.runtime.jobwatch import WatchLost
from trainyard.runtime.server import App, Registration, authority_from, callback_address
from trainyard.runtime.settings import SERVICE_NAMES, CommonSettings, database_url_for

NAME = "finetuning"
MIGRATIONS = Path(__file__).parent / "migrations"


def suite_databases(common: CommonSettings, own_url: str) -> list[str]:
    """Every database URL of the suite that this process can know of: no user connection may
    name one of them."""
    urls = [own_url]
    if common.database_url:
        urls.append(common.database_url)
    for service in SERVICE_NAMES:
        urls.append(f"sqlite:///{(common.data_dir / f'{service}.db').resolve()}")
        override = os.environ.get(f"TRAINYARD_{service.upper()}_DATABASE_URL")
        if override:
            urls.append(override)
    return urls


async def build(common: CommonSettings, own: FinetuningSettings) -> App:
    url = database_url_for(NAME, common, own)
    db = Database(NAME, url, MIGRATIONS, common.database_schema)
    authority = authority_from(common)
    store = FinetuningStore(db.sessions)
    cipher = UriCipher(own.resolved_encryption_key(common))
    finetunings = Finetunings(
        store,
        cipher,
        authority,
        own,
        common.jobrunner_address,
        deadline=common.call_deadline_seconds,
    )
    servicer = FinetuningServicer(
        store,
        finetunings,
        cipher,
        own,
        databases_root=own.databases_root(common),
        suite_databases=suite_databases(common, url),
    )

    async def serving(address: str) -> None:
        finetunings.address = callback_address(own.advertise_address, address)

    async def stop() -> None:
        await finetunings.close()
        await db.close()

    app = App(
        name=NAME,
        registrations=[
            Registration(
                svc.add_FinetuningServiceServicer_to_server,
                servicer,
                "trainyard.api.finetuning.v1.FinetuningService",
            ),
        ],
        on_start=db.start,
        on_serving=serving,
        on_stop=stop,
        state={"store": store, "finetunings": finetunings},
    )
    app.background.supervise(
        "follow-jobs",
        finetunings.follow_jobs,
        initial_backoff=0.5,
        max_backoff=5.0,
        healthy_after=30.0,
        expected=(WatchLost,),
    )
    app.background.every("reconcile", 30.0, finetunings.reconcile)
    return app
