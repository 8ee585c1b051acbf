"""gRPC servicers of the job-runner: proto <-> runner mapping only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from trainyard.api.jobrunner.v1 import messages_pb2 as msgs
from trainyard.api.jobrunner.v1 import service_pb2_grpc as svc
from trainyard.jobrunner.domain import JobReason, JobSpec, JobState, Resources
from trainyard.jobrunner.logfile import STDERR, Record
from trainyard.jobrunner.runner import JobRunner, JobView
from trainyard.jobrunner.training_jobs import TrainingJobs
from trainyard.runtime.auth import current_identity, current_user
from trainyard.runtime.http import json_body
from trainyard.runtime.untrusted import struct_to_dict

Context = grpc.aio.ServicerContext[Any, Any]


def _ts(value: Any) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


#: The proto value of each domain state and reason: the names agree, with the enum's prefix.
STATE_PROTO: dict[JobState, msgs.JobState.ValueType] = {
    s: msgs.JobState.Value(f"JOB_STATE_{s.name}") for s in JobState
}
REASON_PROTO: dict[JobReason, msgs.JobReason.ValueType] = {
    r: msgs.JobReason.Value("JOB_REASON_UNSPECIFIED" if r == JobReason.NONE else f"JOB_REASON_{r}")
    for r in JobReason
}


def spec_from_proto(spec: msgs.JobSpec) -> JobSpec:
    """The domain spec of a request's JobSpec (values are checked by the runner)."""
    deadline = spec.deadline.ToTimedelta().total_seconds() if spec.HasField("deadline") else None
    return JobSpec(
        name=spec.name,
        image=spec.image,
        command=tuple(spec.command),
        args=tuple(spec.args),
        env=dict(spec.env),
        resources=Resources(cores=spec.resources.cores, memory_mb=spec.resources.memory_mb),
        deadline_seconds=deadline,
        retries=spec.retries,
        labels=dict(spec.labels),
        config_json=spec.config_json,
        config_uri=spec.config_uri,
    )


def spec_proto(spec: JobSpec) -> msgs.JobSpec:
    out = msgs.JobSpec(
        name=spec.name,
        image=spec.image,
        command=spec.command,
        args=spec.args,
        env=spec.env,
        retries=spec.retries,
        labels=spec.labels,
        config_json=spec.config_json,
        config_uri=spec.config_uri,
    )
    if spec.resources != Resources():
        out.resources.cores = spec.resources.cores
        out.resources.memory_mb = spec.resources.memory_mb
    if spec.deadline_seconds is not None:
        deadline = duration_pb2.Duration()
        deadline.FromNanoseconds(round(spec.deadline_seconds * 1e9))
        out.deadline.CopyFrom(deadline)
    return out


def job_proto(view: JobView) -> msgs.Job:
    return msgs.Job(
        job_id=view.id,
        name=view.name,
        spec=spec_proto(view.spec),
        state=STATE_PROTO[view.state],
        reason=REASON_PROTO[view.reason],
        message=view.message,
        exit_code=view.exit_code or 0,
        attempts=view.attempts,
        backend=view.backend,
        create_time=_ts(view.created_at),
        start_time=_ts(view.started_at),
        finish_time=_ts(view.finished_at),
        revision=view.revision,
    )


def line_proto(rec: Record) -> msgs.LogLine:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(rec.time_ns)
    stream = msgs.LOG_STREAM_STDERR if rec.stream == STDERR else msgs.LOG_STREAM_STDOUT
    return msgs.LogLine(
        sequence=rec.seq, stream=stream, text=rec.text, time=ts, attempt=rec.attempt
    )


