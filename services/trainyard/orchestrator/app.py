"""Assembles the orchestrator process."""

from __future__ import annotations

from pathlib import Path

from trainyard.api.auth.v1 import service_pb2_grpc as auth_grpc
from trainyard.api.orchestrator.v1 import service_pb2_grpc as svc
from trainyard.orchestrator.registry import ModelRegistry
from trainyard.orchestrator.servicer import AuthServicer, TrainServicer
from trainyard.orchestrator.settings import OrchestratorSettings
from trainyard.orchestrator.validation import VALIDATORS
from trainyard.runtime.db import Database
from trainyard.runtime.ratelimit import FailureLimiter
from trainyard.runtime.server import App, Registration, authority_from
from trainyard.runtime.settings import CommonSettings, database_url_for

NAME = "orchestrator"
MIGRATIONS = Path(__file__).parent / "migrations"


async def build(common: CommonSettings, own: OrchestratorSettings) -> App:
    db = Database(NAME, database_url_for(NAME, common, own), MIGRATIONS, common.database_schema)
    registry = ModelRegistry(db.sessions)
    return App(
        validators=VALIDATORS,
        name=NAME,
        registrations=[
            Registration(
                svc.add_TrainServiceServicer_to_server,
                TrainServicer(registry),  # type: ignore[abstract]
                "trainyard.api.orchestrator.v1.TrainService",
            ),
            Registration(
                auth_grpc.add_AuthServiceServicer_to_server,
                AuthServicer(
                    authority_from(common),
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
        on_start=db.start,
        on_stop=db.close,
    )
