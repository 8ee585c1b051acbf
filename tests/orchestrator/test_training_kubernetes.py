"""A training end to end with the job-runner on the Kubernetes backend: REST through Envoy to
the orchestrator, which submits the trainer to the job-runner, which runs it as a Job in the
Kubernetes API double (its pod a local process of this host's python). The trainer's config
(with its job token and the orchestrator's address) must reach the pod through the job's
Secret, and the trainer must call back with that token, for the model to end as it does."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.k8s_double import FakeKubernetes
from tests.support.platform import Platform, start_platform, unique_name
from tests.support.wait import eventually


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with FakeKubernetes(known_images=[]) as kube:
        p = start_platform(
            tmp_path_factory.mktemp("k8s-training"), jobrunner_backend="kubernetes", kube=kube
        )
        try:
            yield p
        finally:
            p.harness.close()


def _train(platform: Platform, kind: str, body: dict[str, Any]) -> str:
    resp = platform.train(kind, body)
    assert resp.status_code == 200, resp.text
    model_id: str = resp.json()["model_id"]
    return model_id


def test_a_trainer_gets_its_config_through_the_jobs_secret_and_calls_back(
    platform: Platform,
) -> None:
    kube = platform.kube
    assert kube is not None
    upload = platform.upload([("doc.bin", b"some text")])  # nothing NDB can index: it fails
    model_id = _train(
        platform,
        "ndb",
        {
            "model_name": unique_name(),
            "data": {"unsupervised_files": [{"location": "upload", "path": upload}]},
        },
    )
    status = platform.wait_final(model_id)
    # Only the trainer's own report says this: it read the config (the trainer
    # reports through the Reporter, which needs the token and address from it) and the
    # orchestrator took its callback. A trainer without its config would exit 1 unheard.
    assert status["status"] == "failed", status
    assert status["errors"] == [
        "nothing was indexed: none of the 1 file(s) held a usable document (see the warnings)"
    ]
    assert status["warnings"] == ["Unable to parse doc.bin. Unsupported filetype."]

    name = f"train-{model_id}"
    job = kube.job(name, platform.namespace)
    secret = kube.secret(f"{name}-config", platform.namespace)
    assert job is not None and secret is not None
    config = json.loads(base64.b64decode(secret["data"]["config.json"]))
    token = config["platform"]["job_token"]
    assert token and config["platform"]["orchestrator_address"]
    assert [ref["uid"] for ref in secret["metadata"]["ownerReferences"]] == [job["metadata"]["uid"]]
    # The pod spec carries only the reference; neither the Job nor its request holds the token.
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][1:] == ["-m", "trainyard.trainers.ndb"]
    assert [e for e in container["env"] if e["name"].startswith("TRAINYARD_CONFIG")] == [
        {
            "name": "TRAINYARD_CONFIG_JSON",
            "valueFrom": {"secretKeyRef": {"name": f"{name}-config", "key": "config.json"}},
        }
    ]
    job_posts = [r for r in kube.requests if r.method == "POST" and r.path.endswith("/jobs")]
    assert len(job_posts) == 1
    assert token not in json.dumps(job_posts[0].body) and token not in json.dumps(job)
    [pod] = [r for r in kube.kubelet.runtimes() if r.job_name == name]
    assert token not in json.dumps(pod.spec)

    resp = httpx.delete(
        f"{platform.http}/api/v2/model/{model_id}", headers=platform.headers(), timeout=30
    )
    assert resp.status_code == 200, resp.text
    eventually(
        lambda: (
            kube.secret(f"{name}-config", platform.namespace) is None
            and kube.job(name, platform.namespace) is None
        ),
        timeout=30,
        message="the deleted model's Job and config Secret are still there",
    )


def test_the_nlp_text_trainer_trains_in_a_pod_and_serves_predictions(platform: Platform) -> None:
    rows = ["text,label"] + [f"loved it {i},pos" for i in range(12)]
    rows += [f"hated it {i},neg" for i in range(12)]
    upload = platform.upload([("reviews.csv", ("\n".join(rows) + "\n").encode())])
    model_id = _train(
        platform,
        "nlp-text",
        {
            "model_name": unique_name("k8s-text"),
            "model_options": {
                "text_column": "text",
                "label_column": "label",
                "n_target_classes": 2,
            },
            "data": {"supervised_files": [{"location": "upload", "path": upload}]},
            "train_options": {"test_split": 0.25},
        },
    )
    status = platform.wait_final(model_id)
    assert status["status"] == "complete", status
    kube = platform.kube
    assert kube is not None
    job = kube.job(f"train-{model_id}", platform.namespace)
    assert job is not None
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][1:] == ["-m", "trainyard.trainers.nlp_text"]
    report = httpx.get(
        f"{platform.http}/api/v2/train/{model_id}/report", headers=platform.headers(), timeout=30
    )
    assert report.status_code == 200 and "macro_f1" in report.json(), report.text
    predicted = httpx.post(
        f"{platform.http}/api/v2/model/{model_id}/predict",
        headers=platform.headers(),
        json={"query": "loved it 99"},
        timeout=30,
    )
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["predictions"][0]["predicted_classes"][0][0] == "pos"
