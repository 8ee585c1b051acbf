"""End to end on the local backend, as a user does it through Envoy: upload a CSV, train
nlp-text and nlp-token to `complete` with the real trainers, read the report, predict, download
the model; and a `trainyard up` whose orchestrator is SIGKILLed while a training runs, after
which the model still ends `complete`.

The CSVs are a few lines written for these tests: they check the platform's plumbing, not the
models' quality (bench/nlp_text.py and bench/nlp_token.py measure that on real data)."""

from __future__ import annotations

import csv
import io
import os
import signal
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.jobs import python_runs_as
from tests.support.platform import Platform, as_nobody, start_platform, unique_name
from tests.support.up import running_up, user_token
from tests.support.wait import eventually

POSITIVE = ["a great film", "wonderful acting", "loved every minute", "a delight", "superb cast"]
NEGATIVE = ["a dull film", "terrible acting", "hated every minute", "a bore", "awful cast"]
PEOPLE = ["Alice", "Bob", "Carol", "Dave"]
CITIES = ["Paris", "Berlin", "Rome", "Oslo"]


def _text_csv(repeat: int = 6) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    for i in range(repeat):
        for text in POSITIVE:
            writer.writerow([f"{text} {i}", "pos"])
        for text in NEGATIVE:
            writer.writerow([f"{text} {i}", "neg"])
    return out.getvalue().encode()


def _token_csv() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["source", "target"])
    for person in PEOPLE:
        for city in CITIES:
            writer.writerow([f"{person} lives in {city}", "PER O O LOC"])
            writer.writerow([f"yesterday {person} flew to {city} .", "O PER O O LOC O"])
    writer.writerow(["a row whose lengths differ", "O O"])
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # As root (CI), the trainers run as nobody: they reach their data only through the API.
    where, how = as_nobody(tmp_path_factory.mktemp("e2e"))
    p = start_platform(where, **how)
    try:
        yield p
    finally:
        p.harness.close()


def _post(platform: Platform, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{platform.http}{path}", headers=platform.headers(), json=body, timeout=60)


def _get(platform: Platform, path: str) -> httpx.Response:
    return httpx.get(f"{platform.http}{path}", headers=platform.headers(), timeout=60)


def test_nlp_text_trains_reports_predicts_and_downloads(platform: Platform) -> None:
    upload = platform.upload([("reviews.csv", _text_csv())])
    resp = platform.train(
        "nlp-text",
        {
            "model_name": unique_name("text"),
            "model_options": {
                "text_column": "text",
                "label_column": "label",
                "n_target_classes": 2,
            },
            "data": {"supervised_files": [{"location": "upload", "path": upload}]},
            "train_options": {"test_split": 0.25, "epochs": 5},
        },
    )
    assert resp.status_code == 200, resp.text
    model_id = resp.json()["model_id"]
    status = platform.wait_final(model_id)
    assert status["status"] == "complete", status

    info = _get(platform, f"/api/v2/model/{model_id}").json()
    assert info["train_status"] == "complete"
    assert info["progress"]["fraction"] == 1.0

    report = _get(platform, f"/api/v2/train/{model_id}/report")
    assert report.status_code == 200, report.text
    body = report.json()
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
        assert 0.0 <= body[key] <= 1.0, (key, body)
    assert set(body["per_class"]) == {"pos", "neg"}
    assert sorted(body["confusion_matrix"]["labels"]) == ["neg", "pos"]

    predicted = _post(
        platform,
        f"/api/v2/model/{model_id}/predict",
        {"queries": ["a great film 2", "terrible acting 3"], "top_k": 2},
    )
    assert predicted.status_code == 200, predicted.text
    predictions = predicted.json()["predictions"]
    assert [p["query"] for p in predictions] == ["a great film 2", "terrible acting 3"]
    assert [p["predicted_classes"][0][0] for p in predictions] == ["pos", "neg"]
    for p in predictions:
        scores = [score for _, score in p["predicted_classes"]]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)

    download = _get(platform, f"/api/v2/model/{model_id}/download")
    assert download.status_code == 200, download.text[:200]
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        names = archive.namelist()
    assert names[0] == "MANIFEST.json" and len(names) > 1

    logs = _get(platform, f"/api/v2/train/{model_id}/logs")
    assert logs.status_code == 200 and len(logs.json()) == 1


