"""The /training-jobs API: a registered pipeline's training image runs as a job named
model-training-<pipeline>-<uuid>, with the request's hyperparameters as environment variables."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from trainyard.jobrunner.domain import JobSpec, JobState, Resources
from trainyard.jobrunner.logfile import Record
from trainyard.jobrunner.runner import JobRunner, JobSummary, JobView
from trainyard.jobrunner.settings import JobrunnerSettings, Pipeline
from trainyard.jobrunner.workload_env import env_violations
from trainyard.runtime.errors import FieldViolation, InvalidArgument, NotFound

PREFIX = "model-training-"
KIND_LABEL = "trainyard.dev/kind"
PIPELINE_LABEL = "trainyard.dev/pipeline"
KIND = "training-job"
#: The documented status text of each state.
STATUS: dict[JobState, str] = {
    JobState.PENDING: "Pending",
    JobState.RUNNING: "Active",
    JobState.SUCCEEDED: "Succeeded",
    JobState.FAILED: "Failed",
    JobState.CANCELLED: "Cancelled",
}


def _integral(value: Any) -> Any:
    """Struct numbers all arrive as doubles: give integral ones back their int form."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


def env_value(value: Any) -> str:
    """A JSON value as an environment variable: integral numbers without `.0`, booleans as
    true/false, objects and arrays as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(_integral(value), separators=(",", ":"))


def env_from(hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    """The hyperparameters as a workload environment; InvalidArgument naming every key that
    breaks a rule of workload_env (reserved names, NUL bytes, sizes) before anything is stored."""
    env = {k: env_value(v) for k, v in hyperparameters.items()}
    problems = env_violations(env, total_field="hyperparameters")
    if problems:
        raise InvalidArgument(
            "refused hyperparameters: "
            + "; ".join(
                p.field + " " + p.description
                if p.field == "hyperparameters"
                else f"{p.field!r} {p.description}"
                for p in problems
            ),
            violations=problems,
        )
    return env


def job_name(pipeline: str) -> str:
    """model-training-<pipeline>-<uuid>, shortened to a DNS-1123 name of at most 63 chars."""
    suffix = str(uuid.uuid4())
    room = 63 - len(PREFIX) - 1 - len(suffix)
    if room < 8:
        suffix = uuid.uuid4().hex[:16]
        room = 63 - len(PREFIX) - 1 - len(suffix)
    return f"{PREFIX}{pipeline[:room].rstrip('-')}-{suffix}"


def pipeline_violations(pipeline: str) -> list[FieldViolation]:
    """The field rule of a pipeline name (checked by the request validator, at the edge)."""
    if not pipeline:
        return [FieldViolation("pipeline", "is required: POST /training-jobs?pipeline=NAME")]
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", pipeline) or len(pipeline) > 40:
        return [
            FieldViolation(
                "pipeline",
                f"{pipeline[:100]!r} is not a DNS-1123 label: lowercase letters, digits and "
                "inner hyphens, at most 40 characters",
            )
        ]
    return []


def summary(view: JobSummary | JobView) -> dict[str, str]:
    return {
        "name": view.name,
        "pipeline": view.labels.get(PIPELINE_LABEL, ""),
        "status": STATUS[view.state],
        "start_time": view.started_at.isoformat() if view.started_at else "",
        "completion_time": view.finished_at.isoformat() if view.finished_at else "",
    }


class TrainingJobs:
    def __init__(self, runner: JobRunner, settings: JobrunnerSettings) -> None:
        self._runner = runner
        self._settings = settings

    def _pipeline(self, name: str) -> Pipeline:
        pipeline = self._settings.pipelines.get(name)
        image = f"{PREFIX}{name}"
        if pipeline is None:
            raise NotFound(
                f"image {image!r} does not exist: no pipeline {name!r} is registered",
                reason="PIPELINE_NOT_FOUND",
                metadata={"image": image},
            )
        return pipeline

    async def create(self, pipeline: str, hyperparameters: Mapping[str, Any], owner: str) -> str:
        spec_pipeline = self._pipeline(pipeline)
        image = spec_pipeline.image or f"{self._settings.image_registry}{PREFIX}{pipeline}"
        spec = JobSpec(
            name=job_name(pipeline),
            image=image,
            command=tuple(spec_pipeline.command),
            env=env_from(hyperparameters),
            labels={KIND_LABEL: KIND, PIPELINE_LABEL: pipeline},
            resources=Resources(cores=spec_pipeline.cores, memory_mb=spec_pipeline.memory_mb),
        )
        view = await self._runner.submit(spec, owner)
        return view.name

    async def _owned(self, name: str, owner: str) -> JobView:
        try:
            view = await self._runner.get_by_name(name)
        except NotFound:
            view = None
        if view is None or view.owner != owner or view.labels.get(KIND_LABEL) != KIND:
            raise NotFound(f"training job {name!r} does not exist", reason="JOB_NOT_FOUND")
        return view

    async def logs(self, name: str, owner: str) -> str:
        view = await self._owned(name, owner)
        lines: list[str] = []
        async for batch in self._runner.log_batches(view.id):
            if not isinstance(batch, JobView):
                lines.extend(rec.text for rec in batch)
        return "\n".join(lines) + ("\n" if lines else "")

    async def follow(self, name: str, owner: str, from_seq: int) -> AsyncIterator[Record | JobView]:
        view = await self._owned(name, owner)
        async for item in self._runner.logs(view.id, follow=True, from_seq=from_seq):
            yield item

    async def list(
        self, owner: str, pipeline: str, page_size: int, page_token: str
    ) -> tuple[list[dict[str, str]], str]:
        labels = {KIND_LABEL: KIND}
        if pipeline:
            labels[PIPELINE_LABEL] = pipeline
        views, token = await self._runner.summaries(
            labels, page_size, page_token, name_prefix=PREFIX, owner=owner
        )
        return [summary(v) for v in views], token

    async def delete(self, name: str, owner: str) -> None:
        view = await self._owned(name, owner)
        await self._runner.delete(view.id)
