"""The Kubernetes backend's pure parts on plain dicts: Workload -> Job manifest, and Job / Pod
objects -> outcome. No server: the objects are shaped as the API returns them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainyard.jobrunner.backends.base import Workload
from trainyard.jobrunner.backends.kubernetes.manifests import (
    JOB_ID_LABEL,
    MANAGED_BY,
    config_secret_manifest,
    cpu_quantity,
    job_manifest,
    owner_patch,
    owner_uids,
)
from trainyard.jobrunner.backends.kubernetes.status import (
    attempt_order,
    container_started,
    controlled_by,
    image_not_found,
    image_pull_failure,
    job_outcome,
    job_terminal,
    pod_finished,
)

JSON = dict[str, Any]


def workload(**changes: Any) -> Workload:
    values: dict[str, Any] = {
        "job_id": "j1",
        "name": "train-1",
        "image": "python:3.11",
        "command": ["python", "-c", "print('$(HOME) $x')"],
        "args": [],
        "env": {"A": "$(B)"},
        "cores": 0,
        "memory_mb": 0,
        "deadline_seconds": None,
        "retries": 0,
        "labels": {},
        "log_path": Path("/nonexistent/log"),
    }
    values.update(changes)
    return Workload(**values)


def job(condition: str | None = None, reason: str = "", **status: Any) -> JSON:
    conditions = [{"type": "SuccessCriteriaMet", "status": "True"}]
    if condition:
        conditions.append({"type": condition, "status": "True", "reason": reason, "message": "m"})
    return {
        "metadata": {"name": "train-1", "uid": "u1"},
        "spec": {"activeDeadlineSeconds": 5},
        "status": {"conditions": conditions, **status},
    }


def pod(state: JSON, *, created: str = "2024-01-01T00:00:00Z", phase: str = "Running") -> JSON:
    return {
        "metadata": {"name": "p", "uid": "pu", "creationTimestamp": created, "labels": {}},
        "status": {"phase": phase, "containerStatuses": [{"name": "main", "state": state}]},
    }


def terminated(code: int, reason: str = "Error", message: str = "") -> JSON:
    detail: JSON = {"exitCode": code, "reason": reason, "startedAt": "2024-01-01T00:00:01Z"}
    if message:
        detail["message"] = message
    return {"terminated": detail}


# ---- manifests --------------------------------------------------------------------------------


def test_manifest_escapes_expansion_and_sets_limits() -> None:
    manifest = job_manifest(
        workload(cores=1.5, memory_mb=256, deadline_seconds=0.2, retries=3),
        grace_seconds=2.5,
        ttl_seconds=None,
    )
    spec = manifest["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (3, 1)
    assert "ttlSecondsAfterFinished" not in spec
    pod_spec = spec["template"]["spec"]
    assert pod_spec["terminationGracePeriodSeconds"] == 3
    [container] = pod_spec["containers"]
    assert container["command"] == ["python", "-c", "print('$$(HOME) $$x')"]
    assert "args" not in container
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["A"] == "$$(B)" and env["TRAINYARD_JOB_ID"] == "j1"
    assert container["resources"]["limits"] == {"cpu": "1500m", "memory": "256Mi"}
    assert manifest["metadata"]["labels"] == {MANAGED_BY: "trainyard", JOB_ID_LABEL: "j1"}


def test_manifest_without_resources_or_command() -> None:
    manifest = job_manifest(workload(command=[], args=["x"]), grace_seconds=0, ttl_seconds=60)
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    assert "command" not in container and container["args"] == ["x"]
    assert "resources" not in container
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 60


def test_inline_config_goes_into_a_secret_the_pod_only_references() -> None:
    config = '{"platform": {"job_token": "tok-$(HOME)"}, "epochs": 3}'
    wl = workload(config_json=config, env={"TRAINYARD_CONFIG_JSON": "{}", "A": "1"})
    secret = config_secret_manifest(wl)
    assert secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "train-1-config",
            "labels": {MANAGED_BY: "trainyard", JOB_ID_LABEL: "j1"},
        },
        "type": "Opaque",
        "immutable": True,
        "stringData": {"config.json": config},  # verbatim: no $(VAR) expansion in Secrets
    }
    manifest = job_manifest(wl, grace_seconds=0, ttl_seconds=None)
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    refs = [e for e in container["env"] if e["name"] == "TRAINYARD_CONFIG_JSON"]
    assert refs == [
        {
            "name": "TRAINYARD_CONFIG_JSON",
            "valueFrom": {"secretKeyRef": {"name": "train-1-config", "key": "config.json"}},
        }
    ], "one reference, and the workload's own env cannot replace it"
    assert "tok" not in json.dumps(manifest), "the Job holds no part of the config"
    assert not any(e["name"] == "TRAINYARD_CONFIG_URI" for e in container["env"])


def test_config_uri_is_a_plain_value_and_no_config_no_secret() -> None:
    wl = workload(config_uri="s3://bucket/c$x.json")
    assert config_secret_manifest(wl) is None
    [container] = job_manifest(wl, grace_seconds=0, ttl_seconds=None)["spec"]["template"]["spec"][
        "containers"
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["TRAINYARD_CONFIG_URI"] == {
        "name": "TRAINYARD_CONFIG_URI",
        "value": "s3://bucket/c$$x.json",
    }
    assert "TRAINYARD_CONFIG_JSON" not in env
    bare = job_manifest(workload(), grace_seconds=0, ttl_seconds=None)
    names = {e["name"] for e in bare["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not names & {"TRAINYARD_CONFIG_JSON", "TRAINYARD_CONFIG_URI"}


def test_owner_patch_and_owner_uids() -> None:
    created = {"metadata": {"name": "train-1", "uid": "u1", "namespace": "ns"}}
    patch = owner_patch(created)
    assert patch == {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": "train-1", "uid": "u1"}
            ]
        }
    }
    assert owner_uids(patch) == {"u1"}
    assert owner_uids({"metadata": {}}) == set()
    other = {"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "uid": "r"}, "junk"]}}
    assert owner_uids(other) == set()


@pytest.mark.parametrize(("cores", "quantity"), [(1, "1"), (0.25, "250m"), (0.0001, "1m")])
def test_cpu_quantity(cores: float, quantity: str) -> None:
    assert cpu_quantity(cores) == quantity


# ---- status -----------------------------------------------------------------------------------


def test_terminal_only_on_complete_or_failed() -> None:
    assert job_terminal(None) is None and job_terminal(job()) is None
    assert job_terminal(job("Failed", "BackoffLimitExceeded")) == (
        "Failed",
        "BackoffLimitExceeded",
        "m",
    )
    with pytest.raises(ValueError):
        job_outcome(job(), [], namespace="ns", name="n", deadline_seconds=None, memory_mb=0)


def test_success_counts_attempts_from_the_job_status() -> None:
    outcome = job_outcome(
        job("Complete", "CompletionsReached", succeeded=1, failed=2),
        [pod(terminated(0, "Completed"), phase="Succeeded")],
        namespace="ns",
        name="train-1",
        deadline_seconds=None,
        memory_mb=0,
    )
    assert (outcome.state, outcome.exit_code, outcome.attempts) == ("SUCCEEDED", 0, 3)
    assert outcome.details == {
        "namespace": "ns",
        "job_name": "train-1",
        "job_reason": "CompletionsReached",
    }


def test_deadline_uses_the_workload_deadline_or_the_spec() -> None:
    args: JSON = {"namespace": "ns", "name": "n", "memory_mb": 0}
    failed = job("Failed", "DeadlineExceeded", failed=1)
    assert job_outcome(failed, [None], deadline_seconds=2.5, **args).message == (
        "ran past its deadline of 2.5s"
    )
    outcome = job_outcome(failed, [None], deadline_seconds=None, **args)
    assert (outcome.reason, outcome.message) == ("DEADLINE_EXCEEDED", "ran past its deadline of 5s")


def test_oom_killed_and_exit_codes_read_the_last_terminated_attempt() -> None:
    args: JSON = {"namespace": "ns", "name": "n", "deadline_seconds": None}
    failed = job("Failed", "BackoffLimitExceeded", failed=2)
    first, oom = pod(terminated(1)), pod(terminated(137, "OOMKilled"))
    outcome = job_outcome(failed, [first, oom], memory_mb=300, **args)
    assert (outcome.reason, outcome.exit_code, outcome.message) == (
        "OOM_KILLED",
        137,
        "exceeded its memory limit of 300 MiB",
    )
    outcome = job_outcome(failed, [oom, first, None], memory_mb=0, **args)
    assert (outcome.reason, outcome.exit_code, outcome.attempts) == ("EXIT_CODE", 1, 3)
    start_error = pod(terminated(128, "StartError", "exec: not found\n"))
    message = job_outcome(failed, [start_error], memory_mb=0, **args).message
    assert message == "exited with code 128 (StartError: exec: not found)"
    no_pods = job_outcome(failed, [], memory_mb=0, **args)
    assert (no_pods.exit_code, no_pods.message) == (
        None,
        "the Kubernetes Job failed: BackoffLimitExceeded: m",
    )


def test_image_pull_errors_are_image_not_found() -> None:
    waiting = pod({"waiting": {"reason": "ImagePullBackOff", "message": "back-off"}})
    assert image_pull_failure(waiting) == ("ImagePullBackOff", "back-off")
    assert image_pull_failure(pod({"waiting": {"reason": "ContainerCreating"}})) is None
    assert image_pull_failure(None) is None
    outcome = image_not_found("ghcr.io/x:1", "ErrImagePull", "not found")
    assert (outcome.state, outcome.reason, outcome.details) == (
        "FAILED",
        "IMAGE_NOT_FOUND",
        {"image": "ghcr.io/x:1"},
    )


def test_pod_states() -> None:
    running = pod({"running": {"startedAt": "2024-01-01T00:00:01Z"}})
    assert container_started(running) and not pod_finished(running)
    assert not container_started(pod({"waiting": {"reason": "ContainerCreating"}}))
    assert pod_finished(pod({}, phase="Failed")) and pod_finished(pod(terminated(0)))
    later = pod(terminated(0), created="2024-01-01T00:00:05Z")
    assert sorted([later, running], key=attempt_order) == [running, later]
    mine = {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "u1"}}}
    assert controlled_by(mine, "u1") and not controlled_by(mine, "u2")
    assert controlled_by({"metadata": {}}, "u2")
