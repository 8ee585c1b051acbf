"""The job runner with the Kubernetes backend, against the API server double (real HTTP, the
official client, pods as real local processes). Mirrors tests/test_jobrunner_local.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from tests.k8s_double import FakeKubernetes
from tests.support.jobs import follow_with_reconnects, gone, job_spec, lines, wait_state
from tests.support.wait import wait_until
from trainyard.jobrunner.app import MIGRATIONS
from trainyard.jobrunner.app import make_backend as make_backend_from_app
from trainyard.jobrunner.backends.base import Workload
from trainyard.jobrunner.backends.kubernetes import (
    JOB_ID_LABEL,
    LABELS_ANNOTATION,
    MANAGED_BY,
    KubernetesBackend,
    label_value,
    sanitize_labels,
)
from trainyard.jobrunner.backends.kubernetes.backend import SAFETY_TTL_SECONDS
from trainyard.jobrunner.backends.kubernetes.logs import LogCursor, log_tail
from trainyard.jobrunner.backends.kubernetes.manifests import MANAGED_SELECTOR
from trainyard.jobrunner.logfile import iter_records
from trainyard.jobrunner.runner import JobRunner
from trainyard.jobrunner.settings import JobrunnerSettings
from trainyard.runtime.db import Database
from trainyard.runtime.errors import AlreadyExists, InvalidArgument

T = TypeVar("T")
PY = sys.executable
NS = "trainyard-test"
IMAGE = "python:3.11"


@pytest.fixture
def k8s() -> Iterator[FakeKubernetes]:
    with FakeKubernetes(known_images=[IMAGE]) as fake:
        yield fake


def make_backend(fake: FakeKubernetes, **kw: Any) -> KubernetesBackend:
    kw.setdefault("ttl_seconds_after_finished", 3600)
    return KubernetesBackend(fake.api_client(), namespace=NS, grace_seconds=1.0, **kw)


async def make_runner(tmp: Path, fake: FakeKubernetes, **kw: Any) -> tuple[JobRunner, Database]:
    db = Database("jobrunner", f"sqlite+aiosqlite:///{tmp / 'jr.db'}", MIGRATIONS)
    await db.start()
    runner = JobRunner(db.sessions, make_backend(fake, **kw), tmp / "jobs", 4)
    await runner.start()
    return runner, db


async def stop_runner(runner: JobRunner, db: Database, cancel: bool = True) -> None:
    if cancel:
        for view in (await runner.list())[0]:
            if not view.done:
                await runner.cancel(view.id)
    await runner.close()
    await db.close()


@pytest.fixture
async def runner(tmp_path: Path, k8s: FakeKubernetes) -> AsyncIterator[JobRunner]:
    r, db = await make_runner(tmp_path, k8s)
    try:
        yield r
    finally:
        await stop_runner(r, db)


def py(code: str, **extra: Any) -> dict[str, Any]:
    return {"image": IMAGE, "command": [PY, "-c", code], **extra}


def batch_api(fake: FakeKubernetes) -> client.BatchV1Api:
    return client.BatchV1Api(fake.api_client())


# ---- behaviour, mirroring the local backend's tests -----------------------------------------


async def test_success_and_logs(runner: JobRunner) -> None:
    code = (
        "import os, sys\nprint('hello')\nprint('oops', file=sys.stderr)\n"
        "print(os.environ['GREETING'], os.environ['TRAINYARD_JOB_ID'])"
    )
    view = await runner.submit(job_spec(py(code, env={"GREETING": "hi $(HOME) $$"})), "alice")
    done = await runner.wait(view.id, 30)
    assert (done.state, done.exit_code, done.attempts) == ("SUCCEEDED", 0, 1)
    assert done.started_at and done.finished_at and done.finished_at >= done.started_at
    recs = await lines(runner, view.id)
    # Kubernetes merges stdout and stderr into one stream ("o"), keeping their order.
    assert [(r.seq, r.attempt, r.stream, r.text) for r in recs] == [
        (1, 1, "o", "hello"),
        (2, 1, "o", "oops"),
        (3, 1, "o", f"hi $(HOME) $$ {view.id}"),
    ]


async def test_job_manifest(runner: JobRunner, k8s: FakeKubernetes) -> None:
    labels = {"owner": "alice@example.com", "model": "m" * 80, "team/x": "-bad value-"}
    spec = py(
        "print('ok')",
        name="train-m1",
        labels=labels,
        retries=2,
        deadline="90.5s",
        resources={"cores": 0.5, "memory_mb": 512},
        args=["--flag"],
    )
    view = await runner.submit(job_spec(spec), "alice")
    assert (await runner.wait(view.id, 30)).state == "SUCCEEDED"
    job = k8s.job("train-m1", NS)
    assert job is not None
    meta, manifest_spec = job["metadata"], job["spec"]
    expected_labels = {
        "owner": "alice_example.com",
        "model": label_value("m" * 80),
        "team_x": "bad_value",
        MANAGED_BY: "trainyard",
        JOB_ID_LABEL: view.id,
    }
    assert meta["labels"] == expected_labels
    assert len(expected_labels["model"]) <= 63
    assert json.loads(meta["annotations"][LABELS_ANNOTATION]) == labels
    assert manifest_spec["backoffLimit"] == 2
    assert manifest_spec["activeDeadlineSeconds"] == 91
    assert manifest_spec["ttlSecondsAfterFinished"] == 3600
    template = manifest_spec["template"]
    assert expected_labels.items() <= template["metadata"]["labels"].items()
    pod_spec = template["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod_spec["containers"]
    assert container["name"] == "main" and container["image"] == IMAGE
    assert container["command"] == [PY, "-c", "print('ok')"] and container["args"] == ["--flag"]
    resources = {"cpu": "500m", "memory": "512Mi"}
    assert container["resources"] == {"requests": resources, "limits": resources}
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TRAINYARD_JOB_ID"] == view.id and env["TRAINYARD_JOB_NAME"] == "train-m1"
    # The runner deleted the pod once its log was read: ask the kubelet what it ran.
    [pod] = [runtime for runtime in k8s.kubelet.runtimes() if runtime.job_name == "train-m1"]
    assert pod.labels[JOB_ID_LABEL] == view.id


async def test_the_pod_gets_no_platform_secret_and_runs_non_root(
    runner: JobRunner, k8s: FakeKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 8: the workload's pod mounts no secret (no volumes, no service-account token),
    runs non-root, and its environment is the job's own: nothing of the job-runner's."""
    monkeypatch.setenv("TRAINYARD_AUTH_SECRET", "must-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
    view = await runner.submit(
        job_spec(py("print('ok')", name="no-secrets", env={"epochs": "3"})), "a"
    )
    assert (await runner.wait(view.id, 30)).state == "SUCCEEDED"
    job = k8s.job("no-secrets", NS)
    assert job is not None
    pod_spec = job["spec"]["template"]["spec"]
    assert "volumes" not in pod_spec and pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    [container] = pod_spec["containers"]
    assert "volumeMounts" not in container and "envFrom" not in container
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e for e in container["env"]}
    assert set(env) == {"PYTHONUNBUFFERED", "TRAINYARD_JOB_ID", "TRAINYARD_JOB_NAME", "epochs"}
    assert all("valueFrom" not in e for e in env.values())
    assert "must-not-leak" not in json.dumps(job)
    # The reserved names are refused on this backend too, before a Job exists.
    with pytest.raises(InvalidArgument) as err:
        await runner.submit(
            job_spec(py("print(1)", name="refused", env={"LD_PRELOAD": "/x.so"})), "a"
        )
    assert [v.field for v in err.value.violations] == ["spec.env['LD_PRELOAD']"]
    assert k8s.job("refused", NS) is None


