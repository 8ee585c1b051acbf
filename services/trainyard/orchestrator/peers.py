"""The orchestrator's calls to other Trainyard services (upload, job-runner) through
runtime.clients (service token, deadlines, retries of idempotent calls), with gRPC errors
turned into the domain's errors with the user's wording."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from trainyard.api.jobrunner.v1 import messages_pb2 as jr
from trainyard.api.jobrunner.v1 import service_pb2_grpc as jr_grpc
from trainyard.api.upload.v1 import messages_pb2 as up
from trainyard.api.upload.v1 import service_pb2_grpc as up_grpc
from trainyard.runtime.auth import TokenAuthority
from trainyard.runtime.clients import ServiceClients, ServiceToken
from trainyard.runtime.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)

#: Default deadline of a unary call to a peer.
CALL_SECONDS = 15.0
_TOKEN_TTL = 3600


class Peers:
    """Channels to the upload service and the job-runner, opened lazily, closed on stop."""

    def __init__(
        self,
        authority: TokenAuthority,
        upload_address: str,
        jobrunner_address: str,
        *,
        deadline: float = CALL_SECONDS,
    ):
        self._token = ServiceToken(authority, "orchestrator", ttl=_TOKEN_TTL)
        self._clients = ServiceClients(
            {"upload": upload_address, "jobrunner": jobrunner_address},
            self._token,
            deadline=deadline,
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The service token as call metadata (the clients attach it anyway: for callers that
        open their own calls)."""
        return (("authorization", f"Bearer {self._token()}"),)

    @property
    def jobs(self) -> Any:  # the aio stub (its generated types are the sync ones)
        return self._clients.stub("jobrunner", jr_grpc.JobRunnerServiceStub)

    @property
    def uploads(self) -> Any:
        return self._clients.stub("upload", up_grpc.UploadServiceStub)

    async def close(self) -> None:
        await self._clients.close()

    # ---- calls -----------------------------------------------------------------------------

    async def resolve_upload(self, upload_id: str, owner: str, where: str) -> up.Upload:
        try:
            response = await self.uploads.ResolveUpload(
                up.ResolveUploadRequest(upload_id=upload_id, owner=owner)
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise NotFound(
                    f"{where}: upload {upload_id!r} does not exist", reason="UPLOAD_NOT_FOUND"
                ) from exc
            if code == grpc.StatusCode.PERMISSION_DENIED:
                raise PermissionDenied(
                    f"{where}: upload {upload_id!r} is not yours", reason="UPLOAD_ACCESS_DENIED"
                ) from exc
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise NotFound(
                    f"{where}: upload {upload_id!r} does not exist", reason="UPLOAD_NOT_FOUND"
                ) from exc
            raise _unavailable("upload", exc) from exc
        upload: up.Upload = response.upload
        return upload

    async def read_upload_file(self, upload_id: str, owner: str, name: str) -> AsyncIterator[bytes]:
        """One file of an upload, read for its owner (a training's input)."""
        call = self.uploads.ReadUploadFile(
            up.ReadUploadFileRequest(upload_id=upload_id, owner=owner, name=name)
        )
        try:
            async for message in call:
                yield message.data
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise NotFound(
                    f"upload {upload_id!r} has no file {name!r} any more", reason="INPUT_NOT_FOUND"
                ) from exc
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise PermissionDenied(
                    f"upload {upload_id!r} is not the model owner's", reason="UPLOAD_ACCESS_DENIED"
                ) from exc
            raise _unavailable("upload", exc) from exc
        finally:
            call.cancel()

    async def submit(self, spec: jr.JobSpec, idempotency_key: str) -> jr.Job:
        try:
            response = await self.jobs.SubmitJob(
                jr.SubmitJobRequest(spec=spec, idempotency_key=idempotency_key)
            )
        except grpc.aio.AioRpcError as exc:
            raise _job_error(exc) from exc
        job: jr.Job = response.job
        return job

    async def get_job(self, job_id: str) -> jr.Job | None:
        try:
            response = await self.jobs.GetJob(jr.GetJobRequest(job_id=job_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _job_error(exc) from exc
        job: jr.Job = response.job
        return job

    async def cancel_job(self, job_id: str, reason: str) -> jr.Job | None:
        try:
            response = await self.jobs.CancelJob(jr.CancelJobRequest(job_id=job_id, reason=reason))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return await self.get_job(job_id)
            raise _job_error(exc) from exc
        job: jr.Job = response.job
        return job

    async def delete_job(self, job_id: str) -> None:
        """Cancel the job if it still runs and have the job-runner forget it (its logs, its
        Kubernetes Job and config Secret); a job already gone is no error."""
        try:
            await self.jobs.DeleteJob(
                jr.DeleteJobRequest(job_id=job_id), metadata=self.metadata(), timeout=CALL_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise _job_error(exc) from exc

    async def log_lines(
        self, job_id: str, *, follow: bool = False, from_sequence: int = 0
    ) -> AsyncIterator[jr.StreamJobLogsResponse]:
        """The job's log, batched (follow=False) or line by line as written (follow=True)."""
        call: Any = self.jobs.StreamJobLogs(
            jr.StreamJobLogsRequest(
                job_id=job_id,
                follow=follow,
                from_sequence=from_sequence,
                max_batch=0 if follow else 1000,
            ),
            timeout=None if follow else 60.0,
        )
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise _job_error(exc) from exc
        finally:
            call.cancel()

    def watch(self, labels: dict[str, str], since_revision: int | None = None) -> Any:
        """A WatchJobs stream (the caller iterates and cancels it); with `since_revision`, the
        changes after it are replayed first."""
        request = jr.WatchJobsRequest(labels=labels)
        if since_revision is not None:
            request.since_revision = since_revision
        return self.jobs.WatchJobs(request)


def _unavailable(service: str, exc: grpc.aio.AioRpcError) -> DomainError:
    return Unavailable(
        f"the {service} service is not reachable right now; try again shortly",
        reason=f"{service.upper()}_UNAVAILABLE",
    )


def _job_error(exc: grpc.aio.AioRpcError) -> DomainError:
    code = exc.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(f"the workload was refused: {exc.details()}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(exc.details() or "the job-runner refused the request")
    return _unavailable("job-runner", exc)
