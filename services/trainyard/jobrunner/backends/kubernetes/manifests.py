"""The batch/v1 Job a workload becomes: pure functions of plain values, no API calls."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from trainyard.jobrunner.backends.base import Workload

JSON = dict[str, Any]

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "trainyard"
MANAGED_SELECTOR = f"{MANAGED_BY}={MANAGER}"
JOB_ID_LABEL = "trainyard.dev/job-id"
LABELS_ANNOTATION = "trainyard.dev/labels"
CONTAINER = "main"
RUN_AS_USER = 10001
# Label keys Kubernetes sets on a Job's pods itself; a workload label must not shadow them.
RESERVED_LABEL_KEYS = frozenset({"job-name", "controller-uid", MANAGED_BY, JOB_ID_LABEL})

_LABEL_BAD = re.compile(r"[^A-Za-z0-9._-]")


def label_value(value: str) -> str:
    """A valid label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends (or "").
    Values that had to be shortened keep a hash of the original, so they stay distinct."""
    text = _LABEL_BAD.sub("_", value)
    if len(text) > 63:
        text = text[:54].rstrip("._-") + "-" + hashlib.sha256(value.encode()).hexdigest()[:8]
    return text.strip("._-")


def sanitize_labels(labels: dict[str, str]) -> dict[str, str]:
    """Workload labels as Kubernetes labels: keys become unprefixed names ("team/x" ->
    "team_x"), the ones Kubernetes or trainyard set themselves are left out; the originals go
    into the `trainyard.dev/labels` annotation."""
    out: dict[str, str] = {}
    for key, value in labels.items():
        name = label_value(key)
        if name and name not in RESERVED_LABEL_KEYS:
            out[name] = label_value(value)
    return out


def literal(text: str) -> str:
    """Kubernetes expands $(VAR) in command, args and env values; `$$` is a literal `$`.
    Escape so workloads see exactly what they asked for (as with the local backend)."""
    return text.replace("$", "$$")


def cpu_quantity(cores: float) -> str:
    milli = math.ceil(cores * 1000 - 1e-6)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def job_manifest(wl: Workload, *, grace_seconds: float, ttl_seconds: int | None) -> JSON:
    """The Job for a workload: our labels (managed-by, job id, the workload's, sanitized),
    non-root security context, requests = limits, env, deadline, backoffLimit, ttl."""
    labels = {**sanitize_labels(wl.labels), MANAGED_BY: MANAGER, JOB_ID_LABEL: wl.job_id}
    annotations = {LABELS_ANNOTATION: json.dumps(wl.labels, sort_keys=True)}
    env = {
        "PYTHONUNBUFFERED": "1",
        "TRAINYARD_JOB_ID": wl.job_id,
        "TRAINYARD_JOB_NAME": wl.name,
        **wl.env,
    }
    container: JSON = {
        "name": CONTAINER,
        "image": wl.image,
        "env": [{"name": k, "value": literal(v)} for k, v in env.items()],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if wl.command:
        container["command"] = [literal(part) for part in wl.command]
    if wl.args:
        container["args"] = [literal(part) for part in wl.args]
    amounts: dict[str, str] = {}
    if wl.cores > 0:
        amounts["cpu"] = cpu_quantity(wl.cores)
    if wl.memory_mb > 0:
        amounts["memory"] = f"{wl.memory_mb}Mi"
    if amounts:
        container["resources"] = {"requests": dict(amounts), "limits": dict(amounts)}
    spec: JSON = {
        "backoffLimit": wl.retries,
        "template": {
            "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": max(0, math.ceil(grace_seconds)),
                "automountServiceAccountToken": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": RUN_AS_USER,
                    "runAsGroup": RUN_AS_USER,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container],
            },
        },
    }
    if wl.deadline_seconds:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(wl.deadline_seconds))
    if ttl_seconds is not None:
        spec["ttlSecondsAfterFinished"] = ttl_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": wl.name, "labels": labels, "annotations": annotations},
        "spec": spec,
    }