async def test_inline_config_reaches_the_pod_through_its_own_secret(
    runner: JobRunner, k8s: FakeKubernetes
) -> None:
    """config_json (it holds the job's token) goes into a per-job Secret the Job owns; the
    container reads it as TRAINYARD_CONFIG_JSON by reference, so the pod spec holds none of
    it; deleting the job deletes the Secret."""
    config = json.dumps({"epochs": 3, "platform": {"job_token": "tok-$(HOME)-secret"}})
    code = (
        "import asyncio, json, os\n"
        "from trainyard.workload import load_config\n"
        "from trainyard.workload.config import platform_settings\n"
        "print(json.dumps(asyncio.run(load_config())), platform_settings()['job_token'])\n"
        "print(sorted(k for k in os.environ if k.startswith('TRAINYARD_CONFIG')))"
    )
    view = await runner.submit(job_spec(py(code, name="configured", config_json=config)), "a")
    done = await runner.wait(view.id, 30)
    assert done.state == "SUCCEEDED", done
    assert [r.text for r in await lines(runner, view.id)] == [
        '{"epochs": 3} tok-$(HOME)-secret',
        "['TRAINYARD_CONFIG_JSON']",
    ]
    job = k8s.job("configured", NS)
    secret = k8s.secret("configured-config", NS)
    assert job is not None and secret is not None
    assert base64.b64decode(secret["data"]["config.json"]).decode() == config
    assert secret["immutable"] is True and secret["type"] == "Opaque"
    assert secret["metadata"]["labels"] == {MANAGED_BY: "trainyard", JOB_ID_LABEL: view.id}
    assert secret["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "configured",
            "uid": job["metadata"]["uid"],
        }
    ]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert [e for e in container["env"] if e["name"].startswith("TRAINYARD_CONFIG")] == [
        {
            "name": "TRAINYARD_CONFIG_JSON",
            "valueFrom": {"secretKeyRef": {"name": "configured-config", "key": "config.json"}},
        }
    ]
    assert "tok-" not in json.dumps(job), "no part of the config in the Job"
    # The Secret was created before the Job, and owned by it right after.
    writes = [
        (r.method, r.path.rsplit("/", 2)[-2] if r.method == "PATCH" else r.path.rsplit("/", 1)[-1])
        for r in k8s.requests
        if r.method in ("POST", "PATCH")
    ]
    assert writes == [("POST", "secrets"), ("POST", "jobs"), ("PATCH", "secrets")]
    await runner.delete(view.id)
    assert k8s.secret("configured-config", NS) is None
    await wait_until(lambda: k8s.job("configured", NS) is None, what="the Job is deleted")


async def test_config_uri_is_passed_as_is_and_needs_no_secret(
    runner: JobRunner, k8s: FakeKubernetes, tmp_path: Path
) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"epochs": 5}')
    code = "import os; print(os.environ['TRAINYARD_CONFIG_URI'])"
    view = await runner.submit(job_spec(py(code, name="by-uri", config_uri=path.as_uri())), "a")
    assert (await runner.wait(view.id, 30)).state == "SUCCEEDED"
    assert [r.text for r in await lines(runner, view.id)] == [path.as_uri()]
    assert k8s.secrets(NS) == []


