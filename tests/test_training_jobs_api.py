"""The /training-jobs API through real Envoy and the job-runner's gRPC API, on the local backend."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from tests.support.harness import TEST_SECRET, Harness
from tests.support.jobs import gone, python_runs_as
from tests.support.wait import eventually
from trainyard.api.jobrunner.v1 import messages_pb2 as msgs
from trainyard.api.jobrunner.v1 import service_pb2_grpc as svc
from trainyard.jobrunner.app import build
from trainyard.jobrunner.settings import JobrunnerSettings, Pipeline
from trainyard.runtime.settings import CommonSettings

PRINT_ENV = (
    "import os,sys,time\n"
    "if os.environ.get('print_pid'): print('pid', os.getpid())\n"
    "print('epochs', os.environ.get('epochs'))\n"
    "print('lr', os.environ.get('lr'))\n"
    "print('nested', os.environ.get('nested'))\n"
    "sys.stdout.flush()\n"
    "time.sleep(float(os.environ.get('sleep', '0')))\n"
    "sys.exit(int(os.environ.get('exit', '0')))\n"
)


@pytest.fixture(scope="module")
def jobrunner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    tmp: Path = tmp_path_factory.mktemp("jobrunner")
    common = CommonSettings(data_dir=tmp, auth_secret=TEST_SECRET)
    own = JobrunnerSettings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'jr.db'}",
        kill_grace_seconds=1,
        # As root, python workloads run as nobody where nobody can run this interpreter
        # (tests/test_workload_isolation.py covers the unprivileged user with /bin/sh).
        workload_user="nobody" if python_runs_as("nobody") else "",
        pipelines={
            "churn": Pipeline(command=["python", "-c", PRINT_ENV]),
            "a-very-long-pipeline-name-for-naming": Pipeline(command=["true"]),
        },
    )
    harness = Harness(tmp)
    harness.start_app("jobrunner", harness.loop.run(build(common, own)))
    harness.start_envoy()
    try:
        yield harness
    finally:
        harness.close()


def _status(harness: Harness, name: str, user: str = "alice") -> str:
    jobs = httpx.get(f"{harness.http}/training-jobs", headers=harness.user_headers(user)).json()
    status: str = next(j["status"] for j in jobs if j["name"] == name)
    return status


def _pid_of(harness: Harness, name: str) -> int:
    """The workload's pid, from the `pid N` line it logs first (print_pid=1)."""

    def logged() -> int | None:
        resp = httpx.get(f"{harness.http}/training-jobs/{name}", headers=harness.user_headers())
        first = resp.json().partition("\n")[0] if resp.status_code == 200 else ""
        return int(first.split()[1]) if first.startswith("pid ") else None

    return eventually(logged, timeout=30, message=f"{name} never logged its pid")


def test_create_run_logs_list_delete(jobrunner: Harness) -> None:
    h = jobrunner
    auth = h.user_headers("alice")
    resp = httpx.post(
        f"{h.http}/training-jobs?pipeline=churn",
        headers=auth,
        json={"epochs": 3, "lr": 0.01, "nested": {"a": [1, 2]}},
    )
    assert resp.status_code == 200, resp.text
    name = resp.json()
    assert isinstance(name, str)
    assert re.fullmatch(r"model-training-churn-[0-9a-f-]{36}", name), name
    eventually(lambda: _status(h, name) == "Succeeded", timeout=30, message="job never succeeded")
    logs = httpx.get(f"{h.http}/training-jobs/{name}", headers=auth)
    assert logs.status_code == 200
    assert logs.json() == 'epochs 3\nlr 0.01\nnested {"a":[1,2]}\n'

    listed = httpx.get(f"{h.http}/training-jobs", headers=auth).json()
    entry = next(j for j in listed if j["name"] == name)
    assert entry["pipeline"] == "churn" and entry["status"] == "Succeeded"
    assert entry["start_time"] and entry["completion_time"]
    assert httpx.get(f"{h.http}/training-jobs?pipeline=other", headers=auth).json() == []

    deleted = httpx.delete(f"{h.http}/training-jobs/{name}", headers=auth)
    assert deleted.status_code == 200 and deleted.json() == {"name": name}
    gone = httpx.get(f"{h.http}/training-jobs/{name}", headers=auth)
    assert gone.status_code == 404
    assert gone.json()["message"] == f"training job {name!r} does not exist"
    assert httpx.delete(f"{h.http}/training-jobs/{name}", headers=auth).status_code == 404


