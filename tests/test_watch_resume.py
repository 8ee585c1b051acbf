"""WatchJobs resumes from a revision over real gRPC: list, let a job change while nobody
watches, watch since the list's revision, and the change arrives; bad revisions are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.support.harness import TEST_SECRET, Harness
from tests.support.wait import eventually
from trainyard.api.jobrunner.v1 import messages_pb2 as msgs
from trainyard.api.jobrunner.v1 import service_pb2_grpc as svc
from trainyard.jobrunner.app import build
from trainyard.jobrunner.settings import JobrunnerSettings
from trainyard.runtime.errors import status_from_rpc_error
from trainyard.runtime.settings import CommonSettings

Stub = svc.JobRunnerServiceStub
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    tmp: Path = tmp_path_factory.mktemp("watch")
    common = CommonSettings(data_dir=tmp, auth_secret=TEST_SECRET)
    # The workloads run as this user (not an unprivileged one) so they can see the test's gates.
    own = JobrunnerSettings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'jr.db'}", kill_grace_seconds=1, workload_user=""
    )
    h = Harness(tmp)
    h.start_app("jobrunner", h.loop.run(build(common, own)))
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def stub(harness: Harness) -> Iterator[Stub]:
    with grpc.insecure_channel(harness.servers["jobrunner"].address) as channel:
        yield svc.JobRunnerServiceStub(channel)


@pytest.fixture
def md(harness: Harness) -> Metadata:
    return tuple(harness.service_headers("orchestrator").items())


def gated_job(gate: Path, label: str) -> msgs.JobSpec:
    """A job that runs until `gate` exists, then exits 0."""
    script = f"while [ ! -e '{gate}' ]; do sleep 0.02; done"
    return msgs.JobSpec(command=["/bin/sh", "-c", script], labels={"suite": label})


def state_of(stub: Stub, md: Metadata, job_id: str) -> msgs.Job:
    return stub.GetJob(msgs.GetJobRequest(job_id=job_id), metadata=md).job


def test_a_change_between_list_and_watch_is_replayed(
    stub: Stub, md: Metadata, tmp_path: Path
) -> None:
    labels = {"suite": "replay"}
    gate = tmp_path / "go"
    job = stub.SubmitJob(msgs.SubmitJobRequest(spec=gated_job(gate, "replay")), metadata=md).job
    running = eventually(
        lambda: (j := state_of(stub, md, job.job_id)).state == msgs.JOB_STATE_RUNNING and j,
        message="the job starts",
    )
    listed = stub.ListJobs(msgs.ListJobsRequest(labels=labels), metadata=md)
    assert [(j.job_id, j.state) for j in listed.jobs] == [(job.job_id, msgs.JOB_STATE_RUNNING)]
    assert listed.revision >= running.revision >= job.revision > 0

    gate.touch()  # the job ends while nobody watches
    done = eventually(
        lambda: (j := state_of(stub, md, job.job_id)).state == msgs.JOB_STATE_SUCCEEDED and j,
        message="the job ends",
    )
    assert done.revision > listed.revision

    watch = stub.WatchJobs(
        msgs.WatchJobsRequest(labels=labels, since_revision=listed.revision),
        metadata=md,
        timeout=30,
    )
    events = iter(watch)
    try:
        replayed = next(events).event
        assert (replayed.job.job_id, replayed.job.state) == (job.job_id, msgs.JOB_STATE_SUCCEEDED)
        assert replayed.revision == done.revision
        assert replayed.previous_state == msgs.JOB_STATE_UNSPECIFIED

        # Then live events, each with a later revision; the replayed change never repeats.
        second_gate = tmp_path / "go-2"
        second_gate.touch()
        second = stub.SubmitJob(
            msgs.SubmitJobRequest(spec=gated_job(second_gate, "replay")), metadata=md
        ).job
        live = [next(events).event for _ in range(3)]
        assert [(e.job.job_id, e.job.state) for e in live] == [
            (second.job_id, msgs.JOB_STATE_PENDING),
            (second.job_id, msgs.JOB_STATE_RUNNING),
            (second.job_id, msgs.JOB_STATE_SUCCEEDED),
        ]
        revisions = [replayed.revision, *(e.revision for e in live)]
        assert revisions == sorted(set(revisions)), "revisions only grow"
        assert live[-1].revision == state_of(stub, md, second.job_id).revision
    finally:
        watch.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it untyped


@pytest.mark.parametrize(
    ("offset", "words"),
    [(1, "is ahead of the latest revision"), (None, "must not be negative")],
)
def test_revisions_from_the_future_or_negative_are_invalid(
    stub: Stub, md: Metadata, offset: int | None, words: str
) -> None:
    latest = stub.ListJobs(msgs.ListJobsRequest(), metadata=md).revision
    since = latest + offset if offset is not None else -1
    watch = stub.WatchJobs(msgs.WatchJobsRequest(since_revision=since), metadata=md, timeout=30)
    with pytest.raises(grpc.RpcError) as err:
        next(iter(watch))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"since_revision {since} {words}" in str(err.value.details())
    status = status_from_rpc_error(err.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert [v.field for v in bad.field_violations] == ["since_revision"]