async def test_a_secret_of_another_is_not_taken(runner: JobRunner, k8s: FakeKubernetes) -> None:
    k8s.add_secret(NS, "taken-config", {"config.json": "{}"})
    view = await runner.submit(job_spec(py("print(1)", name="taken", config_json="{}")), "a")
    done = await runner.wait(view.id, 30)
    assert done.state == "FAILED"
    assert "a Kubernetes Secret named 'taken-config' already exists" in done.message
    assert k8s.job("taken", NS) is None
    await runner.delete(view.id)
    assert k8s.secret("taken-config", NS) is not None, "not ours: left alone"


async def test_reconcile_deletes_config_secrets_no_job_owns(
    tmp_path: Path, k8s: FakeKubernetes
) -> None:
    """A crash between creating a job's Secret and its Job leaves a Secret with no owner:
    the next runner's reconcile deletes it (ours only: by our managed-by label)."""
    core = client.CoreV1Api(k8s.api_client())
    ours = {MANAGED_BY: "trainyard", JOB_ID_LABEL: "crashed"}
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "crashed-config", "labels": ours}, "stringData": {"k": "v"}}
    )
    core.create_namespaced_secret(NS, {"metadata": {"name": "someone-elses"}})
    first, db = await make_runner(tmp_path, k8s)
    try:
        view = await first.submit(
            job_spec(py("import time; time.sleep(60)", name="alive", config_json="{}")), "a"
        )
        await wait_state(first, view.id, "RUNNING")
        assert k8s.secret("crashed-config", NS) is None, "deleted on the first reconcile"
    finally:
        await stop_runner(first, db, cancel=False)
    second, db = await make_runner(tmp_path, k8s)
    try:
        assert k8s.secret("alive-config", NS) is not None, "owned by a live Job: kept"
        assert k8s.secret("someone-elses", NS) is not None
    finally:
        await stop_runner(second, db)


async def test_no_command_uses_the_image_entrypoint(tmp_path: Path) -> None:
    with FakeKubernetes(known_images={IMAGE: [PY, "-c", "import sys; print(sys.argv[1:])"]}) as k:
        runner, db = await make_runner(tmp_path, k)
        try:
            view = await runner.submit(job_spec({"image": IMAGE, "args": ["a", "$(B)"]}), "a")
            assert (await runner.wait(view.id, 30)).state == "SUCCEEDED"
            job = k.job(view.name, NS)
            assert job is not None
            assert "command" not in job["spec"]["template"]["spec"]["containers"][0]
            assert [r.text for r in await lines(runner, view.id)] == ["['a', '$(B)']"]
        finally:
            await stop_runner(runner, db)


async def test_failure_exit_code_and_retries(runner: JobRunner, k8s: FakeKubernetes) -> None:
    view = await runner.submit(
        job_spec(py("print('try')\nraise SystemExit(7)", retries=2)), "alice"
    )
    done = await runner.wait(view.id, 30)
    assert (done.state, done.reason, done.exit_code, done.attempts) == ("FAILED", "EXIT_CODE", 7, 3)
    assert "code 7" in done.message
    assert len(k8s.pod_pids(view.name, NS)) == 3  # backoffLimit 2: three pods
    recs = await lines(runner, view.id)
    assert [(r.seq, r.attempt, r.text) for r in recs] == [
        (1, 1, "try"),
        (2, 2, "try"),
        (3, 3, "try"),
    ]


