"""The Kubernetes API server double, driven by the official kubernetes client."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.k8s_double import FakeKubernetes

T = TypeVar("T")
NS = "default"
PYTHON_IMAGE = "python:3.11"
REQUEST_TIMEOUT = (5, 15)


def wait_until(predicate: Callable[[], T | None], timeout: float, message: str) -> T:
    """Poll predicate until it returns something truthy; fail with message otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s: {message}")
        time.sleep(0.02)


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def make_job(
    name: str,
    code: str,
    *,
    args: list[str] | None = None,
    image: str = PYTHON_IMAGE,
    restart_policy: str = "Never",
    labels: dict[str, str] | None = None,
    env: list[client.V1EnvVar] | None = None,
    resources: client.V1ResourceRequirements | None = None,
    **spec: Any,
) -> client.V1Job:
    container = client.V1Container(
        name="main",
        image=image,
        command=[sys.executable, "-u", "-c", code],
        args=args,
        env=env,
        resources=resources,
    )
    return client.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1JobSpec(
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(restart_policy=restart_policy, containers=[container])
            ),
            **spec,
        ),
    )


def condition(job: client.V1Job, type_: str) -> client.V1JobCondition | None:
    for cond in job.status.conditions or []:
        if cond.type == type_ and cond.status == "True":
            return cond
    return None


def finished(job: client.V1Job) -> bool:
    return bool(condition(job, "Complete") or condition(job, "Failed"))


def raw_log(core: client.CoreV1Api, pod: str, **kwargs: Any) -> str:
    # kubernetes==36.0.3 turns text responses into the repr of bytes
    # (kubernetes-client/python#2596), so read the raw body.
    response = core.read_namespaced_pod_log(pod, NS, _preload_content=False, **kwargs)
    return str(response.data.decode())


def status_body(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body)
    return body


@pytest.fixture
def k8s() -> Iterator[FakeKubernetes]:
    with FakeKubernetes(known_images=[PYTHON_IMAGE]) as fake:
        yield fake


@pytest.fixture
def batch(k8s: FakeKubernetes) -> client.BatchV1Api:
    return client.BatchV1Api(k8s.api_client())


@pytest.fixture
def core(k8s: FakeKubernetes) -> client.CoreV1Api:
    return client.CoreV1Api(k8s.api_client())


def wait_finished(batch: client.BatchV1Api, name: str, timeout: float = 10) -> client.V1Job:
    """Watch the job (official Watch helper) until it has a terminal condition."""
    stream = watch.Watch()
    for event in stream.stream(
        batch.list_namespaced_job,
        NS,
        field_selector=f"metadata.name={name}",
        timeout_seconds=int(timeout),
    ):
        job: client.V1Job = event["object"]
        if event["type"] != "DELETED" and finished(job):
            stream.stop()
            return job
    pytest.fail(f"job {name} did not finish within {timeout}s")


def job_pods(core: client.CoreV1Api, job: str) -> list[client.V1Pod]:
    pods: list[client.V1Pod] = core.list_namespaced_pod(NS, label_selector=f"job-name={job}").items
    return pods


def running_pod(core: client.CoreV1Api, job: str) -> client.V1Pod:
    return wait_until(
        lambda: next((p for p in job_pods(core, job) if p.status.phase == "Running"), None),
        10,
        f"a Running pod for job {job}",
    )


