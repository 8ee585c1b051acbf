"""The clustering service as a user reaches it: the job-runner (local processes) and the
clustering service, real, on SQLite and local storage, behind a real Envoy."""

from __future__ import annotations

import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.harness import TEST_SECRET, Harness
from tests.support.platform import start_local_jobrunner
from tests.support.wait import eventually
from trainyard.clustering.app import build as build_clustering
from trainyard.clustering.settings import ClusteringSettings
from trainyard.runtime.settings import CommonSettings

BASE = "/sestekai-api/api/external/trainings"
TRAIN = f"{BASE}/train"
DEPRECATED_TRAIN = "/sestekai-api/api/app/external-trainings/train"
STATUSES = (
    "Initialized",
    "PendingTraining",
    "DatasetUploading",
    "DataProcessing",
    "TrainingStarted",
    "Training",
    "Trained",
    "ModelUploading",
    "Completed",
    "Failed",
)

DIALOGUE_CSV = (
    b"conversation_id,speaker,text\n"
    b"c1,customer,I want to reset my password\n"
    b"c1,agent,Sure I can help with that\n"
    b"c2,customer,how do I change my password\n"
    b"c2,agent,Let me check\n"
    b"c3,customer,my card was charged twice\n"
    b"c4,customer,there is a double charge on my card\n"
    b"c5,customer,please cancel my subscription\n"
    b"c6,customer,I would like to cancel my plan\n"
)

INTENT_CSV = (
    b"text,intent\n"
    b"forgot my password,password\n"
    b"password reset link does not work,password\n"
    b"refund the double charge,billing\n"
    b"charged twice this month,billing\n"
    b"stop my subscription,cancel\n"
    b"cancel the plan please,cancel\n"
)


def script(folder: Path, name: str, body: str) -> Path:
    """An executable shell script the workloads (maybe another user) can run."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@dataclass
class Clustering:
    harness: Harness
    data: Path

    @property
    def http(self) -> str:
        return self.harness.http

    def headers(self, user: str = "alice") -> dict[str, str]:
        return self.harness.user_headers(user)

    def train(
        self,
        fields: Mapping[str, str],
        files: Mapping[str, tuple[str, bytes]] | None = None,
        *,
        user: str = "alice",
        path: str = TRAIN,
    ) -> httpx.Response:
        return httpx.post(
            f"{self.http}{path}",
            headers=self.headers(user),
            # Always multipart, as `curl -F` sends it (plain fields are parts without a filename).
            files=[(k, (None, v)) for k, v in fields.items()]
            + [(k, (n, d)) for k, (n, d) in (files or {}).items()],
            timeout=60,
        )

    def get(self, model_id: str, what: str, user: str = "alice") -> httpx.Response:
        return httpx.get(
            f"{self.http}{BASE}/{model_id}/{what}", headers=self.headers(user), timeout=60
        )

    def assign(self, model_id: str, texts: Sequence[str], user: str = "alice") -> httpx.Response:
        return httpx.post(
            f"{self.http}{BASE}/{model_id}/assign",
            headers=self.headers(user),
            json={"texts": list(texts)},
            timeout=60,
        )

    def progress(self, model_id: str, user: str = "alice") -> dict[str, Any]:
        resp = self.get(model_id, "progress", user)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def wait_status(
        self, model_id: str, statuses: Sequence[str], user: str = "alice", timeout: float = 240
    ) -> dict[str, Any]:
        return eventually(
            lambda: (p := self.progress(model_id, user))["trainingStatus"] in statuses and p,
            timeout=timeout,
            message=f"model {model_id} never reached {statuses}",
        )

    def wait_ready(self, model_id: str, timeout: float = 120) -> None:
        eventually(
            lambda: (
                self.progress(model_id)["inferenceStatus"] == "Running"
                and self.get(model_id, "ready").json() is True
            ),
            timeout=timeout,
            message=f"model {model_id} never became ready",
        )

    @property
    def store(self) -> Any:
        app = self.harness.servers["clustering"].app
        assert app is not None
        return app.state["store"]

    @property
    def store_storage(self) -> Any:
        """The clustering service's blob storage (datasets and models)."""
        app = self.harness.servers["clustering"].app
        assert app is not None
        return app.state["storage"]

    def history(self, experiment_id: str) -> list[str]:
        """The statuses the experiment went through, from the service's database."""
        codes = self.harness.loop.run(self.store.history(experiment_id))
        return [STATUSES[c] for c in codes]


def start_clustering(tmp: Path, **own: Any) -> Clustering:
    """Job-runner + clustering + Envoy in `tmp`; `own` overrides ClusteringSettings."""
    common = CommonSettings(data_dir=tmp, auth_secret=TEST_SECRET)
    harness = Harness(tmp)
    wired = start_local_jobrunner(harness, tmp, common)
    own.setdefault("trainer_python", sys.executable)
    settings = ClusteringSettings(database_url=f"sqlite+aiosqlite:///{tmp / 'c.db'}", **own)
    harness.start_app("clustering", harness.loop.run(build_clustering(wired, settings)))
    harness.start_envoy()
    return Clustering(harness, tmp)