def test_nlp_token_trains_reports_and_tags_aligned_tokens(platform: Platform) -> None:
    upload = platform.upload([("people.csv", _token_csv())])
    resp = platform.train(
        "nlp-token",
        {
            "model_name": unique_name("token"),
            "model_options": {
                "source_column": "source",
                "target_column": "target",
                "target_labels": ["PER", "LOC"],
            },
            "data": {"supervised_files": [{"location": "upload", "path": upload}]},
            "train_options": {"test_split": 0.25},
        },
    )
    assert resp.status_code == 200, resp.text
    model_id = resp.json()["model_id"]
    status = platform.wait_final(model_id)
    assert status["status"] == "complete", status
    assert any("length" in w or "differ" in w for w in status["warnings"]), status

    report = _get(platform, f"/api/v2/train/{model_id}/report").json()
    assert set(report["after_train_metrics"]) >= {"PER", "LOC"}
    for tag in ("PER", "LOC"):
        assert set(report["after_train_metrics"][tag]) >= {"precision", "recall", "fmeasure"}
    assert "before_train_metrics" in report and "after_train_examples" in report

    query = "Carol   lives in  Rome"
    predicted = _post(platform, f"/api/v2/model/{model_id}/predict", {"query": query})
    assert predicted.status_code == 200, predicted.text
    (prediction,) = predicted.json()["predictions"]
    assert prediction["query"] == query
    assert prediction["tokens"] == query.split()
    assert len(prediction["predicted_tags"]) == len(prediction["tokens"])
    assert prediction["predicted_tags"][0] == "PER"
    assert prediction["predicted_tags"][-1] == "LOC"


def test_a_training_over_too_many_classes_fails_with_the_reason(platform: Platform) -> None:
    three = _text_csv(repeat=2) + b"an ordinary film,meh\n"
    upload = platform.upload([("reviews.csv", three)])
    resp = platform.train(
        "nlp-text",
        {
            "model_name": unique_name("text"),
            "model_options": {
                "text_column": "text",
                "label_column": "label",
                "n_target_classes": 2,
            },
            "data": {"supervised_files": [{"location": "upload", "path": upload}]},
        },
    )
    assert resp.status_code == 200, resp.text
    status = platform.wait_final(resp.json()["model_id"])
    assert status["status"] == "failed"
    assert any("n_target_classes" in e for e in status["errors"]), status


def test_an_orchestrator_killed_during_a_training_comes_back_and_ends_it(
    tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bin_dir.chmod(0o755)
    # The real trainer, started late, so the orchestrator can be killed while it "runs".
    wrapper = bin_dir / "slow-python"
    wrapper.write_text(f'#!/bin/sh\nsleep 4\nexec {sys.executable} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    env = {"TRAINYARD_ORCHESTRATOR_TRAINER_PYTHON": str(wrapper)}
    if not python_runs_as("nobody"):
        env["TRAINYARD_JOBRUNNER_WORKLOAD_USER"] = ""
    data = tmp_path / "data"
    with running_up(data, env=env, stdout=subprocess.DEVNULL) as (_, endpoints):
        http = endpoints["http"]
        auth = {"authorization": f"Bearer {user_token(data, 'alice')}"}
        up = httpx.post(
            f"{http}/api/v2/train/upload-data",
            headers=auth,
            files=[("files", ("reviews.csv", _text_csv()))],
            timeout=60,
        )
        assert up.status_code == 200, up.text
        resp = httpx.post(
            f"{http}/api/v2/train/nlp-text",
            headers=auth,
            json={
                "model_name": unique_name("killed"),
                "model_options": {
                    "text_column": "text",
                    "label_column": "label",
                    "n_target_classes": 2,
                },
                "data": {
                    "supervised_files": [{"location": "upload", "path": up.json()["upload_id"]}]
                },
            },
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        model_id = resp.json()["model_id"]
        pid = endpoints["pids"]["orchestrator"]
        os.kill(pid, signal.SIGKILL)
        eventually(
            lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
            message="the orchestrator survived SIGKILL",
        )

        def final() -> dict[str, Any] | None:
            try:
                got = httpx.get(f"{http}/api/v2/train/{model_id}/status", headers=auth, timeout=10)
            except httpx.HTTPError:
                return None
            if got.status_code != 200:
                return None
            body: dict[str, Any] = got.json()
            return body if body["status"] in ("complete", "failed", "stopped") else None

        status: dict[str, Any] = eventually(final, timeout=180, message="the model never ended")
        assert status["status"] == "complete", status
