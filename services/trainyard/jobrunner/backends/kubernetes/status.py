"""What Job and Pod objects say about a workload: pure functions of the API's plain dicts
(as a list or watch returns them), no API calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainyard.jobrunner.backends.base import Outcome
from trainyard.jobrunner.backends.kubernetes.manifests import CONTAINER
from trainyard.jobrunner.domain import JobReason, JobState

JSON = dict[str, Any]

IMAGE_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})


def meta(obj: JSON | None) -> JSON:
    return dict((obj or {}).get("metadata") or {})


def labels(obj: JSON | None) -> dict[str, str]:
    return dict(meta(obj).get("labels") or {})


def job_terminal(job: JSON | None) -> tuple[str, str, str] | None:
    """(Complete|Failed, reason, message) once the Job has finished."""
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"]), str(cond.get("reason") or ""), str(cond.get("message") or "")
    return None


def finished_pod_count(job: JSON | None) -> int:
    """Pods the Job's status counts as finished (succeeded + failed)."""
    status = (job or {}).get("status") or {}
    return int(status.get("failed") or 0) + int(status.get("succeeded") or 0)


def main_container(pod: JSON | None) -> JSON:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER:
            return dict(status)
    return dict(statuses[0]) if statuses else {}


def container_started(pod: JSON | None) -> bool:
    """The pod's container has run (or is running): the pod is an attempt with output."""
    state = main_container(pod).get("state") or {}
    return bool(state.get("running") or state.get("terminated"))


def container_terminated(pod: JSON | None) -> JSON | None:
    state = main_container(pod).get("state") or {}
    terminated = state.get("terminated")
    return dict(terminated) if terminated else None


def pod_finished(pod: JSON | None) -> bool:
    phase = ((pod or {}).get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed") or container_terminated(pod) is not None


def pod_start(pod: JSON) -> str:
    state = main_container(pod).get("state") or {}
    detail = state.get("running") or state.get("terminated") or {}
    return str(detail.get("startedAt") or "")


def attempt_order(pod: JSON) -> tuple[str, str]:
    """Sort key putting a Job's pods in attempt order (a listing is ordered by name)."""
    return str(meta(pod).get("creationTimestamp") or ""), pod_start(pod)


def controlled_by(pod: JSON, job_uid: str) -> bool:
    """The pod belongs to the Job with this uid (pods without the label are given the
    benefit of the doubt: they matched our job-id label)."""
    pod_labels = labels(pod)
    owner = pod_labels.get("batch.kubernetes.io/controller-uid") or pod_labels.get("controller-uid")
    return owner is None or owner == job_uid


def image_pull_failure(pod: JSON | None) -> tuple[str, str] | None:
    """(reason, message) when the pod's container waits on an image that cannot be pulled."""
    waiting = (main_container(pod).get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason")
    if reason in IMAGE_ERRORS:
        return str(reason), str(waiting.get("message") or reason)
    return None


def image_not_found(image: str, reason: str, message: str) -> Outcome:
    return Outcome(
        JobState.FAILED,
        JobReason.IMAGE_NOT_FOUND,
        f"the image {image!r} cannot be pulled ({reason}: {message})",
        details={"image": image},
    )


def job_outcome(
    job: JSON,
    pods: Sequence[JSON | None],
    *,
    namespace: str,
    name: str,
    deadline_seconds: float | None,
    memory_mb: int,
) -> Outcome:
    """How a finished Job ended, from its terminal condition and its pods in attempt order
    (the last terminated one tells the exit code and OOM kills)."""
    terminal = job_terminal(job)
    if terminal is None:
        raise ValueError("the Job has not finished")
    type_, reason, message = terminal
    attempts = max(len(pods), finished_pod_count(job))
    ended = next((t for t in map(container_terminated, reversed(pods)) if t), None)
    code = int(ended["exitCode"]) if ended and ended.get("exitCode") is not None else None
    details = {"namespace": namespace, "job_name": name, "job_reason": reason}
    if type_ == "Complete":
        return Outcome(JobState.SUCCEEDED, JobReason.NONE, "exited 0", 0, attempts, details)
    if reason == "DeadlineExceeded":
        limit = deadline_seconds or float((job.get("spec") or {}).get("activeDeadlineSeconds") or 0)
        return Outcome(
            JobState.FAILED,
            JobReason.DEADLINE_EXCEEDED,
            f"ran past its deadline of {limit:g}s",
            code,
            attempts,
            details,
        )
    if ended is not None and ended.get("reason") == "OOMKilled":
        text = (
            f"exceeded its memory limit of {memory_mb} MiB"
            if memory_mb
            else "was killed for running out of memory"
        )
        return Outcome(JobState.FAILED, JobReason.OOM_KILLED, text, code, attempts, details)
    if code is not None and ended is not None:
        text = f"exited with code {code}"
        if ended.get("reason") not in (None, "Error", "Completed") and ended.get("message"):
            text += f" ({ended['reason']}: {str(ended['message']).strip()[:500]})"
        return Outcome(JobState.FAILED, JobReason.EXIT_CODE, text, code, attempts, details)
    return Outcome(
        JobState.FAILED,
        JobReason.EXIT_CODE,
        f"the Kubernetes Job failed: {reason}: {message}",
        None,
        attempts,
        details,
    )
