"""Kill the job-runner (SIGKILL) while workloads run, change the world while it is down, restart
it: every job is reconciled, none is lost or left running unseen."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from tests.support.harness import TEST_SECRET
from tests.support.wait import eventually
from trainyard.api.jobrunner.v1 import messages_pb2 as msgs
from trainyard.api.jobrunner.v1 import service_pb2_grpc as svc
from trainyard.runtime.auth import TokenAuthority
from trainyard.suite import ServiceProcess

MD = (("authorization", f"Bearer {TokenAuthority(TEST_SECRET).mint_service('test')}"),)


def wait_for_file(path: Path, label: str) -> str:
    code = (
        f"import os,time\np={str(path)!r}\n"
        "while not os.path.exists(p): time.sleep(0.02)\n"
        f"print('{label} done')\n"
    )
    return code


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[ServiceProcess]:
    env = {
        **os.environ,
        "TRAINYARD_DATA_DIR": str(tmp_path),
        "TRAINYARD_AUTH_SECRET": TEST_SECRET,
        "TRAINYARD_JOBRUNNER_MAX_CONCURRENT": "3",
        "TRAINYARD_JOBRUNNER_KILL_GRACE_SECONDS": "1",
        # The workloads wait for files in tmp_path (private to root): they run as this user.
        "TRAINYARD_JOBRUNNER_WORKLOAD_USER": "",
        "TRAINYARD_LOG_FORMAT": "json",
    }
    r = ServiceProcess("jobrunner", tmp_path, env)
    try:
        yield r
    finally:
        r.stop()
        # Workloads outlive the runner by design: end whatever a failed test left running.
        for info in (tmp_path / "jobs").glob("*/shim-*.json"):
            with contextlib.suppress(psutil.Error, OSError, ValueError, KeyError):
                shim = json.loads(info.read_text())
                if psutil.Process(shim["pid"]).create_time() == shim["create_time"]:
                    os.killpg(shim["pid"], signal.SIGKILL)


def test_jobs_survive_and_reconcile_after_a_runner_crash(
    runner: ServiceProcess, tmp_path: Path
) -> None:
    address = runner.start()
    channel = grpc.insecure_channel(address)
    stub = svc.JobRunnerServiceStub(channel)

    def submit(code: str, name: str) -> str:
        spec = msgs.JobSpec(name=name, command=["python", "-c", code])
        return str(stub.SubmitJob(msgs.SubmitJobRequest(spec=spec), metadata=MD).job.job_id)

    def state(job_id: str) -> msgs.Job:
        return stub.GetJob(msgs.GetJobRequest(job_id=job_id), metadata=MD).job

    survivor = submit(wait_for_file(tmp_path / "go-a", "a"), "survivor")
    finisher = submit(wait_for_file(tmp_path / "go-b", "b"), "finisher")
    victim = submit(wait_for_file(tmp_path / "never", "c"), "victim")
    queued = submit("print('queued ran')", "queued")
    for job_id in (survivor, finisher, victim):

        def running(j: str = job_id) -> bool:
            return state(j).state == msgs.JOB_STATE_RUNNING

        eventually(running, timeout=30, message=f"job {job_id} never ran")
    assert state(queued).state == msgs.JOB_STATE_PENDING  # admission: 3 at a time
    channel.close()

    runner.kill()
    # While the runner is down: one workload finishes, one vanishes without an exit record.
    (tmp_path / "go-b").touch()
    shim_file = tmp_path / "jobs" / victim / "shim-1.json"
    shim = json.loads(
        eventually(
            lambda: shim_file.exists() and shim_file.read_text(),
            message="the shim never recorded itself",
        )
    )
    os.killpg(shim["pid"], signal.SIGKILL)
    eventually(
        lambda: (tmp_path / "jobs" / finisher / "exit-1.json").exists(),
        message="finisher did not exit while the runner was down",
    )

    address = runner.start()
    channel = grpc.insecure_channel(address)
    stub = svc.JobRunnerServiceStub(channel)
    eventually(
        lambda: state(finisher).state == msgs.JOB_STATE_SUCCEEDED,
        timeout=30,
        message="the job that ended while the runner was down was not reconciled",
    )
    lost = eventually(
        lambda: (j := state(victim)).state == msgs.JOB_STATE_FAILED and j,
        timeout=30,
        message="the vanished job was not marked lost",
    )
    assert lost.reason == msgs.JOB_REASON_LOST
    assert state(survivor).state == msgs.JOB_STATE_RUNNING  # re-attached, still running
    (tmp_path / "go-a").touch()
    eventually(
        lambda: state(survivor).state == msgs.JOB_STATE_SUCCEEDED,
        timeout=30,
        message="the re-attached job never finished",
    )
    eventually(
        lambda: state(queued).state == msgs.JOB_STATE_SUCCEEDED,
        timeout=30,
        message="the queued job was not admitted after the restart",
    )
    logs = list(stub.StreamJobLogs(msgs.StreamJobLogsRequest(job_id=survivor), metadata=MD))
    assert [i.line.text for i in logs if i.HasField("line")] == ["a done"]
    listed = stub.ListJobs(msgs.ListJobsRequest(), metadata=MD).jobs
    assert all(j.state not in (msgs.JOB_STATE_RUNNING, msgs.JOB_STATE_PENDING) for j in listed)
    channel.close()
