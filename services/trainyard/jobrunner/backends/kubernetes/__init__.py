"""Kubernetes backend: each job is one batch/v1 Job (see `backend`).

- `manifests`: Workload -> Job manifest (pure).
- `status`: Job / Pod dicts -> state, outcome, reason (pure).
- `api`: the API calls, as JSON, retried on transient failures.
- `informer`: one namespace-wide list + watch of trainyard's Jobs and of their Pods, feeding
  per-job subscriptions.
- `logs`: pod log follows into the sequenced job log, resumed by kubelet timestamps.
- `backend`: the Backend implementation.
"""

from trainyard.jobrunner.backends.kubernetes.backend import KubernetesBackend
from trainyard.jobrunner.backends.kubernetes.manifests import (
    JOB_ID_LABEL,
    LABELS_ANNOTATION,
    MANAGED_BY,
    label_value,
    sanitize_labels,
)

__all__ = [
    "JOB_ID_LABEL",
    "LABELS_ANNOTATION",
    "MANAGED_BY",
    "KubernetesBackend",
    "label_value",
    "sanitize_labels",
]