async def test_retry_succeeds_on_second_attempt(runner: JobRunner, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    code = (
        f"import os,sys\np={str(marker)!r}\nprint('attempt')\n"
        "if os.path.exists(p): sys.exit(0)\nopen(p,'w').close(); sys.exit(1)"
    )
    view = await runner.submit(job_spec(py(code, retries=1)), "a")
    done = await runner.wait(view.id, 30)
    assert (done.state, done.attempts) == ("SUCCEEDED", 2)
    assert [(r.attempt, r.text) for r in await lines(runner, view.id)] == [
        (1, "attempt"),
        (2, "attempt"),
    ]


async def test_deadline_exceeded_kills_the_process(runner: JobRunner, k8s: FakeKubernetes) -> None:
    view = await runner.submit(
        job_spec(
            py("import time\nprint('start', flush=True)\ntime.sleep(60)", deadline="2s", retries=3)
        ),
        "alice",
    )
    done = await runner.wait(view.id, 30)
    assert (done.state, done.reason) == ("FAILED", "DEADLINE_EXCEEDED")
    assert done.attempts == 1, "a deadline is never retried"
    assert "deadline of 2s" in done.message
    assert [r.text for r in await lines(runner, view.id)] == ["start"]
    assert all(gone(pid) for pid in k8s.pod_pids(view.name, NS))


async def test_cancel_really_stops_the_process(runner: JobRunner, k8s: FakeKubernetes) -> None:
    view = await runner.submit(
        job_spec(
            py(
                "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('running', flush=True)\ntime.sleep(60)"
            )
        ),
        "alice",
    )
    await wait_state(runner, view.id, "RUNNING")
    [pid] = await wait_until(lambda: k8s.pod_pids(view.name, NS), what="the pod's process starts")
    await wait_until(
        lambda: list(iter_records(runner.log_path(view.id))), what="SIGTERM is ignored now"
    )
    assert not gone(pid)
    done = await runner.cancel(view.id, "no longer needed")
    assert (done.state, done.reason) == ("CANCELLED", "CANCELLED")
    assert gone(pid), "SIGTERM ignored: killed after the grace period"
    assert k8s.job(view.name, NS) is None and k8s.pods(NS, job=view.name) == []
    deletes = [r for r in k8s.requests if r.method == "DELETE" and view.name in r.path]
    assert deletes and all("Background" in json.dumps(r.body) + str(r.query) for r in deletes)
    assert (await runner.cancel(view.id)).state == "CANCELLED"  # idempotent
    assert [r.text for r in await lines(runner, view.id)] == ["running"]


async def test_unknown_image_is_image_not_found(runner: JobRunner, k8s: FakeKubernetes) -> None:
    view = await runner.submit(
        job_spec({**py("print(1)"), "image": "ghcr.io/acme/nope:1"}), "alice"
    )
    done = await runner.wait(view.id, 30)
    assert (done.state, done.reason) == ("FAILED", "IMAGE_NOT_FOUND")
    assert "ghcr.io/acme/nope:1" in done.message
    await wait_until(lambda: k8s.job(view.name, NS) is None, what="the Job is deleted")
    assert k8s.pod_pids(view.name, NS) == []


async def test_memory_limit_is_reported_as_oom(runner: JobRunner) -> None:
    # The double enforces limits.memory as RLIMIT_AS and reports a MemoryError death as
    # exitCode 137 / OOMKilled, like the kubelet does for a cgroup OOM kill.
    view = await runner.submit(
        job_spec(
            py("x = bytearray(4 * 1024 ** 3)\nprint('allocated')", resources={"memory_mb": 300})
        ),
        "alice",
    )
    done = await runner.wait(view.id, 30)
    assert (done.state, done.reason, done.exit_code) == ("FAILED", "OOM_KILLED", 137)
    assert "300 MiB" in done.message
    assert "allocated" not in [r.text for r in await lines(runner, view.id)]


async def test_idempotent_submit(runner: JobRunner, k8s: FakeKubernetes) -> None:
    spec = py("print(1)", labels={"model": "m1"})
    a = await runner.submit(job_spec(spec), "alice", idempotency_key="key-1")
    b = await runner.submit(job_spec(dict(spec)), "alice", idempotency_key="key-1")
    assert a.id == b.id
    with pytest.raises(AlreadyExists, match="different job spec"):
        await runner.submit(job_spec(py("print(2)")), "alice", idempotency_key="key-1")
    assert (await runner.wait(a.id, 30)).state == "SUCCEEDED"
    assert [j["metadata"]["name"] for j in k8s.jobs(NS)] == [a.name]


async def test_watch_sees_every_transition(runner: JobRunner) -> None:
    events: list[tuple[str, str]] = []
    async with runner.watch({"model": "w"}) as stream:  # subscribed before the submit
        view = await runner.submit(job_spec(py("print(1)", labels={"model": "w"})), "a")
        while True:
            event = await asyncio.wait_for(stream.__anext__(), 30)
            events.append((event.previous_state, event.job.state))
            if event.job.done:
                break
    assert events == [("", "PENDING"), ("PENDING", "RUNNING"), ("RUNNING", "SUCCEEDED")]
    assert (await runner.get(view.id)).attempts == 1


async def test_follow_with_reconnect_across_20k_lines(runner: JobRunner) -> None:
    total = 20_000
    view = await runner.submit(
        job_spec(
            py(
                "import sys\n"
                f"for i in range(1, {total + 1}):\n"
                "    (sys.stdout if i % 7 else sys.stderr).write(f'line {i}\\n')\n"
            )
        ),
        "a",
    )
    records = await follow_with_reconnects(runner, view.id, drop_every=1_999)
    assert len(records) // 1_999 >= 10, "the stream was dropped at least ten times"
    assert [r.seq for r in records] == list(range(1, total + 1))
    assert sorted(r.text for r in records) == sorted(f"line {i}" for i in range(1, total + 1))


async def test_dropped_log_stream_resumes_without_duplicates(
    tmp_path: Path, k8s: FakeKubernetes
) -> None:
    """Quiet spells longer than the read timeout break the follow connection; each reconnect
    re-reads the pod's log and skips what was written, although every burst of lines shares
    one timestamp (one read from the pipe)."""
    runner, db = await make_runner(tmp_path, k8s, log_read_timeout_seconds=0.3)
    try:
        view = await runner.submit(
            job_spec(
                py(
                    "import sys, time\n"
                    "for burst in range(4):\n"
                    "    sys.stdout.write(''.join(f'line {burst * 100 + i}\\n'"
                    " for i in range(100)))\n"
                    "    sys.stdout.flush()\n"
                    "    time.sleep(0.6)\n"
                )
            ),
            "a",
        )
        assert (await runner.wait(view.id, 30)).state == "SUCCEEDED"
        recs = await lines(runner, view.id)
        assert [r.text for r in recs] == [f"line {i}" for i in range(400)]
        assert len({r.time_ns for r in recs}) < 100, "bursts share timestamps"
        follows = [r for r in k8s.requests if r.path.endswith("/log")]
        assert len(follows) >= 4 and any("sinceSeconds" in r.query for r in follows)
    finally:
        await stop_runner(runner, db)


async def test_logs_outlive_the_job_and_its_pods(runner: JobRunner, k8s: FakeKubernetes) -> None:
    view = await runner.submit(job_spec(py("for i in range(50): print('line', i)")), "a")
    assert (await runner.wait(view.id, 30)).state == "SUCCEEDED"
    batch_api(k8s).delete_namespaced_job(view.name, NS, propagation_policy="Background")
    await wait_until(
        lambda: not k8s.jobs(NS) and not k8s.pods(NS), what="the Job and its pods are gone"
    )
    assert [r.text for r in await lines(runner, view.id)] == [f"line {i}" for i in range(50)]


async def test_ttl_zero_deletes_the_job_right_away_yet_no_line_is_lost(
    tmp_path: Path, k8s: FakeKubernetes
) -> None:
    runner, db = await make_runner(tmp_path, k8s, ttl_seconds_after_finished=0)
    try:
        gate = tmp_path / "gate"
        view = await runner.submit(
            job_spec(
                py(
                    "import os, time\nprint('begin', flush=True)\n"
                    f"while not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"
                    "for i in range(2000): print('line', i)"
                )
            ),
            "a",
        )
        await wait_until(
            lambda: list(iter_records(runner.log_path(view.id))), what="the log is followed"
        )
        gate.touch()
        done = await runner.wait(view.id, 30)
        assert done.state == "SUCCEEDED"
        await wait_until(
            lambda: k8s.job(view.name, NS) is None, what="ttlSecondsAfterFinished=0 deletes"
        )
        texts = [r.text for r in await lines(runner, view.id)]
        assert texts == ["begin"] + [f"line {i}" for i in range(2000)]
    finally:
        await stop_runner(runner, db)


async def test_logs_read_after_the_job_ended_lose_no_line(
    tmp_path: Path, k8s: FakeKubernetes
) -> None:
    """One log stream for all jobs, taken by a running job: the other job ends before its log
    can be read. Its end is reported after the drain wait, and its pod (and, with a ttl of 0,
    its Job) stays until the log is read once the stream frees up: no line is lost."""
    runner, db = await make_runner(
        tmp_path, k8s, ttl_seconds_after_finished=0, max_log_streams=1, log_drain_seconds=0.2
    )
    try:
        gate = tmp_path / "gate"
        holder = await runner.submit(
            job_spec(
                py(
                    "import os, time\nprint('holding', flush=True)\n"
                    f"while not os.path.exists({str(gate)!r}): time.sleep(0.01)"
                )
            ),
            "a",
        )
        await wait_until(
            lambda: list(iter_records(runner.log_path(holder.id))), what="the stream is taken"
        )
        short = await runner.submit(job_spec(py("for i in range(3): print('short', i)")), "a")
        done = await runner.wait(short.id, 30)
        assert done.state == "SUCCEEDED"
        assert list(iter_records(runner.log_path(short.id))) == []
        assert k8s.job(short.name, NS) is not None, "ttl 0 waits until the log is read"
        assert k8s.pods(NS, job=short.name), "the pod stays until its log is read"
        gate.touch()
        await wait_until(
            lambda: (
                [r.text for r in iter_records(runner.log_path(short.id))]
                == ["short 0", "short 1", "short 2"]
            ),
            what="the late log is read to the end",
        )
        await wait_until(lambda: k8s.job(short.name, NS) is None, what="then ttl 0 applies")
        assert (await runner.wait(holder.id, 30)).state == "SUCCEEDED"
    finally:
        await stop_runner(runner, db)


async def test_orphans_are_deleted(tmp_path: Path, k8s: FakeKubernetes) -> None:
    batch = batch_api(k8s)

    def job(name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "main",
                                "image": IMAGE,
                                "command": [PY, "-c", "import time; time.sleep(60)"],
                            }
                        ],
                    }
                }
            },
        }

    batch.create_namespaced_job(NS, job("orphan-1", {MANAGED_BY: "trainyard", JOB_ID_LABEL: "x1"}))
    batch.create_namespaced_job(NS, job("not-ours", {"team": "other"}))
    [pid] = await wait_until(lambda: k8s.pod_pids("orphan-1", NS), what="the orphan runs")
    runner, db = await make_runner(tmp_path, k8s)  # start() reconciles: deletes the orphan
    try:
        await wait_until(lambda: k8s.job("orphan-1", NS) is None, what="the orphan Job is deleted")
        await wait_until(lambda: gone(pid), what="the orphan's process is killed")
        assert k8s.job("not-ours", NS) is not None, "only Jobs trainyard manages are touched"
        view = await runner.submit(job_spec(py("import time; time.sleep(60)")), "a")
        await wait_state(runner, view.id, "RUNNING")
        batch.create_namespaced_job(
            NS, job("orphan-2", {MANAGED_BY: "trainyard", JOB_ID_LABEL: "x2"})
        )
        assert await runner.backend.orphans({view.id}) == ["x2"]
        assert (await runner.get(view.id)).state == "RUNNING", "known jobs are left alone"
    finally:
        await stop_runner(runner, db)


