"""Settings of the training-orchestrator (TRAINYARD_ORCHESTRATOR_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from trainyard.runtime.settings import ServiceSettings


class OrchestratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_ORCHESTRATOR_", extra="ignore")

    token_max_failures: int = Field(
        default=30,
        ge=1,
        description="POST /connect/token: failed attempts allowed per client_id and per source "
        "address within token_failure_window_seconds; more get 429 with Retry-After.",
    )
    token_failure_window_seconds: float = Field(default=60.0, gt=0)
    token_failure_max_keys: int = Field(
        default=10_000, ge=1, description="Clients and sources tracked at once (bounded memory)."
    )
