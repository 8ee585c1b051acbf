"""Settings of the jobrunner service (TRAINYARD_JOBRUNNER_*)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from trainyard.runtime.settings import ServiceSettings


class JobrunnerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_JOBRUNNER_", extra="ignore")