async def test_restart_reattaches_without_duplicate_lines(
    tmp_path: Path, k8s: FakeKubernetes
) -> None:
    gate1, gate2 = tmp_path / "gate1", tmp_path / "gate2"
    code = (
        "import os, sys, time\n"
        "def wait(p):\n"
        "    while not os.path.exists(p): time.sleep(0.01)\n"
        "for i in range(1, 301):\n"
        "    print(f'line {i}', file=sys.stderr if i % 5 == 0 else sys.stdout)\n"
        f"wait({str(gate1)!r})\n"
        "for i in range(301, 601): print(f'line {i}')\n"
        f"wait({str(gate2)!r})\n"
        "for i in range(601, 901): print(f'line {i}')\n"
    )
    runner, db = await make_runner(tmp_path, k8s)
    view = await runner.submit(job_spec(py(code)), "a")
    await wait_until(
        lambda: len(list(iter_records(runner.log_path(view.id)))) == 300, what="300 lines"
    )
    await wait_state(runner, view.id, "RUNNING")  # the handle is recorded
    await stop_runner(runner, db, cancel=False)  # the workload keeps running
    gate1.touch()
    [pod] = k8s.pods(NS, job=view.name)
    await wait_until(
        lambda: "line 600\n" in k8s.pod_log(pod["metadata"]["name"], NS),
        what="output while the runner is down",
    )

    runner, db = await make_runner(tmp_path, k8s)  # same database, same log directory
    try:
        await wait_until(
            lambda: len(list(iter_records(runner.log_path(view.id)))) >= 600, what="catch up"
        )
        gate2.touch()
        done = await runner.wait(view.id, 30)
        assert (done.state, done.attempts) == ("SUCCEEDED", 1)
        recs = await lines(runner, view.id)
        assert [r.text for r in recs] == [f"line {i}" for i in range(1, 901)]
        assert [r.seq for r in recs] == list(range(1, 901))
        assert len(k8s.pod_pids(view.name, NS)) == 1, "re-attached, not restarted"
    finally:
        await stop_runner(runner, db)


