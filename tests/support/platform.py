"""The three services a training needs (upload, job-runner, orchestrator), real, on SQLite and
local storage, behind a real Envoy: the Model Bazaar API as a user reaches it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.harness import TEST_SECRET, Harness
from tests.support.jobs import python_runs_as
from tests.support.wait import eventually
from trainyard.jobrunner.app import build as build_jobrunner
from trainyard.jobrunner.settings import JobrunnerSettings
from trainyard.orchestrator.app import build as build_orchestrator
from trainyard.orchestrator.settings import OrchestratorSettings
from trainyard.runtime.settings import CommonSettings
from trainyard.upload.app import build as build_upload
from trainyard.upload.settings import UploadSettings


@dataclass
class Platform:
    harness: Harness
    data: Path

    @property
    def http(self) -> str:
        return self.harness.http

    def headers(self, user: str = "alice") -> dict[str, str]:
        return self.harness.user_headers(user)

    def upload(self, files: Sequence[tuple[str, bytes]], user: str = "alice") -> str:
        resp = httpx.post(
            f"{self.http}/api/v2/train/upload-data",
            headers=self.headers(user),
            files=[("files", (name, data)) for name, data in files],
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        upload_id: str = resp.json()["upload_id"]
        return upload_id

    def train(self, kind: str, body: dict[str, Any], user: str = "alice") -> httpx.Response:
        return httpx.post(
            f"{self.http}/api/v2/train/{kind}", headers=self.headers(user), json=body, timeout=60
        )

    def status(self, model_id: str, user: str = "alice") -> dict[str, Any]:
        resp = httpx.get(
            f"{self.http}/api/v2/train/{model_id}/status", headers=self.headers(user), timeout=30
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def wait_final(
        self, model_id: str, user: str = "alice", timeout: float = 180
    ) -> dict[str, Any]:
        """The model's status once its training ended."""
        return eventually(
            lambda: (
                (s := self.status(model_id, user))["status"] in ("complete", "failed", "stopped")
                and s
            ),
            timeout=timeout,
            message=f"model {model_id} never finished training",
        )


def unique_name(prefix: str = "model") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def start_platform(tmp: Path, **orchestrator: Any) -> Platform:
    common = CommonSettings(data_dir=tmp, auth_secret=TEST_SECRET)
    harness = Harness(tmp)
    upload = harness.start_app(
        "upload",
        harness.loop.run(
            build_upload(common, UploadSettings(database_url=f"sqlite+aiosqlite:///{tmp / 'u.db'}"))
        ),
    )
    jobrunner = harness.start_app(
        "jobrunner",
        harness.loop.run(
            build_jobrunner(
                common,
                JobrunnerSettings(
                    database_url=f"sqlite+aiosqlite:///{tmp / 'jr.db'}",
                    kill_grace_seconds=1,
                    workload_user="nobody" if python_runs_as("nobody") else "",
                ),
            )
        ),
    )
    wired = common.model_copy(
        update={"upload_address": upload.address, "jobrunner_address": jobrunner.address}
    )
    own = OrchestratorSettings(database_url=f"sqlite+aiosqlite:///{tmp / 'o.db'}", **orchestrator)
    harness.start_app("orchestrator", harness.loop.run(build_orchestrator(wired, own)))
    harness.start_envoy()
    return Platform(harness, tmp)
