"""Storage settings: the shared ones, and a service's overrides laid over them."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.blobs import (
    S3BlobStorage,
    StorageOverrides,
    StorageSettings,
    create_blob_storage,
    overlay,
)
from trainyard.jobrunner.settings import JobrunnerSettings
from trainyard.upload.settings import UploadSettings


def test_storage_settings_from_the_deploy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_STORAGE_BACKEND", "s3")
    monkeypatch.setenv("TRAINYARD_S3_BUCKET", "trainyard-artifacts")
    monkeypatch.setenv("TRAINYARD_S3_PREFIX", "trainyard/")
    monkeypatch.setenv("TRAINYARD_S3_ENDPOINT_URL", "")
    shared = StorageSettings()
    assert shared.storage_backend == "s3" and shared.s3_endpoint_url is None
    merged = UploadSettings().storage_settings(shared)
    storage = create_blob_storage(merged, namespace="uploads", local_root=Path("unused"))
    assert storage.uri("id/a.csv") == "s3://trainyard-artifacts/trainyard/uploads/id/a.csv"

    monkeypatch.setenv("TRAINYARD_UPLOAD_STORAGE_BACKEND", "local")
    local = UploadSettings().storage_settings(StorageSettings())
    assert local.storage_backend == "local"

    monkeypatch.setenv("TRAINYARD_S3_BUCKET", "")
    with pytest.raises(ValueError, match="TRAINYARD_S3_BUCKET must be set"):
        create_blob_storage(StorageSettings(), namespace="uploads", local_root=Path("unused"))


def test_a_service_overrides_every_storage_field_region_included(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRAINYARD_STORAGE_BACKEND", "s3")
    monkeypatch.setenv("TRAINYARD_S3_BUCKET", "shared-bucket")
    monkeypatch.setenv("TRAINYARD_S3_REGION", "eu-west-1")
    monkeypatch.setenv("TRAINYARD_UPLOAD_S3_REGION", "eu-central-1")
    merged = UploadSettings().storage_settings(StorageSettings())
    assert merged.s3_region == "eu-central-1", "the upload service's own region wins"
    assert merged.s3_bucket == "shared-bucket", "what it does not set stays shared"
    storage = create_blob_storage(merged, namespace="uploads", local_root=Path("unused"))
    assert isinstance(storage, S3BlobStorage) and storage.region == "eu-central-1"

    # The job-runner (its log archive) takes the same overrides with its own prefix.
    monkeypatch.setenv("TRAINYARD_JOBRUNNER_S3_REGION", "ap-south-1")
    assert JobrunnerSettings().storage_settings().s3_region == "ap-south-1"
    assert UploadSettings().storage_settings().s3_region == "eu-central-1"


def test_overrides_cover_every_storage_field() -> None:
    """A field added to StorageSettings without an override is caught, and every override
    reaches the result: set each to a distinct value and read it back."""
    assert set(StorageOverrides.model_fields) >= set(StorageSettings.model_fields)
    values: dict[str, str] = {
        name: "s3" if name == "storage_backend" else f"own-{name}"
        for name in StorageSettings.model_fields
    }
    merged = overlay(StorageSettings(), StorageOverrides(**values))
    assert {name: getattr(merged, name) for name in values} == values
    assert overlay(StorageSettings(s3_region="x"), StorageOverrides()).s3_region == "x"
