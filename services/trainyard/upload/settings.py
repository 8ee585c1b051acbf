"""Settings of the upload service (TRAINYARD_UPLOAD_*).

Storage comes from the shared TRAINYARD_STORAGE_BACKEND / TRAINYARD_S3_* variables; the
TRAINYARD_UPLOAD_-prefixed ones of the same name override them for this service only.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from trainyard.runtime.settings import CommonSettings, ServiceSettings
from trainyard.runtime.storage import Backend, StorageSettings

GiB = 1024 * 1024 * 1024


class UploadSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_UPLOAD_", extra="ignore")

    max_file_bytes: int = Field(default=10 * GiB, gt=0, description="Largest single file.")
    max_files: int = Field(default=1000, gt=0, description="Most files in one upload.")
    max_total_bytes: int = Field(default=50 * GiB, gt=0, description="Largest upload in all.")
    local_root: Path | None = Field(
        default=None, description="Local backend: where uploads live; default DATA_DIR/uploads."
    )
    storage_backend: Backend | None = Field(
        default=None, description="Overrides TRAINYARD_STORAGE_BACKEND for this service."
    )
    s3_bucket: str | None = Field(default=None, description="Overrides TRAINYARD_S3_BUCKET.")
    s3_prefix: str | None = Field(default=None, description="Overrides TRAINYARD_S3_PREFIX.")
    s3_endpoint_url: str | None = Field(
        default=None, description="Overrides TRAINYARD_S3_ENDPOINT_URL."
    )
    orphan_grace_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Leftovers of an interrupted upload (files, S3 multipart uploads) are "
        "removed once their in-progress marker is this old; live uploads refresh theirs.",
    )
    sweep_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often leftovers are looked for (also on start)."
    )

    @field_validator("s3_bucket", "s3_prefix", "s3_endpoint_url", "storage_backend", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def storage_settings(self, shared: StorageSettings | None = None) -> StorageSettings:
        """The shared storage settings with this service's overrides applied."""
        base = shared if shared is not None else StorageSettings()
        overrides = {
            "storage_backend": self.storage_backend,
            "s3_bucket": self.s3_bucket,
            "s3_prefix": self.s3_prefix,
            "s3_endpoint_url": self.s3_endpoint_url,
        }
        return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})

    def local_root_for(self, common: CommonSettings) -> Path:
        return self.local_root if self.local_root is not None else common.data_dir / "uploads"
