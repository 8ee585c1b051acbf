"""Each service SIGKILLed once under a request loop, on a real `trainyard up`: it is back on its
port within 5 s, endpoints.json names the new process, no request gets a 5xx other than the
gateway's 502/503 while the service is down, and nothing that was accepted (an upload, a training
job) is lost: every one is still there afterwards and every job still runs to its end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.up import running_up, user_token
from tests.support.wait import eventually
from trainyard.runtime.settings import SERVICE_NAMES

BIN = Path(sys.executable).parent
BACK_WITHIN_SECONDS = 5.0  # the bound for a killed service to serve again


@dataclass
class Suite:
    proc: subprocess.Popen[bytes]
    data: Path
    http: str
    headers: dict[str, str]

    def endpoints(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.data / "endpoints.json").read_text())
        return loaded


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    data = tmp_path_factory.mktemp("kill")
    pipelines = {"quick": {"command": ["echo", "trained"]}}
    with running_up(data, {"TRAINYARD_JOBRUNNER_PIPELINES": json.dumps(pipelines)}) as (
        proc,
        endpoints,
    ):
        token = user_token(data, "loader")
        yield Suite(proc, data, endpoints["http"], {"authorization": f"Bearer {token}"})


@dataclass
class Loop:
    """Creates uploads and training jobs and reads lists until stopped; keeps what was accepted
    and every answer that is neither a success nor the gateway saying the upstream is down."""

    suite: Suite
    uploads: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    requests: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.suite.http, headers=self.suite.headers, timeout=30) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                self._one(c, n)

    def _one(self, client: httpx.Client, n: int) -> None:
        try:
            if n % 4 == 0:
                resp = client.post(
                    "/api/v2/train/upload-data", files={"file": (f"f{n}.csv", b"a,b\n1,2\n")}
                )
                if resp.status_code == 200:
                    self.uploads.append(resp.json()["upload_id"])
            elif n % 16 == 1:  # jobs sparingly: each one runs a process
                resp = client.post("/training-jobs?pipeline=quick", json={"n": n})
                if resp.status_code == 200:
                    self.jobs.append(resp.json())
            elif n % 2 == 1:
                resp = client.get("/training-jobs")
            else:
                resp = client.get("/api/v2/train/uploads")
        except httpx.TransportError as exc:
            self.bad.append(f"transport: {exc!r}")
            return
        finally:
            self.requests += 1
        if resp.status_code != 200 and resp.status_code not in (502, 503):
            self.bad.append(f"{resp.request.method} {resp.request.url.path}: {resp.status_code}")


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=0.5
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def _all_pages(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        resp = client.get(path, params={"page_size": 100, "page_token": token})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if isinstance(body, list):
            items.extend(body)
            token = resp.headers.get("x-next-page-token", "")
        else:
            items.extend(body["uploads"])
            token = body.get("next_page_token", "")
        if not token:
            return items


def test_each_service_killed_under_load_comes_back_and_loses_nothing(suite: Suite) -> None:
    loop = Loop(suite)
    worker = threading.Thread(target=loop.run, daemon=True)
    worker.start()
    try:
        for name in SERVICE_NAMES:
            before = suite.endpoints()
            pid, address = before["pids"][name], before["grpc"][name]

            # (Defaults bind this iteration's values: each predicate is one service's.)
            def moving(settled: int = loop.requests) -> bool:
                return loop.requests > settled + 8

            def dead(p: int = pid) -> bool:
                return (
                    not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
                )

            def serving(a: str = address) -> bool:
                return _serving(a)

            def replaced(p: int = pid, n: str = name) -> dict[str, Any] | Literal[False]:
                now = suite.endpoints()
                return now["pids"][n] != p and now

            eventually(moving, message="the loop is stuck")
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            eventually(dead, message=f"{name} survived SIGKILL")
            eventually(
                serving,
                timeout=BACK_WITHIN_SECONDS,
                message=f"{name} was not serving again on {address} within 5 s",
            )
            back_after = time.monotonic() - killed_at
            assert back_after <= BACK_WITHIN_SECONDS, (name, back_after)
            current = eventually(replaced, message=f"endpoints.json still names the dead {name}")
            assert current["grpc"][name] == address
            assert psutil.Process(current["pids"][name]).is_running()
    finally:
        loop.stop.set()
        worker.join(60)
    assert not loop.bad, loop.bad[:10]
    assert loop.uploads and loop.jobs, (len(loop.uploads), len(loop.jobs))

    with httpx.Client(base_url=suite.http, headers=suite.headers, timeout=30) as client:
        eventually(lambda: client.get("/healthz").status_code == 200, message="never healthy again")
        listed_uploads = {u["upload_id"] for u in _all_pages(client, "/api/v2/train/uploads")}
        assert set(loop.uploads) <= listed_uploads, set(loop.uploads) - listed_uploads

        def finished() -> dict[str, str] | Literal[False]:
            jobs = {j["name"]: j["status"] for j in _all_pages(client, "/training-jobs")}
            missing = set(loop.jobs) - set(jobs)
            assert not missing, f"accepted jobs lost: {sorted(missing)[:5]}"
            done = all(jobs[n] in ("Succeeded", "Failed", "Cancelled") for n in loop.jobs)
            return done and jobs

        jobs = eventually(finished, timeout=120, message="accepted jobs never finished")
        assert all(jobs[n] == "Succeeded" for n in loop.jobs), {
            n: jobs[n] for n in loop.jobs if jobs[n] != "Succeeded"
        }
