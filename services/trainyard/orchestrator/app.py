"""Assembles the orchestrator process: registry, trainings, models and their servicers."""

from __future__ import annotations

from pathlib import Path

from trainyard.api.auth.v1 import service_pb2_grpc as auth_grpc
from trainyard.api.orchestrator.v1 import service_pb2_grpc as svc
from trainyard.blobs import create_blob_storage
from trainyard.orchestrator.feedback import FeedbackStore
from trainyard.orchestrator.inference import Models
from trainyard.orchestrator.peers import Peers
from trainyard.orchestrator.registry import ModelRegistry
from trainyard.orchestrator.retrieval import Retrieval
from trainyard.orchestrator.servicer import AuthServicer, ModelServicer, TrainServicer
from trainyard.orchestrator.settings import OrchestratorSettings
from trainyard.orchestrator.token_feedback import TokenFeedbackStore
from trainyard.orchestrator.training import Trainings, WatchLost
from trainyard.orchestrator.validation import Limits, validators
from trainyard.runtime.db import Database
from trainyard.runtime.ratelimit import FailureLimiter
from trainyard.runtime.server import App, Registration, authority_from, callback_address
from trainyard.runtime.settings import CommonSettings, database_url_for

NAME = "orchestrator"
MIGRATIONS = Path(__file__).parent / "migrations"


async def build(common: CommonSettings, own: OrchestratorSettings) -> App:
    db = Database(NAME, database_url_for(NAME, common, own), MIGRATIONS, common.database_schema)
    authority = authority_from(common)
    registry = ModelRegistry(db.sessions)
    storage = create_blob_storage(
        own.storage_settings(), namespace="artifacts", local_root=own.artifacts_root_for(common)
    )
    peers = Peers(
        authority,
        common.upload_address,
        common.jobrunner_address,
        deadline=common.call_deadline_seconds,
    )
    feedback = FeedbackStore(db.sessions, max_per_model=own.ndb_max_feedback_per_model)
    token_feedback = TokenFeedbackStore(db.sessions, own.max_token_feedback_per_model)
    trainings = Trainings(
        registry, peers, storage, authority, own, feedback=feedback, token_feedback=token_feedback
    )
    models = Models(
        storage,
        cache_bytes=own.predict_cache_bytes,
        workers=own.predict_workers,
        max_model_bytes=own.max_model_bytes,
        cache_dir=own.model_cache_dir_for(common),
    )
    retrieval = Retrieval(registry, models, feedback)

    async def start() -> None:
        await db.start()
        await storage.start()
        await models.start()

    async def serving(address: str) -> None:
        trainings.address = callback_address(own.advertise_address, address)

    async def stop() -> None:
        models.close()
        await peers.close()
        await storage.close()
        await db.close()

    app = App(
        validators=validators(Limits(own.max_allocation_cores, own.max_allocation_memory_mb)),
        name=NAME,
        registrations=[
            Registration(
                svc.add_TrainServiceServicer_to_server,
                TrainServicer(registry, trainings, models),
                "trainyard.api.orchestrator.v1.TrainService",
            ),
            Registration(
                svc.add_ModelServiceServicer_to_server,
                ModelServicer(registry, trainings, models, retrieval, token_feedback),
                "trainyard.api.orchestrator.v1.ModelService",
            ),
            Registration(
                auth_grpc.add_AuthServiceServicer_to_server,
                AuthServicer(
                    authority,
                    common.auth_clients,
                    FailureLimiter(
                        own.token_max_failures,
                        own.token_failure_window_seconds,
                        max_keys=own.token_failure_max_keys,
                    ),
                ),
                "trainyard.api.auth.v1.AuthService",
            ),
        ],
        on_start=start,
        on_serving=serving,
        on_stop=stop,
        state={"registry": registry, "trainings": trainings, "models": models},
    )
    # Started once serving (after `serving` set the callback address), stopped before the
    # server: a lost watch (the job-runner restarting) reconnects with backoff.
    app.background.supervise(
        "follow-jobs",
        trainings.follow_jobs,
        initial_backoff=0.5,
        max_backoff=5.0,
        healthy_after=30.0,
        expected=(WatchLost,),
    )
    return app