def test_list_is_newest_first_and_per_pipeline(jobrunner: Harness) -> None:
    h = jobrunner
    auth = h.user_headers("lister")
    names = [
        httpx.post(f"{h.http}/training-jobs?pipeline_step=churn", headers=auth, json={}).json()
        for _ in range(3)
    ]
    listed = httpx.get(f"{h.http}/training-jobs?pipeline=churn", headers=auth).json()
    assert [j["name"] for j in listed] == names[::-1]
    page = httpx.get(f"{h.http}/training-jobs?page_size=2", headers=auth)
    assert [j["name"] for j in page.json()] == names[:0:-1]
    token = page.headers["x-next-page-token"]
    rest = httpx.get(f"{h.http}/training-jobs?page_size=2&page_token={token}", headers=auth)
    assert [j["name"] for j in rest.json()] == names[:1]
    assert "x-next-page-token" not in rest.headers


def test_jobs_are_private_to_their_owner(jobrunner: Harness) -> None:
    h = jobrunner
    name = httpx.post(
        f"{h.http}/training-jobs?pipeline=churn", headers=h.user_headers("alice"), json={}
    ).json()
    other = h.user_headers("mallory")
    assert name not in [
        j["name"] for j in httpx.get(f"{h.http}/training-jobs", headers=other).json()
    ]
    assert httpx.get(f"{h.http}/training-jobs/{name}", headers=other).status_code == 404
    assert httpx.delete(f"{h.http}/training-jobs/{name}", headers=other).status_code == 404


def test_errors(jobrunner: Harness) -> None:
    h = jobrunner
    auth = h.user_headers()
    unknown = httpx.post(f"{h.http}/training-jobs?pipeline=nope", headers=auth, json={})
    assert unknown.status_code == 404
    assert "image 'model-training-nope' does not exist" in unknown.json()["message"]
    missing = httpx.post(f"{h.http}/training-jobs", headers=auth, json={})
    assert missing.status_code == 400 and "pipeline" in missing.json()["message"]
    bad_name = httpx.post(f"{h.http}/training-jobs?pipeline=Bad_Name", headers=auth, json={})
    assert bad_name.status_code == 400
    bad_env = httpx.post(
        f"{h.http}/training-jobs?pipeline=churn", headers=auth, json={"not valid": 1}
    )
    assert bad_env.status_code == 400 and "'not valid'" in bad_env.json()["message"]
    not_object = httpx.post(f"{h.http}/training-jobs?pipeline=churn", headers=auth, json=[1])
    assert not_object.status_code == 400
    assert httpx.get(f"{h.http}/training-jobs/model-training-x-1", headers=auth).status_code == 404
    assert httpx.get(f"{h.http}/training-jobs").status_code == 401


def test_long_pipeline_names_make_valid_job_names(jobrunner: Harness) -> None:
    h = jobrunner
    name = httpx.post(
        f"{h.http}/training-jobs?pipeline=a-very-long-pipeline-name-for-naming",
        headers=h.user_headers(),
        json={},
    ).json()
    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name), name
    assert name.startswith("model-training-a-very")


