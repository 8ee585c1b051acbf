"""A training through the public API, timed: `trainyard up` on a fresh data dir, the CSVs
uploaded, the train request posted through Envoy, the status polled until the training ends.

The benches print its submit → complete seconds beside the trainer's own time (the report's
`training_seconds`), so the platform's overhead (process start, reading the upload, callbacks,
writing artifacts, the poll interval) is visible. The workloads run as the benchmark's own user
(TRAINYARD_JOBRUNNER_WORKLOAD_USER=""): as root the default unprivileged user may not reach this
checkout's interpreter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
POLL_SECONDS = 0.1


@dataclass
class Api:
    http: str
    headers: dict[str, str]


@dataclass
class Timed:
    status: dict[str, Any]
    seconds: float  # POST of the train request → its final status seen
    report: dict[str, Any]


@contextmanager
def running_suite() -> Iterator[Api]:
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-") as tmp:
        data = Path(tmp)
        env = {**os.environ, "TRAINYARD_JOBRUNNER_WORKLOAD_USER": ""}
        proc = subprocess.Popen(
            [str(BIN / "trainyard"), "up", "--data-dir", str(data), "--http-port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            endpoints = data / "endpoints.json"
            deadline = time.monotonic() + 120
            while not endpoints.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("trainyard up did not start")
                time.sleep(0.2)
            http = json.loads(endpoints.read_text())["http"]
            token = subprocess.run(
                [str(BIN / "trainyard"), "token", "--data-dir", str(data), "--user", "bench"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            yield Api(http, {"authorization": f"Bearer {token}"})
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def upload(api: Api, files: Sequence[tuple[str, bytes]]) -> str:
    resp = httpx.post(
        f"{api.http}/api/v2/train/upload-data",
        headers=api.headers,
        files=[("files", (name, content)) for name, content in files],
        timeout=300,
    )
    resp.raise_for_status()
    upload_id: str = resp.json()["upload_id"]
    return upload_id


def trainer_alone(module: str, config: dict[str, Any], workdir: Path) -> Timed:
    """The same trainer as a plain process, without the platform: `python -m <module>` with
    the config in a file (inputs as file:// URIs, artifacts under `workdir`), reporting
    offline. Its wall time beside the API's submit -> complete is the platform's own share."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {**config, "artifacts_uri": (workdir / "artifacts").as_uri() + "/"}
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", module],
        env={"PATH": os.environ.get("PATH", ""), "TRAINYARD_CONFIG": str(path)},
        cwd=workdir,
        capture_output=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    reports = sorted(
        (workdir / "artifacts" / "models" / str(config["model_id"]) / "report").glob(
            "versions/*/report.json"
        ),
        key=lambda p: p.stat().st_mtime,
    )
    if done.returncode != 0 or not reports:
        return Timed({"status": "failed", "stderr": done.stderr.decode()[-2000:]}, seconds, {})
    report: dict[str, Any] = json.loads(reports[-1].read_text())
    return Timed({"status": "complete"}, seconds, report)


def train(api: Api, kind: str, body: dict[str, Any], timeout: float = 1800) -> Timed:
    """Post a train request and wait for its end; the time from the POST to the final status."""
    start = time.perf_counter()
    resp = httpx.post(f"{api.http}/api/v2/train/{kind}", headers=api.headers, json=body, timeout=60)
    resp.raise_for_status()
    model_id = resp.json()["model_id"]
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(
            f"{api.http}/api/v2/train/{model_id}/status", headers=api.headers, timeout=30
        ).json()
        if status["status"] in ("complete", "failed", "stopped"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {kind} training did not end within {timeout} s")
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - start
    report: dict[str, Any] = {}
    if status["status"] == "complete":
        got = httpx.get(
            f"{api.http}/api/v2/train/{model_id}/report", headers=api.headers, timeout=60
        )
        if got.status_code == 200:
            report = got.json()
    return Timed(status, seconds, report)