async def test_job_that_ended_while_runner_was_down(tmp_path: Path, k8s: FakeKubernetes) -> None:
    gate = tmp_path / "gate"
    runner, db = await make_runner(tmp_path, k8s)
    view = await runner.submit(
        job_spec(
            py(
                "import os, sys, time\nprint('before', flush=True)\n"
                f"while not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"
                "print('after')\nsys.exit(3)"
            )
        ),
        "a",
    )
    await wait_state(runner, view.id, "RUNNING")
    await wait_until(lambda: list(iter_records(runner.log_path(view.id))), what="the first line")
    await stop_runner(runner, db, cancel=False)
    gate.touch()
    await wait_until(
        lambda: (k8s.job(view.name, NS) or {}).get("status", {}).get("failed"), what="it fails"
    )
    runner, db = await make_runner(tmp_path, k8s)
    try:
        done = await runner.wait(view.id, 30)
        assert (done.state, done.reason, done.exit_code) == ("FAILED", "EXIT_CODE", 3)
        assert [(r.seq, r.text) for r in await lines(runner, view.id)] == [
            (1, "before"),
            (2, "after"),
        ]
    finally:
        await stop_runner(runner, db)


async def test_job_deleted_while_runner_down_is_lost(tmp_path: Path, k8s: FakeKubernetes) -> None:
    runner, db = await make_runner(tmp_path, k8s)
    view = await runner.submit(
        job_spec(py("import time; print('up', flush=True); time.sleep(60)")), "a"
    )
    await wait_state(runner, view.id, "RUNNING")
    await stop_runner(runner, db, cancel=False)
    batch_api(k8s).delete_namespaced_job(view.name, NS, propagation_policy="Background")
    await wait_until(lambda: not k8s.pods(NS, job=view.name), what="the pods are gone")
    runner, db = await make_runner(tmp_path, k8s)
    try:
        done = await runner.wait(view.id, 30)
        assert (done.state, done.reason) == ("FAILED", "LOST")
        assert "disappeared" in done.message
    finally:
        await stop_runner(runner, db)


async def test_adopts_its_own_job_and_refuses_a_foreign_one(
    tmp_path: Path, k8s: FakeKubernetes
) -> None:
    """A runner that died between creating the Job and recording it re-runs the job: the
    existing Job is adopted, not duplicated; a same-named Job of someone else is not."""
    backend = make_backend(k8s)
    batch = batch_api(k8s)
    running: list[int] = []

    async def on_running(handle: dict[str, Any], attempt: int) -> None:
        running.append(attempt)

    def workload(job_id: str, name: str) -> Workload:
        return Workload(
            job_id,
            name,
            IMAGE,
            [PY, "-c", "print('adopted')"],
            [],
            {},
            0,
            0,
            None,
            0,
            {},
            tmp_path / job_id / "log",
        )

    try:
        mine = workload("id-1", "adopt-me")
        batch.create_namespaced_job(NS, backend.job_manifest(mine))
        outcome = await backend.run(mine, None, on_running)
        assert (outcome.state, outcome.attempts, running) == ("SUCCEEDED", 1, [1])
        assert [r.text for r in iter_records(mine.log_path)] == ["adopted"]
        assert len(k8s.pod_pids("adopt-me", NS)) == 1

        batch.create_namespaced_job(NS, backend.job_manifest(workload("someone", "taken")))
        outcome = await backend.run(workload("id-2", "taken"), None, on_running)
        assert outcome.state == "FAILED" and "already exists" in outcome.message
    finally:
        await backend.close()


