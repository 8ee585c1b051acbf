"""Settings of the job-runner (TRAINYARD_JOBRUNNER_*)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from trainyard.blobs import StorageOverrides
from trainyard.runtime.settings import ServiceSettings


class Pipeline(BaseModel):
    """A /training-jobs pipeline: its image (Kubernetes) and command (local backend)."""

    image: str | None = None
    command: list[str] = Field(default_factory=list)
    cores: float = 0
    memory_mb: int = 0


class JobrunnerSettings(ServiceSettings, StorageOverrides):
    """TRAINYARD_JOBRUNNER_*; TRAINYARD_JOBRUNNER_STORAGE_BACKEND, _S3_* override where the
    job-runner archives logs (see trainyard.blobs.settings.StorageOverrides)."""

    model_config = SettingsConfigDict(env_prefix="TRAINYARD_JOBRUNNER_", extra="ignore")

    backend: Literal["local", "kubernetes"] = "local"
    max_concurrent: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        description="Local backend: most workloads running at once; the rest wait FIFO.",
    )
    workload_user: str = Field(
        default="nobody",
        description="Local backend, job-runner running as root: the unprivileged user (name or "
        "uid) workloads run as; empty runs them as the job-runner's own user.",
    )
    workload_uids: str = Field(
        default="",
        description="Local backend, job-runner running as root: FIRST-LAST, a range of unused "
        "uids; each running job gets one of its own (overrides workload_user).",
    )
    kill_grace_seconds: float = Field(default=5.0, description="SIGTERM -> SIGKILL delay.")
    log_dir: Path | None = Field(default=None, description="Job logs; default DATA_DIR/jobs.")
    namespace: str = "trainyard-jobs"
    kubeconfig: Path | None = Field(
        default=None,
        description="Kubernetes backend outside a cluster: the kubeconfig file (default: "
        "KUBECONFIG, then ~/.kube/config).",
    )
    image_registry: str = Field(default="", description="Prefix of model-training-* images.")
    ttl_seconds_after_finished: int = 3600
    max_log_streams: int = Field(
        default=256,
        ge=1,
        le=4096,
        description="Kubernetes backend: pod logs followed live at once (a thread and a "
        "connection each). Beyond it a pod's log is read when a stream frees up; nothing is "
        "lost, since a pod is deleted only once its log is read.",
    )
    pipelines: dict[str, Pipeline] = Field(
        default_factory=dict,
        description='JSON: {"name": {"image": "...", "command": ["python", "-m", "..."]}}.',
    )
