"""The job-runner's domain: what a job is (JobSpec), where it is (JobState) and why (JobReason).

Shared by the runner, the backends, the tables and the shim. Only the servicers convert these
to and from protobuf. This module imports nothing but the standard library, because the shim
(which runs beside workloads as `python -I`) imports it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    """Where a job is in its life. The values are the strings stored in the jobs table."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """The job has ended and never changes state again."""
        return self in TERMINAL


#: The states a job never leaves.
TERMINAL: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class JobReason(StrEnum):
    """Why a job reached its state. The values are the strings stored in the jobs table and in
    the shim's exit files; NONE ("") is normal progress."""

    NONE = ""
    EXIT_CODE = "EXIT_CODE"
    OOM_KILLED = "OOM_KILLED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    IMAGE_NOT_FOUND = "IMAGE_NOT_FOUND"
    LOST = "LOST"
    CANCELLED = "CANCELLED"
    SIGNALED = "SIGNALED"


def parse_state(value: str) -> JobState | None:
    """The state named `value`, or None for a string that is not one (callers decide)."""
    try:
        return JobState(value)
    except ValueError:
        return None


def parse_reason(value: str) -> JobReason | None:
    """The reason named `value`, or None for a string that is not one (callers decide)."""
    try:
        return JobReason(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Resources:
    """What a workload may use; 0 means the backend's default."""

    cores: float = 0.0
    memory_mb: int = 0


@dataclass(frozen=True)
class JobSpec:
    """A workload as submitted. Values are not checked here (see runner.validate_spec): a spec
    with a negative retry count can exist, it just cannot be submitted."""

    name: str = ""
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = Resources()
    #: The run-time bound over all attempts; None means no deadline.
    deadline_seconds: float | None = None
    retries: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Inline config (JSON object text); "" for none.
    config_json: str = ""
    #: A blob URI of the config; "" for none.
    config_uri: str = ""

    def to_json(self) -> dict[str, Any]:
        """The stored form (the jobs table's spec column): every field, plain JSON types. Its
        canonical JSON is what idempotent submissions compare, so it is complete and fixed."""
        return {
            "name": self.name,
            "image": self.image,
            "command": list(self.command),
            "args": list(self.args),
            "env": dict(self.env),
            "resources": {"cores": self.resources.cores, "memory_mb": self.resources.memory_mb},
            "deadline_seconds": self.deadline_seconds,
            "retries": self.retries,
            "labels": dict(self.labels),
            "config_json": self.config_json,
            "config_uri": self.config_uri,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobSpec:
        """The spec of a stored form written by `to_json` (missing keys take their defaults)."""
        resources = data.get("resources") or {}
        deadline = data.get("deadline_seconds")
        return cls(
            name=str(data.get("name") or ""),
            image=str(data.get("image") or ""),
            command=tuple(str(c) for c in data.get("command") or ()),
            args=tuple(str(a) for a in data.get("args") or ()),
            env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
            resources=Resources(
                cores=float(resources.get("cores") or 0.0),
                memory_mb=int(resources.get("memory_mb") or 0),
            ),
            deadline_seconds=float(deadline) if deadline is not None else None,
            retries=int(data.get("retries") or 0),
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            config_json=str(data.get("config_json") or ""),
            config_uri=str(data.get("config_uri") or ""),
        )
