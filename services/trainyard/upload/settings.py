"""Settings of the upload service (TRAINYARD_UPLOAD_*)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from trainyard.runtime.settings import ServiceSettings


class UploadSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_UPLOAD_", extra="ignore")
