"""How a training's workload ends, end to end on the local backend through Envoy: a trainer that
crashes without calling back ends `failed` with the reason, a running training is stopped for
real (its process gone), and a deleted model stops its training. The trainer is swapped for a
small script (the orchestrator's trainer_python setting), so each ending is certain."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.platform import Platform, start_platform, unique_name
from tests.support.wait import eventually

CSV = b"text,label\ngood film,pos\nbad film,neg\n"


def _script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    folder.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def crashing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    bin_dir = tmp_path_factory.mktemp("crash-bin")
    trainer = _script(bin_dir, "trainer", 'echo "the trainer fell over" >&2\nexit 3')
    p = start_platform(tmp_path_factory.mktemp("crash"), trainer_python=str(trainer))
    try:
        yield p
    finally:
        p.harness.close()


@pytest.fixture(scope="module")
def sleeping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, Path]]:
    bin_dir = tmp_path_factory.mktemp("sleep-bin")
    trainer = _script(bin_dir, "trainer", "exec sleep 600")
    p = start_platform(tmp_path_factory.mktemp("sleep"), trainer_python=str(trainer))
    try:
        yield p, trainer
    finally:
        p.harness.close()


def _nlp_text(platform: Platform) -> str:
    upload = platform.upload([("train.csv", CSV)])
    resp = platform.train(
        "nlp-text",
        {
            "model_name": unique_name(),
            "model_options": {
                "text_column": "text",
                "label_column": "label",
                "n_target_classes": 2,
            },
            "data": {"supervised_files": [{"location": "upload", "path": upload}]},
        },
    )
    assert resp.status_code == 200, resp.text
    model_id: str = resp.json()["model_id"]
    return model_id


def _sleepers() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline[:2] == ["sleep", "600"]:
            found.append(proc)
    return found


def test_a_trainer_that_crashes_without_calling_back_ends_failed_with_the_reason(
    crashing: Platform,
) -> None:
    model_id = _nlp_text(crashing)
    status = crashing.wait_final(model_id, timeout=60)
    assert status["status"] == "failed"
    assert status["errors"] == ["the trainer exited with code 3"]
    logs = httpx.get(
        f"{crashing.http}/api/v2/train/{model_id}/logs", headers=crashing.headers(), timeout=30
    )
    assert logs.status_code == 200, logs.text
    assert any("the trainer fell over" in entry["stderr"] for entry in logs.json())
    # The job events it applied are remembered, so a restart resumes the watch after them.
    with sqlite3.connect(crashing.data / "o.db") as db:
        (cursor,) = db.execute(
            "SELECT value FROM orchestrator_cursors WHERE name = 'jobrunner-events'"
        ).fetchone()
    assert cursor > 0


def test_stop_ends_a_running_training_and_its_process(
    sleeping: tuple[Platform, Path],
) -> None:
    platform, _ = sleeping
    before = {p.pid for p in _sleepers()}
    model_id = _nlp_text(platform)
    running = eventually(
        lambda: [p for p in _sleepers() if p.pid not in before],
        timeout=60,
        message="the trainer never started",
    )
    resp = httpx.post(
        f"{platform.http}/api/v2/train/{model_id}/stop", headers=platform.headers(), timeout=30
    )
    assert resp.status_code == 200, resp.text
    assert platform.status(model_id)["status"] == "stopped"
    eventually(
        lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in running),
        timeout=30,
        message="the stopped trainer's process is still running",
    )
    assert platform.wait_final(model_id)["status"] == "stopped"


def test_deleting_a_training_model_stops_its_process(sleeping: tuple[Platform, Path]) -> None:
    platform, _ = sleeping
    before = {p.pid for p in _sleepers()}
    model_id = _nlp_text(platform)
    running = eventually(
        lambda: [p for p in _sleepers() if p.pid not in before],
        timeout=60,
        message="the trainer never started",
    )
    resp = httpx.delete(
        f"{platform.http}/api/v2/model/{model_id}", headers=platform.headers(), timeout=30
    )
    assert resp.status_code == 200, resp.text
    gone = httpx.get(f"{platform.http}/api/v2/model/{model_id}", headers=platform.headers())
    assert gone.status_code == 404, gone.text
    eventually(
        lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in running),
        timeout=30,
        message="the deleted model's trainer is still running",
    )