async def test_watch_expiry_relists(tmp_path: Path) -> None:
    """A watch resumed from a compacted resourceVersion gets 410 Gone: re-list, carry on."""
    with FakeKubernetes(known_images=[IMAGE], watch_history=5) as k:
        runner, db = await make_runner(tmp_path, k, watch_timeout_seconds=1)
        gate = tmp_path / "gate"
        try:
            view = await runner.submit(
                job_spec(
                    py(
                        "import os, time\nprint('a', flush=True)\n"
                        f"while not os.path.exists({str(gate)!r}): time.sleep(0.01)\nprint('b')"
                    )
                ),
                "a",
            )
            await wait_state(runner, view.id, "RUNNING")
            listed = len(
                [
                    r
                    for r in k.requests
                    if r.method == "GET" and r.path.endswith("/jobs") and "watch" not in r.query
                ]
            )
            batch = batch_api(k)
            for i in range(3):  # churn, so that the history our watches resume from is gone
                batch.create_namespaced_job(
                    NS,
                    {
                        "metadata": {"name": f"noise-{i}"},
                        "spec": {
                            "template": {
                                "spec": {
                                    "restartPolicy": "Never",
                                    "containers": [
                                        {
                                            "name": "main",
                                            "image": IMAGE,
                                            "command": [PY, "-c", "pass"],
                                        }
                                    ],
                                }
                            }
                        },
                    },
                )

            def relists() -> int:
                return len(
                    [
                        r
                        for r in k.requests
                        if r.method == "GET"
                        and r.path.endswith("/jobs")
                        and "watch" not in r.query
                        and r.query.get("labelSelector") == [MANAGED_SELECTOR]
                    ]
                )

            await wait_until(
                lambda: relists() > listed, what="the Job watch re-lists after 410 Gone"
            )
            gate.touch()
            done = await runner.wait(view.id, 30)
            assert done.state == "SUCCEEDED"
            assert [r.text for r in await lines(runner, view.id)] == ["a", "b"]
        finally:
            await stop_runner(runner, db)


async def test_informer_relists_after_410_gone_and_the_job_finishes(
    tmp_path: Path, k8s: FakeKubernetes
) -> None:
    """The history both namespace-wide watches resume from is compacted away while a job
    runs: each gets 410 Gone, lists again, and the job is still seen to its end."""
    runner, db = await make_runner(tmp_path, k8s)
    gate = tmp_path / "gate"
    try:
        view = await runner.submit(
            job_spec(
                py(
                    "import os, time\nprint('a', flush=True)\n"
                    f"while not os.path.exists({str(gate)!r}): time.sleep(0.01)\nprint('b')"
                )
            ),
            "a",
        )
        await wait_state(runner, view.id, "RUNNING")

        def lists(kind: str) -> int:
            return sum(
                1
                for r in k8s.requests
                if r.method == "GET"
                and r.path.endswith("/" + kind)
                and "watch" not in r.query
                and r.query.get("labelSelector") == [MANAGED_SELECTOR]
            )

        jobs, pods = lists("jobs"), lists("pods")  # the orphan sweep's, the informer's
        k8s.expire_watch_history()
        await wait_until(
            lambda: lists("jobs") > jobs and lists("pods") > pods, what="both re-list on 410 Gone"
        )
        gate.touch()
        done = await runner.wait(view.id, 30)
        assert (done.state, done.attempts) == ("SUCCEEDED", 1)
        assert [r.text for r in await lines(runner, view.id)] == ["a", "b"]
        assert len(k8s.watch_requests("jobs")) >= 2 and len(k8s.watch_requests("pods")) >= 2
    finally:
        await stop_runner(runner, db)


async def test_watch_connections_stay_constant_as_jobs_grow(
    runner: JobRunner, k8s: FakeKubernetes
) -> None:
    """Two watches per namespace (Jobs, Pods), however many jobs run; no per-job watch."""
    first = await runner.submit(job_spec(py("print('one')")), "a")
    assert (await runner.wait(first.id, 30)).state == "SUCCEEDED"
    assert (len(k8s.watch_requests("jobs")), len(k8s.watch_requests("pods"))) == (1, 1)
    views = [await runner.submit(job_spec(py(f"print({i})")), "a") for i in range(20)]
    for view in views:
        assert (await runner.wait(view.id, 60)).state == "SUCCEEDED"
    assert (len(k8s.watch_requests("jobs")), len(k8s.watch_requests("pods"))) == (1, 1)
    assert all("labelSelector" in r.query for r in k8s.watch_requests())
    assert not [r for r in k8s.requests if "fieldSelector" in r.query], "no per-job selectors"
    for i, view in enumerate(views):
        assert [r.text for r in await lines(runner, view.id)] == [str(i)]


