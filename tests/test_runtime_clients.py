"""runtime.clients against a real grpc.aio server on a socket: the service token arrives in the
metadata, a default deadline is applied, UNAVAILABLE is retried for an idempotent call (and a
keyed submission) until the server answers, and a non-idempotent call is tried once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from tests.support.harness import TEST_SECRET
from trainyard.api.jobrunner.v1 import messages_pb2 as jr
from trainyard.api.jobrunner.v1 import service_pb2_grpc as jr_grpc
from trainyard.runtime.auth import TokenAuthority
from trainyard.runtime.clients import RetryPolicy, ServiceClients, ServiceToken, fixed_token

FAST = RetryPolicy(attempts=5, initial_backoff=0.01, max_backoff=0.05)


@dataclass
class Recorder(jr_grpc.JobRunnerServiceServicer):
    """A job-runner that fails its first `failures` calls with UNAVAILABLE and remembers what
    each call carried."""

    failures: int = 0
    calls: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    remaining: list[float | None] = field(default_factory=list)

    async def _seen(self, method: str, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        self.calls.append(method)
        md = dict(context.invocation_metadata() or ())
        self.tokens.append(str(md.get("authorization", "")))
        self.remaining.append(context.time_remaining())
        if len(self.calls) <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    async def GetJob(self, request, context):  # type: ignore[no-untyped-def]
        await self._seen("GetJob", context)
        return jr.GetJobResponse(job=jr.Job(job_id=request.job_id))

    async def WatchJobs(self, request, context):  # type: ignore[no-untyped-def]
        await self._seen("WatchJobs", context)
        yield jr.WatchJobsResponse()

    async def SubmitJob(self, request, context):  # type: ignore[no-untyped-def]
        await self._seen("SubmitJob", context)
        return jr.SubmitJobResponse(job=jr.Job(job_id="j-1"))


@pytest.fixture
async def served() -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder()  # type: ignore[abstract]  # see tests/support/train_service.py
    server = grpc.aio.server()
    jr_grpc.add_JobRunnerServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield recorder, f"127.0.0.1:{port}"
    await server.stop(0)


def clients(address: str, **kwargs: object) -> ServiceClients:
    authority = TokenAuthority(TEST_SECRET)
    return ServiceClients(
        {"jobrunner": address},
        ServiceToken(authority, "orchestrator"),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_the_service_token_and_a_default_deadline_travel_with_each_call(
    served: tuple[Recorder, str],
) -> None:
    recorder, address = served
    peers = clients(address, deadline=7.0)
    try:
        stub = peers.stub("jobrunner", jr_grpc.JobRunnerServiceStub)
        await stub.GetJob(jr.GetJobRequest(job_id="a"))
        await stub.GetJob(jr.GetJobRequest(job_id="b"), timeout=300.0)
    finally:
        await peers.close()
    scheme, _, token = recorder.tokens[0].partition(" ")
    ident = TokenAuthority(TEST_SECRET).verify(token)
    assert (
        scheme == "Bearer" and ident.kind == "service" and ident.subject == "service:orchestrator"
    )
    assert recorder.tokens[1] == recorder.tokens[0], "the token is reused, not minted per call"
    first, second = recorder.remaining
    # gRPC rounds a deadline up on the wire and the server reads it against its own clock, so
    # 7 s may arrive as a few milliseconds more: the check is that it is 7 s, not none or 300 s
    assert first is not None and 0 < first <= 7.5, "the default deadline applies"
    assert second is not None and second > 7.0, "a caller's own deadline wins"


async def test_a_stream_carries_the_token_and_no_default_deadline(
    served: tuple[Recorder, str],
) -> None:
    recorder, address = served
    peers = clients(address, deadline=7.0)
    try:
        stub = peers.stub("jobrunner", jr_grpc.JobRunnerServiceStub)
        got = [m async for m in stub.WatchJobs(jr.WatchJobsRequest())]
    finally:
        await peers.close()
    assert len(got) == 1 and recorder.calls == ["WatchJobs"]
    assert recorder.tokens[0].startswith("Bearer ey")
    assert recorder.remaining == [None], "a follow stream runs as long as it is read"


async def test_a_token_the_caller_passes_is_left_alone(served: tuple[Recorder, str]) -> None:
    recorder, address = served
    peers = ServiceClients({"jobrunner": address}, fixed_token("job-token"))
    try:
        stub = peers.stub("jobrunner", jr_grpc.JobRunnerServiceStub)
        await stub.GetJob(jr.GetJobRequest(job_id="a"))
        await stub.GetJob(jr.GetJobRequest(job_id="a"), metadata=(("authorization", "Bearer u"),))
    finally:
        await peers.close()
    assert recorder.tokens == ["Bearer job-token", "Bearer u"]


async def test_unavailable_is_retried_for_an_idempotent_call_until_it_succeeds(
    served: tuple[Recorder, str],
) -> None:
    recorder, address = served
    recorder.failures = 2
    retries: list[tuple[str, grpc.StatusCode, int]] = []
    peers = clients(address, retry=FAST, on_retry=lambda *a: retries.append(a))
    try:
        stub = peers.stub("jobrunner", jr_grpc.JobRunnerServiceStub)
        response = await stub.GetJob(jr.GetJobRequest(job_id="x"))
    finally:
        await peers.close()
    assert response.job.job_id == "x"
    assert recorder.calls == ["GetJob"] * 3
    method = "/trainyard.api.jobrunner.v1.JobRunnerService/GetJob"
    assert retries == [
        (method, grpc.StatusCode.UNAVAILABLE, 1),
        (method, grpc.StatusCode.UNAVAILABLE, 2),
    ]


async def test_an_idempotent_call_waits_for_a_server_that_comes_up() -> None:
    # A port that nothing listens on yet: bind one, note it, stop.
    probe = grpc.aio.server()
    port = probe.add_insecure_port("127.0.0.1:0")
    await probe.start()
    await probe.stop(0)
    recorder = Recorder()  # type: ignore[abstract]  # see tests/support/train_service.py
    server = grpc.aio.server()
    jr_grpc.add_JobRunnerServiceServicer_to_server(recorder, server)
    refused = asyncio.Event()

    def on_retry(method: str, code: grpc.StatusCode, attempt: int) -> None:
        assert code == grpc.StatusCode.UNAVAILABLE
        refused.set()

    async def come_up() -> None:
        await refused.wait()  # only once a call was refused for real
        assert server.add_insecure_port(f"127.0.0.1:{port}") == port
        await server.start()

    starter = asyncio.create_task(come_up())
    peers = clients(
        f"127.0.0.1:{port}",
        retry=RetryPolicy(attempts=50, initial_backoff=0.05, max_backoff=0.2),
        on_retry=on_retry,
    )
    try:
        stub = peers.stub("jobrunner", jr_grpc.JobRunnerServiceStub)
        response = await stub.GetJob(jr.GetJobRequest(job_id="late"))
    finally:
        await peers.close()
        await starter
        await server.stop(0)
    assert response.job.job_id == "late" and recorder.calls == ["GetJob"]


async def test_a_non_idempotent_call_is_not_retried(served: tuple[Recorder, str]) -> None:
    recorder, address = served
    recorder.failures = 1
    retries: list[object] = []
    peers = clients(address, retry=FAST, on_retry=lambda *a: retries.append(a))
    try:
        stub = peers.stub("jobrunner", jr_grpc.JobRunnerServiceStub)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.SubmitJob(jr.SubmitJobRequest(spec=jr.JobSpec(name="n")))
    finally:
        await peers.close()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert recorder.calls == ["SubmitJob"] and retries == []


async def test_a_submission_with_an_idempotency_key_is_retried(
    served: tuple[Recorder, str],
) -> None:
    recorder, address = served
    recorder.failures = 1
    peers = clients(address, retry=FAST)
    try:
        stub = peers.stub("jobrunner", jr_grpc.JobRunnerServiceStub)
        response = await stub.SubmitJob(
            jr.SubmitJobRequest(spec=jr.JobSpec(name="n"), idempotency_key="model:1")
        )
    finally:
        await peers.close()
    assert response.job.job_id == "j-1" and recorder.calls == ["SubmitJob", "SubmitJob"]


async def test_retries_end_with_the_last_error_when_the_server_stays_down(
    served: tuple[Recorder, str],
) -> None:
    recorder, address = served
    recorder.failures = 100
    peers = clients(address, retry=RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.01))
    try:
        stub = peers.stub("jobrunner", jr_grpc.JobRunnerServiceStub)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.GetJob(jr.GetJobRequest(job_id="x"))
    finally:
        await peers.close()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE and len(recorder.calls) == 3


def test_an_unknown_target_names_itself() -> None:
    peers = ServiceClients({}, fixed_token("t"))
    with pytest.raises(KeyError, match="upload"):
        peers.channel("upload")
