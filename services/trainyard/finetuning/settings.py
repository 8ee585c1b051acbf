"""Settings of the finetuning service (TRAINYARD_FINETUNING_*)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from trainyard.runtime.settings import ServiceSettings


class FinetuningSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_FINETUNING_", extra="ignore")
