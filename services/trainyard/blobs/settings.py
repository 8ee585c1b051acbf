"""Where blobs live, and how one service's settings override the shared ones.

The shared settings are TRAINYARD_STORAGE_BACKEND and TRAINYARD_S3_*. A service whose settings
class mixes in `StorageOverrides` also reads TRAINYARD_<SERVICE>_STORAGE_BACKEND,
TRAINYARD_<SERVICE>_S3_*, ...: every field of `StorageSettings`, each overriding the shared value
for that service only when set. The override class is checked against `StorageSettings` on
import and the overlay walks `StorageSettings`' fields, so a new storage field cannot be
forgotten by a service (the upload service once dropped the region that way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainyard.blobs.base import BlobStorage, check_key
from trainyard.blobs.local import LocalBlobStorage
from trainyard.blobs.s3 import S3BlobStorage

Backend = Literal["local", "s3"]


class StorageSettings(BaseSettings):
    """Where blobs live (TRAINYARD_STORAGE_BACKEND, TRAINYARD_S3_*); shared by every service."""

    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", extra="ignore")

    storage_backend: Backend = Field(
        default="local", description="`local` (a directory in DATA_DIR) or `s3`."
    )
    s3_bucket: str | None = Field(default=None, description="Bucket for the s3 backend.")
    s3_prefix: str = Field(
        default="", description="Key prefix inside the bucket, e.g. `trainyard/`."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, moto, ...); unset for AWS S3."
    )
    s3_region: str | None = Field(default=None, description="Region; unset uses the AWS default.")

    @field_validator("s3_bucket", "s3_endpoint_url", "s3_region", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class StorageOverrides(BaseModel):
    """Mixed into a service's settings: every `StorageSettings` field, optional; a set one
    (non-empty) overrides the shared value for that service. Read with the service's prefix."""

    storage_backend: Backend | None = Field(
        default=None, description="Overrides TRAINYARD_STORAGE_BACKEND for this service."
    )
    s3_bucket: str | None = Field(default=None, description="Overrides TRAINYARD_S3_BUCKET.")
    s3_prefix: str | None = Field(default=None, description="Overrides TRAINYARD_S3_PREFIX.")
    s3_endpoint_url: str | None = Field(
        default=None, description="Overrides TRAINYARD_S3_ENDPOINT_URL."
    )
    s3_region: str | None = Field(default=None, description="Overrides TRAINYARD_S3_REGION.")

    @field_validator(
        "storage_backend", "s3_bucket", "s3_prefix", "s3_endpoint_url", "s3_region", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    def storage_settings(self, shared: StorageSettings | None = None) -> StorageSettings:
        """The shared storage settings with this service's overrides applied."""
        return overlay(shared if shared is not None else StorageSettings(), self)


def overlay(shared: StorageSettings, overrides: StorageOverrides) -> StorageSettings:
    """`shared` with every field of `StorageSettings` that `overrides` sets replaced."""
    update: dict[str, Any] = {}
    for name in StorageSettings.model_fields:
        value = getattr(overrides, name)
        if value is not None:
            update[name] = value
    return shared.model_copy(update=update)


def _check_overrides_cover_settings() -> None:
    missing = set(StorageSettings.model_fields) - set(StorageOverrides.model_fields)
    if missing:
        raise TypeError(f"StorageOverrides lacks StorageSettings fields: {sorted(missing)}")


_check_overrides_cover_settings()


def create_blob_storage(
    settings: StorageSettings, *, namespace: str, local_root: Path
) -> BlobStorage:
    """The configured backend for one use (`namespace`, e.g. "uploads"): the local backend keeps
    it in `local_root`, the S3 backend under `<s3_prefix>/<namespace>/` in the bucket."""
    check_key(namespace)
    if settings.storage_backend == "local":
        return LocalBlobStorage(local_root)
    if not settings.s3_bucket:
        raise ValueError("TRAINYARD_S3_BUCKET must be set when TRAINYARD_STORAGE_BACKEND is s3")
    return S3BlobStorage(
        settings.s3_bucket,
        f"{settings.s3_prefix.strip('/')}/{namespace}",
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
    )