class JobRunnerServicer(svc.JobRunnerServiceServicer):
    def __init__(self, runner: JobRunner) -> None:
        self._runner = runner

    async def SubmitJob(
        self, request: msgs.SubmitJobRequest, context: Context
    ) -> msgs.SubmitJobResponse:
        spec = spec_from_proto(request.spec)
        owner = spec.labels.get("owner") or current_identity().subject
        view = await self._runner.submit(spec, owner, request.idempotency_key)
        return msgs.SubmitJobResponse(job=job_proto(view))

    async def GetJob(self, request: msgs.GetJobRequest, context: Context) -> msgs.GetJobResponse:
        return msgs.GetJobResponse(job=job_proto(await self._runner.get(request.job_id)))

    async def ListJobs(
        self, request: msgs.ListJobsRequest, context: Context
    ) -> msgs.ListJobsResponse:
        size = request.page_size or 100
        # Read before the list: every change up to it is in the list (see JobRunner.revision).
        revision = await self._runner.revision()
        views, token = await self._runner.list(
            dict(request.labels), min(size, 1000), request.page_token
        )
        return msgs.ListJobsResponse(
            jobs=[job_proto(v) for v in views], next_page_token=token, revision=revision
        )

    async def CancelJob(
        self, request: msgs.CancelJobRequest, context: Context
    ) -> msgs.CancelJobResponse:
        view = await self._runner.cancel(request.job_id, request.reason)
        return msgs.CancelJobResponse(job=job_proto(view))

    async def DeleteJob(
        self, request: msgs.DeleteJobRequest, context: Context
    ) -> msgs.DeleteJobResponse:
        await self._runner.delete(request.job_id)
        return msgs.DeleteJobResponse()

    async def StreamJobLogs(
        self, request: msgs.StreamJobLogsRequest, context: Context
    ) -> AsyncIterator[msgs.StreamJobLogsResponse]:
        batched = request.max_batch > 0
        async for item in self._runner.log_batches(
            request.job_id,
            follow=request.follow,
            from_seq=request.from_sequence or 1,
            max_batch=min(request.max_batch, 10_000) if batched else 5000,
        ):
            if isinstance(item, JobView):
                yield msgs.StreamJobLogsResponse(done=True, job=job_proto(item))
            elif batched:
                yield msgs.StreamJobLogsResponse(lines=[line_proto(rec) for rec in item])
            else:
                for rec in item:
                    yield msgs.StreamJobLogsResponse(line=line_proto(rec))

    async def WatchJobs(
        self, request: msgs.WatchJobsRequest, context: Context
    ) -> AsyncIterator[msgs.WatchJobsResponse]:
        since = request.since_revision if request.HasField("since_revision") else None
        # `async with`: a client that goes away (cancellation) ends the subscription at once.
        async with self._runner.watch(dict(request.labels), since) as events:
            async for event in events:
                yield msgs.WatchJobsResponse(
                    event=msgs.JobEvent(
                        job=job_proto(event.job),
                        previous_state=STATE_PROTO[event.previous_state]
                        if event.previous_state
                        else msgs.JOB_STATE_UNSPECIFIED,
                        event_time=_ts(event.time),
                        revision=event.revision,
                    )
                )


class TrainingJobsServicer(svc.TrainingJobsServiceServicer):
    def __init__(self, jobs: TrainingJobs) -> None:
        self._jobs = jobs

    async def CreateTrainingJob(
        self, request: msgs.CreateTrainingJobRequest, context: Context
    ) -> msgs.CreateTrainingJobResponse:
        params = struct_to_dict(request.hyperparameters, field="hyperparameters")
        name = await self._jobs.create(
            request.pipeline or request.pipeline_step, params, current_user()
        )
        return msgs.CreateTrainingJobResponse(job_name=name, http_body=json_body(name))

    async def GetTrainingJobLogs(
        self, request: msgs.GetTrainingJobLogsRequest, context: Context
    ) -> msgs.GetTrainingJobLogsResponse:
        logs = await self._jobs.logs(request.name, current_user())
        return msgs.GetTrainingJobLogsResponse(logs=logs, http_body=json_body(logs))

    async def FollowTrainingJobLogs(
        self, request: msgs.FollowTrainingJobLogsRequest, context: Context
    ) -> AsyncIterator[msgs.FollowTrainingJobLogsResponse]:
        from trainyard.jobrunner.training_jobs import STATUS

        async for item in self._jobs.follow(
            request.name, current_user(), request.from_sequence or 1
        ):
            if isinstance(item, Record):
                yield msgs.FollowTrainingJobLogsResponse(line=line_proto(item))
            else:
                yield msgs.FollowTrainingJobLogsResponse(done=True, status=STATUS[item.state])

    async def ListTrainingJobs(
        self, request: msgs.ListTrainingJobsRequest, context: Context
    ) -> msgs.ListTrainingJobsResponse:
        jobs, token = await self._jobs.list(
            current_user(), request.pipeline, request.page_size, request.page_token
        )
        if token:
            await context.send_initial_metadata((("x-next-page-token", token),))
        return msgs.ListTrainingJobsResponse(
            jobs=[msgs.TrainingJob(**j) for j in jobs], http_body=json_body(jobs)
        )

    async def DeleteTrainingJob(
        self, request: msgs.DeleteTrainingJobRequest, context: Context
    ) -> msgs.DeleteTrainingJobResponse:
        await self._jobs.delete(request.name, current_user())
        return msgs.DeleteTrainingJobResponse(name=request.name)