async def test_ttl_zero_and_fast_retries_lose_no_line(tmp_path: Path) -> None:
    """Every attempt fails at once and the next starts at once (retry back-off 0); with a
    ttl of 0 the Job would be deleted, pods with it, the moment the last attempt fails. The
    runner reads each pod's log to the end before it deletes that pod itself, and applies
    the ttl of 0 only then: the manifest's ttl is just a safety net."""
    with FakeKubernetes(known_images=[IMAGE], retry_backoff_seconds=0) as k:
        runner, db = await make_runner(tmp_path, k, ttl_seconds_after_finished=0)
        try:
            view = await runner.submit(
                job_spec(
                    py("import sys\nfor i in range(300): print('line', i)\nsys.exit(1)", retries=4)
                ),
                "a",
            )
            done = await runner.wait(view.id, 60)
            assert (done.state, done.reason, done.attempts) == ("FAILED", "EXIT_CODE", 5)
            recs = await lines(runner, view.id)
            assert [(r.attempt, r.text) for r in recs] == [
                (attempt, f"line {i}") for attempt in range(1, 6) for i in range(300)
            ]
            assert [r.seq for r in recs] == list(range(1, 1501))
            assert len(k.pod_pids(view.name, NS)) == 5
            await wait_until(lambda: k.job(view.name, NS) is None, what="the runner applies ttl 0")
            assert k.pods(NS, job=view.name) == []
            pod_deletes = [r for r in k.requests if r.method == "DELETE" and "/pods/" in r.path]
            assert len(pod_deletes) == 5, "each pod deleted by the runner once read"
            [create] = [r for r in k.requests if r.method == "POST"]
            assert create.body["spec"]["ttlSecondsAfterFinished"] == SAFETY_TTL_SECONDS
        finally:
            await stop_runner(runner, db)


async def test_backend_from_settings_reads_kubeconfig(
    tmp_path: Path, k8s: FakeKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": k8s.url}}],
                "users": [{"name": "me", "user": {"token": "s3cret"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    own = JobrunnerSettings(
        backend="kubernetes", namespace=NS, ttl_seconds_after_finished=60, kill_grace_seconds=2
    )
    backend = make_backend_from_app(own, tmp_path / "jobs")
    assert isinstance(backend, KubernetesBackend)
    assert (backend.namespace, backend.ttl, backend.grace) == (NS, 60, 2)
    db = Database("jobrunner", f"sqlite+aiosqlite:///{tmp_path / 'jr.db'}", MIGRATIONS)
    await db.start()
    runner = JobRunner(db.sessions, backend, tmp_path / "jobs", 4)
    await runner.start()
    try:
        view = await runner.submit(job_spec(py("print('via kubeconfig')")), "a")
        assert (await runner.wait(view.id, 30)).state == "SUCCEEDED"
        assert [r.text for r in await lines(runner, view.id)] == ["via kubeconfig"]
        assert any(
            r.headers.get("Authorization", r.headers.get("authorization")) == "Bearer s3cret"
            for r in k8s.requests
        )
    finally:
        await stop_runner(runner, db)


# ---- pieces ---------------------------------------------------------------------------------


def test_label_sanitizing() -> None:
    assert label_value("alice@example.com") == "alice_example.com"
    assert label_value("-x-") == "x" and label_value("") == ""
    long = label_value("v" * 100)
    assert len(long) <= 63 and long != label_value("v" * 99) and long[-1].isalnum()
    assert sanitize_labels({"job-name": "x", "a/b": "c d", "!!": "y"}) == {"a_b": "c_d"}


def test_cursor_skips_exactly_what_was_written(tmp_path: Path) -> None:
    """Many lines share one timestamp (one read from the pipe): a re-read skips by count."""
    path = tmp_path / "log"
    same = "2024-05-01T10:00:00.123456000Z"
    later = "2024-05-01T10:00:01.000000001Z"
    stream = [f"{same} a", f"{same} b", f"{same} c", f"{later} d"]
    first = LogCursor(path, 1)
    first.connect()
    for line in stream[:2]:
        first.feed(line.encode())
    first.close()
    attempt, stamp, ties = log_tail(path)
    assert (attempt, ties) == (1, 2) and stamp is not None
    again = LogCursor(path, attempt, stamp, ties)  # e.g. a new runner, reading from the start
    again.connect()
    for line in stream:
        again.feed(line.encode())
    again.connect()  # and a dropped connection, reading everything once more
    for line in stream:
        again.feed(line.encode())
    again.close()
    assert [(r.seq, r.text) for r in iter_records(path)] == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]


# ---- a real cluster, opt-in ------------------------------------------------------------------


@pytest.mark.kubeconfig
async def test_real_cluster_runs_a_tiny_job(tmp_path: Path) -> None:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("set KUBECONFIG to run this against a real cluster (opt-in)")
    namespace = os.environ.get("TRAINYARD_TEST_K8S_NAMESPACE", "default")
    own = JobrunnerSettings(
        backend="kubernetes",
        namespace=namespace,
        ttl_seconds_after_finished=600,
        kill_grace_seconds=5,
    )
    db = Database("jobrunner", f"sqlite+aiosqlite:///{tmp_path / 'jr.db'}", MIGRATIONS)
    await db.start()
    # No runner.start(): its orphan sweep would delete other trainyard Jobs in the namespace.
    runner = JobRunner(db.sessions, KubernetesBackend.from_settings(own), tmp_path / "jobs", 4)
    name = f"trainyard-test-{uuid.uuid4().hex[:8]}"
    view = await runner.submit(
        job_spec(
            {
                "name": name,
                "image": "busybox:1.36",
                "command": ["sh", "-c", "echo hello; echo oops >&2"],
            }
        ),
        "test",
    )
    try:
        done = await runner.wait(view.id, 300)
        assert (done.state, done.exit_code) == ("SUCCEEDED", 0), done.message
        assert sorted(r.text for r in await lines(runner, view.id)) == ["hello", "oops"]
    finally:
        await runner.delete(view.id)
        await runner.close()
        await db.close()
