"""Settings of the upload service (TRAINYARD_UPLOAD_*).

Storage comes from the shared TRAINYARD_STORAGE_BACKEND / TRAINYARD_S3_* variables; the
TRAINYARD_UPLOAD_-prefixed ones of the same name override them for this service only (every
storage field: see trainyard.blobs.settings.StorageOverrides).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from trainyard.blobs import StorageOverrides
from trainyard.runtime.settings import CommonSettings, ServiceSettings

GiB = 1024 * 1024 * 1024


class UploadSettings(ServiceSettings, StorageOverrides):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_UPLOAD_", extra="ignore")

    max_file_bytes: int = Field(default=10 * GiB, gt=0, description="Largest single file.")
    max_files: int = Field(default=1000, gt=0, description="Most files in one upload.")
    max_total_bytes: int = Field(default=50 * GiB, gt=0, description="Largest upload in all.")
    local_root: Path | None = Field(
        default=None, description="Local backend: where uploads live; default DATA_DIR/uploads."
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

    def local_root_for(self, common: CommonSettings) -> Path:
        return self.local_root if self.local_root is not None else common.data_dir / "uploads"
