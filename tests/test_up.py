"""`trainyard up` end to end, as a user runs it: a fresh data dir, port 0, all five services and
Envoy; documented paths answer JSON; reflection lists every service; SIGTERM stops everything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.up import running_up
from tests.support.wait import eventually

SERVICES = {
    "upload": "trainyard.api.upload.v1.UploadService",
    "orchestrator": "trainyard.api.orchestrator.v1.TrainService",
    "jobrunner": "trainyard.api.jobrunner.v1.TrainingJobsService",
    "finetuning": "trainyard.api.finetuning.v1.FinetuningService",
    "clustering": "trainyard.api.clustering.v1.ClusteringTrainingService",
}
BIN = Path(sys.executable).parent

#: The running `up`: its process, data directory and endpoints.json.
Up = tuple[subprocess.Popen[bytes], Path, dict[str, Any]]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    data = tmp_path_factory.mktemp("up")
    with running_up(data, stdout=subprocess.PIPE) as (proc, endpoints):
        assert proc.poll() is None
        yield proc, data, endpoints


def test_up_answers_documented_paths_with_json(suite: Up) -> None:
    _, data, endpoints = suite
    http = endpoints["http"]
    assert httpx.get(http + "/healthz").json() == {"status": "SERVING"}
    anon = httpx.get(http + "/api/v2/train/abc/status")
    assert anon.status_code == 401 and anon.json()["code"] == 16
    token = subprocess.run(
        [str(BIN / "trainyard"), "token", "--data-dir", str(data), "--user", "alice"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    auth = {"authorization": f"Bearer {token}"}
    missing = httpx.get(http + "/api/v2/train/abc/status", headers=auth)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
    # Routes whose issues have not landed yet answer 501 JSON, never hang or HTML.
    for method, path in [
        ("POST", "/api/v1/finetunings"),
        ("GET", "/sestekai-api/api/external/trainings/x/progress"),
    ]:
        resp = httpx.request(method, http + path, headers=auth, json={}, timeout=10)
        assert resp.headers["content-type"] == "application/json", path
        assert resp.status_code in (200, 201, 400, 404, 422), (path, resp.text)
    # The embedded OAuth2 client works against /connect/token.
    clients = json.loads((data / "clients.json").read_text())
    ((client_id, secret),) = clients.items()
    resp = httpx.post(
        http + "/connect/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert resp.status_code == 200 and resp.json()["token_type"] == "Bearer"


def test_every_service_lists_itself_by_reflection_and_is_serving(suite: Up) -> None:
    _, _, endpoints = suite
    grpcurl = str(BIN / "grpcurl")
    for name, address in endpoints["grpc"].items():
        listed = subprocess.run(
            [grpcurl, "-plaintext", address, "list"], check=True, capture_output=True, text=True
        ).stdout.split()
        assert SERVICES[name] in listed, (name, listed)
        health = subprocess.run(
            [grpcurl, "-plaintext", address, "grpc.health.v1.Health/Check"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert json.loads(health) == {"status": "SERVING"}


def _endpoints(data: Path) -> dict[str, Any]:
    endpoints: dict[str, Any] = json.loads((data / "endpoints.json").read_text())
    return endpoints


def test_a_killed_service_is_restarted(suite: Up) -> None:
    _, data, endpoints = suite
    pid = endpoints["pids"]["finetuning"]
    os.kill(pid, signal.SIGKILL)
    address = endpoints["grpc"]["finetuning"]

    def listed() -> bool:
        out = subprocess.run(
            [str(BIN / "grpcurl"), "-plaintext", address, "list"], capture_output=True, text=True
        )
        return out.returncode == 0 and SERVICES["finetuning"] in out.stdout

    eventually(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
        message="the killed service is still running",
    )
    eventually(listed, timeout=60, message="finetuning was not restarted on its port")
    http = endpoints["http"]
    eventually(
        lambda: httpx.get(http + "/healthz").status_code == 200,
        timeout=30,
        message="envoy does not see every service healthy again",
    )
    # endpoints.json names the new process, at the same address.
    current = eventually(
        lambda: (now := _endpoints(data))["pids"]["finetuning"] != pid and now,
        message="endpoints.json still names the dead process",
    )
    assert current["grpc"]["finetuning"] == address
    assert psutil.Process(current["pids"]["finetuning"]).is_running()


def test_a_killed_envoy_is_restarted_on_its_port(suite: Up) -> None:
    proc, data, endpoints = suite
    envoy = next(c for c in psutil.Process(proc.pid).children() if c.name() == "envoy")
    assert _endpoints(data)["envoy_pid"] == envoy.pid
    envoy.kill()
    http = endpoints["http"]

    def healthy() -> bool:
        try:
            return httpx.get(http + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    eventually(
        lambda: not envoy.is_running() or envoy.status() == psutil.STATUS_ZOMBIE,
        message="envoy is still running",
    )
    eventually(healthy, timeout=60, message="envoy was not restarted on the same port")
    # endpoints.json names the new Envoy, and its admin address answers.
    current = eventually(
        lambda: (now := _endpoints(data))["envoy_pid"] != envoy.pid and now,
        message="endpoints.json still names the dead Envoy",
    )
    assert current["http"] == http
    assert httpx.get(current["admin"] + "/ready", timeout=5).text.strip() == "LIVE"


def test_sigterm_stops_everything(suite: Up) -> None:
    proc, _, _ = suite
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 6  # five services + envoy
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert b"stopped" in out
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child
