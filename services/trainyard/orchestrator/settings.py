"""Settings of the training-orchestrator (TRAINYARD_ORCHESTRATOR_*)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from trainyard.runtime.settings import ServiceSettings


class OrchestratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_ORCHESTRATOR_", extra="ignore")
