"""A root job-runner runs the trainers as `nobody`, which owns only its job directory: nlp-text
trains to `complete` through the API all the same, reading its upload and writing its model
through the orchestrator (it can do neither itself), and a workload of that job-runner cannot
read the platform's secret, the upload store or another user's upload, nor write the model
store (a probe pipeline, run as nobody too, says so from inside)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.orchestrator.test_training_e2e import _text_csv
from tests.support.platform import Platform, as_nobody, start_platform, unique_name
from tests.support.wait import eventually
from trainyard.jobrunner.settings import Pipeline
from trainyard.runtime.settings import ensure_local_secret

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="workload users need a root job-runner")

PROBE = (
    "echo uid=$(id -u)\n"
    'cat "$DATA/auth-secret" 2>&1\n'
    'ls "$DATA/uploads" 2>&1\n'
    'cat "$TARGET" 2>&1\n'
    'touch "$DATA/artifacts/planted" 2>&1\n'
    'ls "$DATA/artifacts/models" 2>&1\n'
    "echo probe-done\n"
)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data, how = as_nobody(tmp_path_factory.mktemp("nobody"))
    if not how:
        pytest.skip("no interpreter the nobody user can run")
    ensure_local_secret(data / "auth-secret")
    how["jobrunner_settings"]["pipelines"] = {"probe": Pipeline(command=["/bin/sh", "-c", PROBE])}
    p = start_platform(data, **how)
    try:
        yield p
    finally:
        p.harness.close()


def test_nlp_text_trains_as_nobody_through_the_api(platform: Platform) -> None:
    upload = platform.upload([("reviews.csv", _text_csv())])
    started = time.monotonic()
    resp = platform.train(
        "nlp-text",
        {
            "model_name": unique_name("nobody"),
            "model_options": {
                "text_column": "text",
                "label_column": "label",
                "n_target_classes": 2,
            },
            "data": {"supervised_files": [{"location": "upload", "path": upload}]},
            "train_options": {"test_split": 0.25},
        },
    )
    assert resp.status_code == 200, resp.text
    model_id = resp.json()["model_id"]
    status = platform.wait_final(model_id)
    assert status["status"] == "complete", (status, time.monotonic() - started)

    # It ran as nobody: its work directory is nobody's.
    registry = platform.harness.servers["orchestrator"].app.state["registry"]  # type: ignore[union-attr]
    model = platform.harness.loop.run(registry.get(model_id))
    work = platform.data / "jobs" / str(model.job_id) / "work"
    assert work.stat().st_uid == NOBODY, work
    assert model.status == "complete"
    predicted = httpx.post(
        f"{platform.http}/api/v2/model/{model_id}/predict",
        headers=platform.headers(),
        json={"query": "a great film 7", "top_k": 1},
        timeout=60,
    )
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["predictions"][0]["predicted_classes"][0][0] == "pos"


def test_a_workload_reads_no_secret_nor_upload_and_writes_no_model(platform: Platform) -> None:
    platform.upload([("bob-secret.csv", b"text,label\nbob's words,x\n")], user="bob")
    bobs_file = next((platform.data / "uploads").rglob("bob-secret.csv"))
    auth = platform.headers("alice")
    resp = httpx.post(
        f"{platform.http}/training-jobs?pipeline=probe",
        headers=auth,
        json={"DATA": str(platform.data), "TARGET": str(bobs_file)},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    name = resp.json()

    def ended() -> bool:
        jobs = httpx.get(f"{platform.http}/training-jobs", headers=auth, timeout=30).json()
        return any(j["name"] == name and j["status"] == "Succeeded" for j in jobs)

    eventually(ended, timeout=60, message="the probe never succeeded")
    out = httpx.get(f"{platform.http}/training-jobs/{name}", headers=auth, timeout=30).json()
    data = platform.data
    assert out.splitlines()[0] == f"uid={NOBODY}", out
    assert "probe-done" in out, out
    assert (data / "auth-secret").read_text().strip() not in out
    assert f"cat: {data}/auth-secret: Permission denied" in out, out
    assert f"ls: cannot open directory '{data}/uploads': Permission denied" in out, out
    assert f"cat: {bobs_file}: Permission denied" in out, out
    assert "bob's words" not in out
    assert f"touch: cannot touch '{data}/artifacts/planted': Permission denied" in out, out
    assert not (data / "artifacts" / "planted").exists()