def test_job_completes_with_real_output(
    k8s: FakeKubernetes, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    created = batch.create_namespaced_job(NS, make_job("hello", "print('hi')"))
    uid = created.metadata.uid
    assert re.fullmatch(r"[0-9a-f-]{36}", uid)
    assert int(created.metadata.resource_version) > 0
    assert created.metadata.creation_timestamp is not None
    assert created.spec.backoff_limit == 6
    assert created.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    assert created.spec.template.metadata.labels["job-name"] == "hello"

    job = wait_finished(batch, "hello")
    complete = condition(job, "Complete")
    assert complete is not None and complete.reason == "CompletionsReached"
    assert condition(job, "SuccessCriteriaMet") is not None
    assert job.status.succeeded == 1 and not job.status.active
    assert job.status.start_time is not None and job.status.completion_time is not None

    selectors = ("job-name=hello", "batch.kubernetes.io/job-name=hello", f"controller-uid={uid}")
    for selector in selectors:
        pods = core.list_namespaced_pod(NS, label_selector=selector).items
        assert len(pods) == 1, selector
    pod = pods[0]
    assert re.fullmatch(r"hello-[a-z0-9]{5}", pod.metadata.name)
    assert pod.metadata.owner_references[0].uid == uid
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert core.read_namespaced_pod(pod.metadata.name, NS).metadata.uid == pod.metadata.uid
    assert raw_log(core, pod.metadata.name) == "hi\n"
    stamped = raw_log(core, pod.metadata.name, timestamps=True)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z hi\n", stamped)


def test_failing_job_retries_until_backoff_limit(
    batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    code = "import sys; print('boom', file=sys.stderr); sys.exit(3)"
    batch.create_namespaced_job(NS, make_job("fails", code, backoff_limit=1))

    job = wait_finished(batch, "fails")
    failed = condition(job, "Failed")
    assert failed is not None
    assert failed.reason == "BackoffLimitExceeded"
    assert failed.message == "Job has reached the specified backoff limit"
    assert condition(job, "FailureTarget") is not None
    assert job.status.failed == 2 and not job.status.succeeded
    pods = job_pods(core, "fails")
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Failed"
        terminated = pod.status.container_statuses[0].state.terminated
        assert (terminated.exit_code, terminated.reason) == (3, "Error")
        assert raw_log(core, pod.metadata.name) == "boom\n"


def test_active_deadline_kills_the_pod(
    k8s: FakeKubernetes, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    batch.create_namespaced_job(
        NS, make_job("slow", "import time; time.sleep(60)", active_deadline_seconds=1)
    )
    running_pod(core, "slow")
    [pid] = k8s.pod_pids("slow")

    job = wait_finished(batch, "slow")
    failed = condition(job, "Failed")
    assert failed is not None and failed.reason == "DeadlineExceeded"
    assert failed.message == "Job was active longer than specified deadline"
    assert job.status.failed == 1 and not job.status.active
    assert pid_gone(pid)
    wait_until(lambda: not job_pods(core, "slow"), 5, "the deadline-killed pod is deleted")


def test_background_delete_kills_running_process(
    k8s: FakeKubernetes, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    batch.create_namespaced_job(NS, make_job("sleeper", "import time; time.sleep(60)"))
    pod = running_pod(core, "sleeper")
    assert pod.status.container_statuses[0].state.running is not None
    [pid] = k8s.pod_pids("sleeper")
    assert not pid_gone(pid)

    status = batch.delete_namespaced_job("sleeper", NS, propagation_policy="Background")
    assert status.kind == "Status" and status.status == "Success"
    assert status.details.name == "sleeper" and status.details.kind == "jobs"
    [delete] = [r for r in k8s.requests if r.method == "DELETE"]
    assert delete.query["propagationPolicy"] == ["Background"]

    wait_until(lambda: pid_gone(pid), 5, f"pid {pid} is killed and reaped")
    wait_until(lambda: not job_pods(core, "sleeper"), 5, "the job's pods are deleted")
    with pytest.raises(ApiException) as error:
        core.read_namespaced_pod_log(pod.metadata.name, NS)
    assert error.value.status == 404


def test_foreground_delete_waits_for_pods(
    k8s: FakeKubernetes, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    batch.create_namespaced_job(NS, make_job("fg", "import time; time.sleep(60)"))
    running_pod(core, "fg")
    [pid] = k8s.pod_pids("fg")

    # The server answers with the Job itself (still present, being deleted); the
    # client's declared return type is V1Status, so read the raw body.
    response = batch.delete_namespaced_job(
        "fg",
        NS,
        body=client.V1DeleteOptions(propagation_policy="Foreground"),
        _preload_content=False,
    )
    job = json.loads(response.data)
    assert job["kind"] == "Job"
    assert job["metadata"]["deletionTimestamp"]
    assert job["metadata"]["finalizers"] == ["foregroundDeletion"]

    wait_until(lambda: pid_gone(pid), 5, "the pod process is killed")

    def job_gone() -> bool:
        try:
            batch.read_namespaced_job("fg", NS)
        except ApiException as error:
            return bool(error.status == 404)
        return False

    wait_until(job_gone, 5, "the job disappears once its pods are gone")
    assert not job_pods(core, "fg")


def test_default_delete_orphans_pods_with_warning(
    k8s: FakeKubernetes, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    batch.create_namespaced_job(NS, make_job("orphan", "import time; time.sleep(60)"))
    running_pod(core, "orphan")
    [pid] = k8s.pod_pids("orphan")

    response = batch.delete_namespaced_job("orphan", NS, _preload_content=False)
    assert "child pods are preserved by default" in response.headers["Warning"]
    assert json.loads(response.data)["metadata"]["finalizers"] == ["orphan"]

    wait_until(
        lambda: not batch.list_namespaced_job(NS).items, 5, "the job is removed after orphaning"
    )
    [pod] = job_pods(core, "orphan")
    assert pod.metadata.owner_references is None
    assert pod.status.phase == "Running" and not pid_gone(pid)
    core.delete_namespaced_pod(pod.metadata.name, NS, grace_period_seconds=0)
    wait_until(lambda: pid_gone(pid), 5, "deleting the orphan pod kills its process")


def test_unknown_image_backs_off_without_running(
    k8s: FakeKubernetes, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    batch.create_namespaced_job(NS, make_job("badimg", "print(1)", image="ghcr.io/acme/nope:1"))

    def waiting_reason() -> str | None:
        pods = job_pods(core, "badimg")
        statuses = pods[0].status.container_statuses if pods else None
        waiting = statuses[0].state.waiting if statuses else None
        return waiting.reason if waiting else None

    wait_until(lambda: waiting_reason() == "ErrImagePull", 5, "ErrImagePull")
    wait_until(lambda: waiting_reason() == "ImagePullBackOff", 5, "ImagePullBackOff")
    [pod] = job_pods(core, "badimg")
    assert pod.status.phase == "Pending"
    assert k8s.pod_pids("badimg") == []
    job = batch.read_namespaced_job("badimg", NS)
    assert job.status.active == 1 and not finished(job)
    with pytest.raises(ApiException) as error:
        core.read_namespaced_pod_log(pod.metadata.name, NS)
    assert error.value.status == 400
    message = status_body(error.value)["message"]
    assert message.endswith("is waiting to start: trying and failing to pull image")


def test_follow_logs_streams_lines_as_written(
    k8s: FakeKubernetes, batch: client.BatchV1Api, core: client.CoreV1Api, tmp_path: Path
) -> None:
    gate = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "print('first')\n"
        "while not os.path.exists(sys.argv[1]):\n"
        "    time.sleep(0.01)\n"
        "print('second')\n"
    )
    batch.create_namespaced_job(NS, make_job("chatty", code, args=[str(gate)]))
    pod = running_pod(core, "chatty")

    lines = watch.Watch().stream(
        core.read_namespaced_pod_log,
        pod.metadata.name,
        NS,
        container="main",
        _request_timeout=REQUEST_TIMEOUT,
    )
    assert next(lines) == "first"
    # The process is still blocked on the gate: "first" came while it runs.
    assert k8s.running_pids() == k8s.pod_pids("chatty")
    gate.touch()
    assert list(lines) == ["second"]
    assert raw_log(core, pod.metadata.name, tail_lines=1) == "second\n"


def test_missing_job_is_a_not_found_status(batch: client.BatchV1Api) -> None:
    with pytest.raises(ApiException) as error:
        batch.read_namespaced_job("nope", NS)
    assert error.value.status == 404
    assert status_body(error.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'jobs.batch "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "group": "batch", "kind": "jobs"},
        "code": 404,
    }


def test_duplicate_create_conflicts(batch: client.BatchV1Api) -> None:
    batch.create_namespaced_job(NS, make_job("twice", "print(1)"))
    with pytest.raises(ApiException) as error:
        batch.create_namespaced_job(NS, make_job("twice", "print(2)"))
    assert error.value.status == 409
    body = status_body(error.value)
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'jobs.batch "twice" already exists'


def test_invalid_job_is_rejected(batch: client.BatchV1Api) -> None:
    with pytest.raises(ApiException) as error:
        batch.create_namespaced_job(NS, make_job("always", "print(1)", restart_policy="Always"))
    assert error.value.status == 422
    body = status_body(error.value)
    assert body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "spec.template.spec.restartPolicy"


def test_watch_filters_by_label_and_resumes(k8s: FakeKubernetes, batch: client.BatchV1Api) -> None:
    batch.create_namespaced_job(NS, make_job("a", "print(1)", labels={"team": "x"}))
    batch.create_namespaced_job(NS, make_job("b", "print(1)", labels={"team": "y"}))
    listed = batch.list_namespaced_job(NS, label_selector="team=x")
    assert [job.metadata.name for job in listed.items] == ["a"]
    after = listed.metadata.resource_version

    events = list(
        watch.Watch().stream(
            batch.list_namespaced_job, NS, label_selector="team in (x)", timeout_seconds=1
        )
    )
    assert events[0]["type"] == "ADDED"
    assert {event["object"].metadata.name for event in events} == {"a"}

    batch.create_namespaced_job(NS, make_job("c", "print(1)", labels={"team": "x"}))
    resumed = list(
        watch.Watch().stream(
            batch.list_namespaced_job,
            NS,
            label_selector="team=x",
            resource_version=after,
            timeout_seconds=1,
        )
    )
    # Only changes after the listed resourceVersion, only jobs labelled team=x.
    assert all(int(e["object"].metadata.resource_version) > int(after) for e in resumed)
    assert {e["object"].metadata.name for e in resumed} <= {"a", "c"}
    assert next(e["type"] for e in resumed if e["object"].metadata.name == "c") == "ADDED"


def test_watch_from_compacted_version_is_gone() -> None:
    with FakeKubernetes(watch_history=5) as k8s:
        batch = client.BatchV1Api(k8s.api_client())
        start = batch.list_namespaced_job(NS).metadata.resource_version
        for name in ("one", "two", "three"):
            batch.create_namespaced_job(NS, make_job(name, "print(1)"))
        wait_until(
            lambda: k8s.resource_version > int(start) + 10, 5, "more changes than history keeps"
        )
        with pytest.raises(ApiException) as error:
            list(
                watch.Watch().stream(
                    batch.list_namespaced_job, NS, resource_version=start, timeout_seconds=1
                )
            )
        assert error.value.status == 410
        assert "Expired" in str(error.value.reason)


def test_env_args_and_secret_refs(
    k8s: FakeKubernetes, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    k8s.add_secret(NS, "creds", {"token": "s3cret"})
    env = [
        client.V1EnvVar(name="GREETING", value="hello"),
        client.V1EnvVar(name="MESSAGE", value="$(GREETING) world"),
        client.V1EnvVar(
            name="TOKEN",
            value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name="creds", key="token")
            ),
        ),
        client.V1EnvVar(
            name="POD",
            value_from=client.V1EnvVarSource(
                field_ref=client.V1ObjectFieldSelector(field_path="metadata.name")
            ),
        ),
    ]
    code = (
        "import os, sys\n"
        "print(os.environ['MESSAGE'], os.environ['TOKEN'], sys.argv[1])\n"
        "print(os.environ['POD'] == os.environ['HOSTNAME'], 'HOME' in os.environ)\n"
        "print(sorted(k for k in os.environ if k.startswith('PYTEST')))\n"
    )
    batch.create_namespaced_job(NS, make_job("envy", code, args=["$(GREETING)"], env=env))
    wait_finished(batch, "envy")
    [pod] = job_pods(core, "envy")
    assert raw_log(core, pod.metadata.name) == "hello world s3cret hello\nTrue True\n[]\n"


def test_memory_limit_reports_oom_killed(batch: client.BatchV1Api, core: client.CoreV1Api) -> None:
    resources = client.V1ResourceRequirements(limits={"memory": "512Mi"})
    code = "blob = bytearray(4 * 1024 ** 3)"
    batch.create_namespaced_job(NS, make_job("hog", code, backoff_limit=0, resources=resources))
    job = wait_finished(batch, "hog")
    assert condition(job, "Failed") is not None
    [pod] = job_pods(core, "hog")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, "OOMKilled")


def test_on_failure_restarts_in_place(batch: client.BatchV1Api, core: client.CoreV1Api) -> None:
    code = "import sys; print('try'); sys.exit(1)"
    batch.create_namespaced_job(
        NS, make_job("flaky", code, restart_policy="OnFailure", backoff_limit=2)
    )
    job = wait_finished(batch, "flaky")
    failed = condition(job, "Failed")
    assert failed is not None and failed.reason == "BackoffLimitExceeded"
    # The one pod was restarted in place, then deleted when the job failed.
    wait_until(lambda: not job_pods(core, "flaky"), 5, "the restarted pod is deleted")


# ---- Secrets ----------------------------------------------------------------------------------


def test_secrets_create_get_list_delete_as_the_api_server(
    k8s: FakeKubernetes, core: client.CoreV1Api
) -> None:
    body = {
        "metadata": {"name": "cfg", "labels": {"app": "a"}},
        "data": {"raw": base64.b64encode(b"\x00\xff").decode(), "both": "b2xk"},
        "stringData": {"both": "new", "text": "héllo"},
    }
    created = core.create_namespaced_secret(NS, body, _preload_content=False)
    secret = json.loads(created.data)
    # stringData is write-only: merged into data (its keys win), base64, never returned.
    assert "stringData" not in secret
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == {
        "raw": b"\x00\xff",
        "both": b"new",
        "text": "héllo".encode(),
    }
    assert (secret["kind"], secret["apiVersion"], secret["type"]) == ("Secret", "v1", "Opaque")
    assert secret["metadata"]["uid"] and secret["metadata"]["resourceVersion"]
    assert core.read_namespaced_secret("cfg", NS).data == secret["data"]
    core.create_namespaced_secret(NS, {"metadata": {"name": "other"}})
    listed = core.list_namespaced_secret(NS, label_selector="app=a")
    assert [s.metadata.name for s in listed.items] == ["cfg"]
    assert listed.kind == "SecretList"

    with pytest.raises(ApiException) as conflict:
        core.create_namespaced_secret(NS, {"metadata": {"name": "cfg"}})
    assert conflict.value.status == 409
    assert status_body(conflict.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'secrets "cfg" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "cfg", "kind": "secrets"},
        "code": 409,
    }
    with pytest.raises(ApiException) as stale:
        core.delete_namespaced_secret(
            "cfg", NS, body=client.V1DeleteOptions(preconditions={"uid": "not-it"})
        )
    assert stale.value.status == 409
    assert "Precondition failed: UID in precondition: not-it" in status_body(stale.value)["message"]
    deleted = json.loads(core.delete_namespaced_secret("cfg", NS, _preload_content=False).data)
    assert deleted["status"] == "Success"
    assert deleted["details"] == {
        "name": "cfg",
        "kind": "secrets",
        "uid": secret["metadata"]["uid"],
    }
    for call in (core.read_namespaced_secret, core.delete_namespaced_secret):
        with pytest.raises(ApiException) as missing:
            call("cfg", NS)
        assert missing.value.status == 404
        assert status_body(missing.value)["message"] == 'secrets "cfg" not found'


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            {"metadata": {"name": "b"}, "data": {"k": "no!"}},
            400,
            'Secret in version "v1" cannot be handled as a Secret: illegal base64 data at '
            "input byte 2",
        ),
        (
            {"metadata": {"name": "b"}, "stringData": {"a key": "v"}},
            422,
            'Secret "b" is invalid: data[a key]: Invalid value: "a key": a valid config key',
        ),
        (
            {"metadata": {"name": "b"}, "stringData": {"k": "x" * (1024 * 1024 + 1)}},
            422,
            'Secret "b" is invalid: data: Too long: may not be more than 1048576 bytes',
        ),
        (
            {"metadata": {"name": "B_"}},
            422,
            'Secret "B_" is invalid: metadata.name: Invalid value: "B_": a lowercase RFC 1123',
        ),
        (
            {"metadata": {"name": "b", "ownerReferences": [{"kind": "Job", "name": "j"}]}},
            422,
            'metadata.ownerReferences.apiVersion: Invalid value: "": version must not be empty',
        ),
    ],
)
def test_a_bad_secret_is_refused(
    core: client.CoreV1Api, body: dict[str, Any], code: int, message: str
) -> None:
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_secret(NS, body)
    assert refused.value.status == code
    assert message in status_body(refused.value)["message"]


def test_secrets_owned_by_a_job_are_collected_with_it(
    k8s: FakeKubernetes, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    owners = {}
    for name in ("gone", "orphaned"):
        job = batch.create_namespaced_job(NS, make_job(name, "pass"))
        owners[name] = job.metadata.uid
        core.create_namespaced_secret(
            NS,
            {"metadata": {"name": f"{name}-config"}, "immutable": True, "stringData": {"k": "v"}},
        )
        ref = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job.metadata.uid}
        patched = core.patch_namespaced_secret(
            f"{name}-config",
            NS,
            {"metadata": {"ownerReferences": [ref]}},
            _content_type="application/merge-patch+json",
        )
        assert patched.metadata.owner_references[0].uid == job.metadata.uid
    # The client's default for a dict body is a JSON patch, which the double does not model.
    with pytest.raises(ApiException) as unsupported:
        core.patch_namespaced_secret("gone-config", NS, {"metadata": {"labels": {"a": "b"}}})
    assert unsupported.value.status == 415
    # An immutable Secret's data stays; its metadata may change.
    with pytest.raises(ApiException) as immutable:
        core.patch_namespaced_secret(
            "gone-config",
            NS,
            {"stringData": {"k": "w"}},
            _content_type="application/merge-patch+json",
        )
    assert immutable.value.status == 422
    assert (
        "data: Forbidden: field is immutable when `immutable` is set"
        in status_body(immutable.value)["message"]
    )

    batch.delete_namespaced_job("gone", NS, propagation_policy="Background")
    batch.delete_namespaced_job("orphaned", NS, propagation_policy="Orphan")
    wait_until(lambda: k8s.secret("gone-config", NS) is None, 10, "the owned Secret is collected")
    wait_until(lambda: k8s.job("orphaned", NS) is None, 10, "the orphaning delete finishes")
    orphan = k8s.secret("orphaned-config", NS)
    assert orphan is not None and "ownerReferences" not in orphan["metadata"]


def test_secret_key_refs_wait_for_the_secret_and_its_key(
    k8s: FakeKubernetes, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    def ref(secret: str, key: str, optional: bool | None = None) -> client.V1EnvVarSource:
        return client.V1EnvVarSource(
            secret_key_ref=client.V1SecretKeySelector(name=secret, key=key, optional=optional)
        )

    env = [
        client.V1EnvVar(name="TOKEN", value_from=ref("later", "token")),
        client.V1EnvVar(name="MAYBE", value_from=ref("absent", "x", optional=True)),
        client.V1EnvVar(name="MAYBE_KEY", value_from=ref("later", "nokey", optional=True)),
    ]
    code = "import os; print(os.environ['TOKEN'], 'MAYBE' in os.environ, 'MAYBE_KEY' in os.environ)"
    batch.create_namespaced_job(NS, make_job("waits", code, env=env))

    def waiting_message() -> str | None:
        for pod in job_pods(core, "waits"):
            for status in pod.status.container_statuses or []:
                waiting = status.state.waiting
                if waiting and waiting.reason == "CreateContainerConfigError":
                    return str(waiting.message)
        return None

    assert wait_until(waiting_message, 10, "the pod waits for its Secret") == (
        'secret "later" not found'
    )
    core.create_namespaced_secret(NS, {"metadata": {"name": "later"}, "stringData": {"t": "1"}})
    wait_until(
        lambda: waiting_message() == "couldn't find key token in Secret default/later",
        10,
        "the pod waits for the key",
    )
    core.delete_namespaced_secret("later", NS)
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "later"}, "stringData": {"token": "s3cret"}}
    )
    job = wait_finished(batch, "waits")
    assert condition(job, "Complete") is not None
    [pod] = job_pods(core, "waits")
    assert raw_log(core, pod.metadata.name) == "s3cret False False\n"


def test_foreground_deletion_takes_owned_secrets_and_watches_see_secrets(
    k8s: FakeKubernetes, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    start = core.list_namespaced_secret(NS).metadata.resource_version
    job = batch.create_namespaced_job(NS, make_job("fg", "import time; time.sleep(30)"))
    ref = {"apiVersion": "batch/v1", "kind": "Job", "name": "fg", "uid": job.metadata.uid}
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "fg-config", "ownerReferences": [ref]}, "stringData": {"k": "v"}}
    )
    batch.delete_namespaced_job("fg", NS, propagation_policy="Foreground")
    wait_until(lambda: k8s.secret("fg-config", NS) is None, 10, "foreground deletes dependents")
    wait_until(lambda: k8s.job("fg", NS) is None, 15, "the Job goes once its pods are gone")
    events = [
        (event["type"], event["object"].metadata.name)
        for event in watch.Watch().stream(
            core.list_namespaced_secret, NS, resource_version=start, timeout_seconds=1
        )
    ]
    assert events == [("ADDED", "fg-config"), ("DELETED", "fg-config")]