def test_follow_logs_over_sse_with_resume(jobrunner: Harness) -> None:
    h = jobrunner
    auth = h.user_headers()
    name = httpx.post(
        f"{h.http}/training-jobs?pipeline=churn", headers=auth, json={"epochs": 1, "sleep": 0.5}
    ).json()
    events = []
    with httpx.stream(
        "GET", f"{h.http}/training-jobs/{name}/logs/follow", headers=auth, timeout=30
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    lines = [e["line"] for e in events if e.get("line")]
    assert [ln["text"] for ln in lines] == ["epochs 1", "lr None", "nested None"]
    assert [int(ln["sequence"]) for ln in lines] == [1, 2, 3]
    assert events[-1]["done"] is True and events[-1]["status"] == "Succeeded"
    with httpx.stream(
        "GET",
        f"{h.http}/training-jobs/{name}/logs/follow?from_sequence=3",
        headers=auth,
        timeout=30,
    ) as resp:
        resumed = [json.loads(x[6:]) for x in resp.iter_lines() if x.startswith("data: ")]
    assert [e["line"]["text"] for e in resumed if e.get("line")] == ["nested None"]


def test_failed_job_status(jobrunner: Harness) -> None:
    h = jobrunner
    name = httpx.post(
        f"{h.http}/training-jobs?pipeline=churn", headers=h.user_headers(), json={"exit": 4}
    ).json()
    eventually(
        lambda: _status(h, name, "alice") == "Failed", timeout=30, message="job never failed"
    )


def test_delete_running_job_stops_it(jobrunner: Harness) -> None:
    h = jobrunner
    auth = h.user_headers()
    name = httpx.post(
        f"{h.http}/training-jobs?pipeline=churn", headers=auth, json={"print_pid": 1, "sleep": 60}
    ).json()
    pid = _pid_of(h, name)
    assert not gone(pid)
    resp = httpx.delete(f"{h.http}/training-jobs/{name}", headers=auth, timeout=30)
    assert resp.status_code == 200
    assert gone(pid), "DELETE answered while the workload still runs"
    assert name not in [
        j["name"] for j in httpx.get(f"{h.http}/training-jobs", headers=auth).json()
    ]


def test_follow_is_live(jobrunner: Harness) -> None:
    """A line reaches the follower while its job still runs (the job sleeps until the test ends
    it), not only once the job is over."""
    h = jobrunner
    auth = h.user_headers()
    name = httpx.post(
        f"{h.http}/training-jobs?pipeline=churn", headers=auth, json={"print_pid": 1, "sleep": 60}
    ).json()
    events = []
    with httpx.stream(
        "GET", f"{h.http}/training-jobs/{name}/logs/follow", headers=auth, timeout=30
    ) as resp:
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            events.append(event)
            if len(events) == 1:
                first = event["line"]["text"]
                assert first.startswith("pid "), event
                assert _status(h, name) == "Active", "the first line came only after the job"
                os.kill(int(first.split()[1]), signal.SIGTERM)  # now let it end
    assert events[-1]["done"] is True and events[-1]["status"] == "Failed", events[-1]


def test_workload_rpcs_need_a_service_token(jobrunner: Harness) -> None:
    h = jobrunner
    address = h.servers["jobrunner"].address
    with grpc.insecure_channel(address) as channel:
        stub = svc.JobRunnerServiceStub(channel)
        spec = msgs.JobSpec(
            command=["python", "-c", "print('via grpc')"],
            labels={"owner": "alice", "model": "m-grpc"},
        )
        with pytest.raises(grpc.RpcError) as denied:
            stub.SubmitJob(
                msgs.SubmitJobRequest(spec=spec), metadata=tuple(h.user_headers("alice").items())
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        md = tuple(h.service_headers("orchestrator").items())
        job = stub.SubmitJob(
            msgs.SubmitJobRequest(spec=spec, idempotency_key="grpc-1"), metadata=md
        ).job
        again = stub.SubmitJob(
            msgs.SubmitJobRequest(spec=spec, idempotency_key="grpc-1"), metadata=md
        ).job
        assert again.job_id == job.job_id
        stream = stub.StreamJobLogs(
            msgs.StreamJobLogsRequest(job_id=job.job_id, follow=True), metadata=md
        )
        items = list(stream)
        assert [i.line.text for i in items if i.HasField("line")] == ["via grpc"]
        assert items[-1].done and items[-1].job.state == msgs.JOB_STATE_SUCCEEDED
        listed = stub.ListJobs(msgs.ListJobsRequest(labels={"model": "m-grpc"}), metadata=md)
        assert [j.job_id for j in listed.jobs] == [job.job_id]
        assert listed.jobs[0].spec.labels["owner"] == "alice"
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetJob(msgs.GetJobRequest(job_id="nope"), metadata=md)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_stream_job_logs_in_batches(jobrunner: Harness) -> None:
    h = jobrunner
    md = tuple(h.service_headers("orchestrator").items())
    with grpc.insecure_channel(h.servers["jobrunner"].address) as channel:
        stub = svc.JobRunnerServiceStub(channel)
        spec = msgs.JobSpec(command=["python", "-c", "for i in range(5): print(i)"])
        job = stub.SubmitJob(msgs.SubmitJobRequest(spec=spec), metadata=md).job
        req = msgs.StreamJobLogsRequest(job_id=job.job_id, follow=True, max_batch=2)
        replies = list(stub.StreamJobLogs(req, metadata=md))
        assert replies[-1].done and replies[-1].job.state == msgs.JOB_STATE_SUCCEEDED
        batches = [r.lines for r in replies[:-1]]
        assert all(0 < len(b) <= 2 for b in batches)
        assert not any(r.HasField("line") for r in replies)
        lines = [ln for b in batches for ln in b]
        assert [(ln.sequence, ln.text) for ln in lines] == [(i + 1, str(i)) for i in range(5)]
        resumed = stub.StreamJobLogs(
            msgs.StreamJobLogsRequest(job_id=job.job_id, from_sequence=4, max_batch=100),
            metadata=md,
        )
        assert [[ln.text for ln in r.lines] for r in resumed if not r.done] == [["3", "4"]]
