"""The example trainer end to end: as a process reporting to an orchestrator double, and as a
job the job-runner runs (SubmitJob over gRPC with config_json) on its local backend."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.harness import TEST_SECRET, Harness
from tests.support.jobs import python_runs_as
from tests.support.train_service import RecordingTrainService, serve
from trainyard.api.jobrunner.v1 import messages_pb2 as msgs
from trainyard.api.jobrunner.v1 import service_pb2_grpc as svc
from trainyard.blobs import LocalBlobStorage
from trainyard.jobrunner.app import build
from trainyard.jobrunner.settings import JobrunnerSettings
from trainyard.runtime.settings import CommonSettings
from trainyard.workload import Artifacts

ECHO = [sys.executable, "-m", "trainyard.trainers.echo"]


async def run_echo(env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *ECHO,
        cwd=cwd,
        env={"PATH": os.environ["PATH"], **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_echo_reports_to_the_orchestrator_and_writes_its_artifact(tmp_path: Path) -> None:
    servicer = RecordingTrainService()  # type: ignore[abstract]  # see tests/support/train_service.py
    server, address = await serve(servicer)
    config = tmp_path / "config.json"
    arts = tmp_path / "arts"
    config.write_text(
        json.dumps(
            {
                "message": "bonjour",
                "repeat": 2,
                "warning": "tiny data",
                "model_id": "m-42",
                "artifacts_uri": arts.as_uri() + "/",
            }
        )
    )
    env = {
        "TRAINYARD_CONFIG": str(config),
        "TRAINYARD_ORCHESTRATOR_ADDRESS": address,
        "TRAINYARD_JOB_TOKEN": "the-job-token",
    }
    try:
        code, out, err = await run_echo(env, tmp_path)
    finally:
        await server.stop(0)
    assert code == 0, err
    assert out.splitlines()[:2] == ["bonjour", "bonjour"]
    calls = [
        (r.method, r.request.get("status") or r.request.get("level")) for r in servicer.received
    ]
    assert calls == [
        ("UpdateTrainStatus", "in_progress"),
        ("UpdateTrainStatus", "in_progress"),
        ("UpdateTrainStatus", "in_progress"),
        ("LogTrainMessage", "warning"),
        ("UpdateTrainStatus", "complete"),
    ]
    assert {r.authorization for r in servicer.received} == {"Bearer the-job-token"}
    final = servicer.received[-1].request["metadata"]
    assert final["progress"] == {"fraction": 1.0, "phase": "echo"}
    assert final["artifact"] == (arts / "models/m-42/echo/MANIFEST.json").as_uri()

    storage = LocalBlobStorage(arts)
    await storage.start()
    artifacts = Artifacts(storage, "models/m-42/")
    assert await artifacts.read_bytes("echo", "message.txt") == b"bonjour\nbonjour\n"
    assert (await artifacts.manifest("echo")).version == final["artifact_version"]


async def test_echo_exits_non_zero_with_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"repeat": "many"}))
    code, _, err = await run_echo({"TRAINYARD_CONFIG": str(config)}, tmp_path)
    assert code == 2
    assert err.strip() == (
        "trainyard.trainers.echo: bad config: message must be a non-empty string; "
        "repeat must be an integer"
    )

    servicer = RecordingTrainService(refuse=grpc.StatusCode.PERMISSION_DENIED)  # type: ignore[abstract]  # see tests/support/train_service.py
    server, address = await serve(servicer)
    config.write_text(json.dumps({"message": "hi"}))
    env = {
        "TRAINYARD_CONFIG": str(config),
        "TRAINYARD_ORCHESTRATOR_ADDRESS": address,
        "TRAINYARD_JOB_TOKEN": "wrong",
    }
    try:
        code, _, err = await run_echo(env, tmp_path)
    finally:
        await server.stop(0)
    assert code == 1
    assert "cannot report: UpdateTrainStatus failed: PERMISSION_DENIED" in err


@pytest.fixture(scope="module")
def jobrunner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, Path]]:
    tmp: Path = tmp_path_factory.mktemp("echo-jobs")
    tmp.chmod(0o755)  # a workload user passes through to its work directory
    common = CommonSettings(data_dir=tmp, auth_secret=TEST_SECRET)
    own = JobrunnerSettings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'jr.db'}",
        kill_grace_seconds=1,
        workload_user="nobody" if python_runs_as("nobody") else "",
    )
    harness = Harness(tmp)
    harness.start_app("jobrunner", harness.loop.run(build(common, own)))
    try:
        yield harness, tmp / "jobs"
    finally:
        harness.close()


def run_job(harness: Harness, spec: msgs.JobSpec) -> tuple[msgs.Job, list[str]]:
    md = tuple(harness.service_headers("orchestrator").items())
    with grpc.insecure_channel(harness.servers["jobrunner"].address) as channel:
        stub = svc.JobRunnerServiceStub(channel)
        job = stub.SubmitJob(msgs.SubmitJobRequest(spec=spec), metadata=md).job
        req = msgs.StreamJobLogsRequest(job_id=job.job_id, follow=True)
        items = list(stub.StreamJobLogs(req, metadata=md, timeout=60))
    assert items[-1].done
    return items[-1].job, [i.line.text for i in items if i.HasField("line")]


def test_echo_runs_as_a_job_with_its_config(jobrunner: tuple[Harness, Path]) -> None:
    harness, jobs = jobrunner
    spec = msgs.JobSpec(
        command=["python", "-m", "trainyard.trainers.echo"],
        config_json=json.dumps({"message": "from the job spec", "repeat": 3}),
    )
    job, lines = run_job(harness, spec)
    assert job.state == msgs.JOB_STATE_SUCCEEDED, (job.message, lines)
    assert [t for t in lines if t == "from the job spec"] == ["from the job spec"] * 3
    # No orchestrator in this job's environment: the reports went to the job's log.
    assert sum(t.startswith("trainyard-report status ") for t in lines) == 5
    work = jobs / job.job_id / "work"
    artifact = work / "artifacts" / "models" / job.job_id / "echo"
    manifest = json.loads((artifact / "MANIFEST.json").read_text())
    stored = artifact / "versions" / manifest["version"] / "message.txt"
    assert stored.read_text() == "from the job spec\n" * 3
    wrote = (artifact / "MANIFEST.json").as_uri()
    done = f"trainyard.trainers.echo: wrote {wrote} (version {manifest['version']})"
    assert done in lines, lines


def test_echo_as_a_job_with_a_bad_config_fails_with_exit_code_2(
    jobrunner: tuple[Harness, Path],
) -> None:
    harness, _ = jobrunner
    spec = msgs.JobSpec(
        command=["python", "-m", "trainyard.trainers.echo"],
        config_json=json.dumps({"message": ""}),
    )
    job, lines = run_job(harness, spec)
    assert (job.state, job.exit_code) == (msgs.JOB_STATE_FAILED, 2)
    assert lines == ["trainyard.trainers.echo: bad config: message must be a non-empty string"]

    md = tuple(harness.service_headers("orchestrator").items())
    with grpc.insecure_channel(harness.servers["jobrunner"].address) as channel:
        stub = svc.JobRunnerServiceStub(channel)
        too_big = msgs.JobSpec(command=["true"], config_json=json.dumps({"x": "y" * (1 << 20)}))
        with pytest.raises(grpc.RpcError) as refused:
            stub.SubmitJob(msgs.SubmitJobRequest(spec=too_big), metadata=md)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.config_json" in (refused.value.details() or "")
