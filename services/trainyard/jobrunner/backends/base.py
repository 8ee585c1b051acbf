"""The contract between the runner (state, admission, events, API) and a backend (execution)."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from trainyard.jobrunner.domain import JobReason, JobState


@dataclass(frozen=True)
class Workload:
    """What a backend needs to run one job."""

    job_id: str
    name: str
    image: str
    command: list[str]
    args: list[str]
    env: dict[str, str]
    cores: float
    memory_mb: int
    deadline_seconds: float | None
    retries: int
    labels: dict[str, str]
    log_path: Path
    started_at: datetime | None = None  # set when re-attaching: the first attempt's start
    #: The job's config (JSON text): the backend puts it where only the workload reads it (a
    #: 0600 file named in TRAINYARD_CONFIG; on Kubernetes a Secret the container reads as
    #: TRAINYARD_CONFIG_JSON). Empty: none.
    config_json: str = ""
    #: A blob URI of the job's config, handed over as TRAINYARD_CONFIG_URI. Empty: none.
    config_uri: str = ""


@dataclass(frozen=True)
class Outcome:
    """How a job ended: `state` is a terminal one (SUCCEEDED, FAILED or CANCELLED)."""

    state: JobState
    reason: JobReason = JobReason.NONE
    message: str = ""
    exit_code: int | None = None
    attempts: int = 1
    details: dict[str, Any] = field(default_factory=dict)


# Called when an attempt is running: (handle to persist, attempt number).
OnRunning = Callable[[dict[str, Any], int], Awaitable[None]]


class Backend(abc.ABC):
    name: str
    #: The runner queues jobs and admits at most N at a time (local); otherwise the backend's
    #: scheduler (Kubernetes) does.
    runner_admission: bool

    @abc.abstractmethod
    async def run(
        self, workload: Workload, handle: dict[str, Any] | None, on_running: OnRunning
    ) -> Outcome:
        """Run the workload to its end, retries and deadline included, writing its output to
        workload.log_path. With a `handle` from an earlier runner, re-attach instead of
        starting; if the workload cannot be found return FAILED with reason LOST."""

    @abc.abstractmethod
    async def cancel(self, workload: Workload, handle: dict[str, Any] | None) -> None:
        """Stop the workload for real (SIGTERM then SIGKILL; Kubernetes: delete with pods)."""

    @abc.abstractmethod
    async def delete(self, workload: Workload, handle: dict[str, Any] | None) -> None:
        """Remove what the backend keeps for a finished job (its Job object, pods)."""

    @abc.abstractmethod
    async def orphans(self, known_job_ids: set[str]) -> list[str]:
        """Stop workloads this runner started but has no record of; return what was stopped."""

    def forget(self, job_id: str) -> None:  # noqa: B027 - an optional hook
        """Drop what the backend remembers of a deleted job."""

    async def close(self) -> None:  # noqa: B027 - an optional hook
        """Release clients; running workloads keep running."""
