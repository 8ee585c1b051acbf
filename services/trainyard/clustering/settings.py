"""Settings of the clustering service (TRAINYARD_CLUSTERING_*).

Uploaded datasets and trained models live in blob storage: the shared TRAINYARD_STORAGE_BACKEND /
TRAINYARD_S3_* settings, each overridable here (TRAINYARD_CLUSTERING_STORAGE_BACKEND, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from trainyard.blobs import StorageOverrides
from trainyard.runtime.settings import CommonSettings, ServiceSettings


class ClusteringSettings(ServiceSettings, StorageOverrides):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_CLUSTERING_", extra="ignore")

    storage_root: Path | None = Field(
        default=None,
        description="Local storage backend: where datasets and models live; default "
        "DATA_DIR/clustering.",
    )
    max_file_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1, description="Largest dataFile / secondaryDataFile."
    )
    max_model_bytes: int = Field(
        default=2 * 1024**3,
        ge=1024,
        description="Largest trained model a workload may upload (all its files together).",
    )
    max_model_files: int = Field(
        default=1000, ge=1, description="Most files a trained model may have."
    )
    max_form_field_bytes: int = Field(
        default=4096, ge=64, description="Largest plain form value (modelId, languageCode, ...)."
    )
    max_assign_texts: int = Field(default=1000, ge=1, description="Most texts per assign call.")
    idle_unpublish_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="A published model that served no inference request for this long is "
        "unpublished (memory freed; assign answers 503 until a train request republishes it).",
    )
    idle_check_seconds: float = Field(
        default=30.0, gt=0, description="How often published models are checked for idleness."
    )
    inference_workers: int = Field(
        default=2, ge=1, description="Threads that load models and assign texts."
    )
    trainer_image: str = Field(default="trainyard:latest", description="Kubernetes backend.")
    trainer_python: str = Field(
        default="python", description="The interpreter that runs the clustering trainer."
    )
    trainer_cores: float = Field(default=1.0, gt=0)
    trainer_memory_mb: int = Field(default=4000, ge=100)
    training_deadline_seconds: int = Field(default=6 * 3600, ge=10)
    advertise_address: str | None = Field(
        default=None,
        description="The address the trainer calls back (host:port); default the listening "
        "address (0.0.0.0 read as 127.0.0.1).",
    )
    openai_base_url: str | None = Field(
        default=None, description="llm=openai: the OpenAI-compatible API's base URL."
    )
    openai_api_key: SecretStr | None = Field(
        default=None, description="llm=openai: the API key; default the OPENAI_API_KEY variable."
    )
    openai_model: str = Field(default="gpt-4o-mini", description="llm=openai: the chat model.")

    def storage_root_for(self, common: CommonSettings) -> Path:
        if self.storage_root is not None:
            return self.storage_root
        return common.data_dir / "clustering"

    def openai_key(self) -> str:
        if self.openai_api_key is not None:
            return self.openai_api_key.get_secret_value()
        return os.environ.get("OPENAI_API_KEY", "")
