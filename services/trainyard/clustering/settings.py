"""Settings of the clustering service (TRAINYARD_CLUSTERING_*)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from trainyard.runtime.settings import ServiceSettings


class ClusteringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_CLUSTERING_", extra="ignore")
