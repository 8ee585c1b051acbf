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
#: The key of the job's config in its Secret, and the variable the container reads it from.
CONFIG_KEY = "config.json"
CONFIG_JSON_ENV = "TRAINYARD_CONFIG_JSON"
CONFIG_URI_ENV = "TRAINYARD_CONFIG_URI"
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


def config_secret_name(job_name: str) -> str:
    """The name of a job's config Secret. Job names are DNS labels of at most 63 characters,
    so the suffixed name is a valid Secret name (a DNS subdomain of up to 253)."""
    return f"{job_name}-config"


def config_secret_manifest(wl: Workload) -> JSON | None:
    """The Secret holding the workload's inline config (None when it has none). It carries
    the job's token, so it goes into a Secret, never into the pod spec; immutable, as nothing
    may change a running job's config. Its owner (the Job) is set once the Job exists."""
    if not wl.config_json:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": config_secret_name(wl.name),
            "labels": {MANAGED_BY: MANAGER, JOB_ID_LABEL: wl.job_id},
        },
        "type": "Opaque",
        "immutable": True,
        "stringData": {CONFIG_KEY: wl.config_json},
    }


def owner_patch(job: JSON) -> JSON:
    """A merge patch making an object owned by this Job: when the Job goes, Kubernetes'
    garbage collector deletes it. Not `controller` (the Job controller manages pods only)."""
    meta = job.get("metadata") or {}
    reference = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": str(meta.get("name") or ""),
        "uid": str(meta.get("uid") or ""),
    }
    return {"metadata": {"ownerReferences": [reference]}}


def owner_uids(obj: JSON) -> set[str]:
    """The uids of the Jobs an object names as its owners."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return {
        str(ref.get("uid"))
        for ref in refs
        if isinstance(ref, dict) and ref.get("kind") == "Job" and ref.get("uid")
    }


def config_env(wl: Workload) -> list[JSON]:
    """How the container finds its config: the inline one by reference to the job's Secret
    (the pod spec holds no part of it), a blob URI as a plain value."""
    env: list[JSON] = []
    if wl.config_json:
        ref = {"name": config_secret_name(wl.name), "key": CONFIG_KEY}
        env.append({"name": CONFIG_JSON_ENV, "valueFrom": {"secretKeyRef": ref}})
    if wl.config_uri:
        env.append({"name": CONFIG_URI_ENV, "value": literal(wl.config_uri)})
    return env


def job_manifest(wl: Workload, *, grace_seconds: float, ttl_seconds: int | None) -> JSON:
    """The Job for a workload: our labels (managed-by, job id, the workload's, sanitized),
    non-root security context, requests = limits, env (the config by reference to its
    Secret, see `config_secret_manifest`), deadline, backoffLimit, ttl."""
    labels = {**sanitize_labels(wl.labels), MANAGED_BY: MANAGER, JOB_ID_LABEL: wl.job_id}
    annotations = {LABELS_ANNOTATION: json.dumps(wl.labels, sort_keys=True)}
    env = {
        "PYTHONUNBUFFERED": "1",
        "TRAINYARD_JOB_ID": wl.job_id,
        "TRAINYARD_JOB_NAME": wl.name,
    }
    # The reserved names were refused on submit; the platform's values win regardless (a
    # workload's env must not redirect its config).
    platform = {*env, CONFIG_JSON_ENV, CONFIG_URI_ENV}
    env.update({k: v for k, v in wl.env.items() if k not in platform})
    container: JSON = {
        "name": CONTAINER,
        "image": wl.image,
        "env": [{"name": k, "value": literal(v)} for k, v in env.items()] + config_env(wl),
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
