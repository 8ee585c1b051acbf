"""The three services a training needs (upload, job-runner, orchestrator), real, on SQLite and
local storage, behind a real Envoy: the Model Bazaar API as a user reaches it. The job-runner
runs trainers as local processes, or (jobrunner_backend="kubernetes") as Jobs in the
Kubernetes API double, whose pods are local processes too."""

from __future__ import annotations

import functools
import json
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from tests.k8s_double import FakeKubernetes
from tests.support.harness import TEST_SECRET, Harness
from tests.support.jobs import open_dir, python_for, python_runs_as
from tests.support.wait import eventually
from trainyard.jobrunner.app import build as build_jobrunner
from trainyard.jobrunner.settings import JobrunnerSettings
from trainyard.orchestrator.app import build as build_orchestrator
from trainyard.orchestrator.settings import OrchestratorSettings
from trainyard.runtime.settings import CommonSettings
from trainyard.upload.app import build as build_upload
from trainyard.upload.settings import UploadSettings

#: The trainer image on the Kubernetes backend; the double runs its pods' commands (this host's
#: python, see start_platform) whatever the image, once it is "pullable".
KUBE_TRAINER_IMAGE = "trainyard-trainer:test"
KUBE_NAMESPACE = "trainyard-jobs"


@dataclass
class Platform:
    harness: Harness
    data: Path
    #: The Kubernetes API double the job-runner runs trainers in (None: local processes).
    kube: FakeKubernetes | None = None
    namespace: str = KUBE_NAMESPACE

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


@functools.cache
def _nobody_python() -> Path | None:
    return python_for("nobody")


def as_nobody(tmp: Path) -> tuple[Path, dict[str, Any]]:
    """Where and how to `start_platform(where, **how)` so that the (root) job-runner runs the
    trainers as `nobody`, with an interpreter nobody can run, on a data dir whose parents
    nobody can pass through; `(tmp, {})` when that cannot be (not root, no such Python)."""
    python = _nobody_python()
    if python is None:
        return tmp, {}
    return open_dir(), {
        "trainer_python": str(python),
        "jobrunner_settings": {"workload_user": "nobody"},
    }


def unique_name(prefix: str = "model") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def write_kubeconfig(path: Path, kube: FakeKubernetes) -> Path:
    """A kubeconfig for the double (no auth, plain HTTP), as the job-runner reads one."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "double",
                "clusters": [{"name": "double", "cluster": {"server": kube.url}}],
                "users": [{"name": "jobrunner", "user": {}}],
                "contexts": [
                    {"name": "double", "context": {"cluster": "double", "user": "jobrunner"}}
                ],
            }
        )
    )
    return path


def start_local_jobrunner(harness: Harness, tmp: Path, common: CommonSettings) -> CommonSettings:
    """A job-runner on the local backend in `tmp` (workloads as `nobody` where python runs as
    it); returns `common` wired to it, for the service that submits to it."""
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
    return common.model_copy(update={"jobrunner_address": jobrunner.address})


def start_platform(
    tmp: Path,
    *,
    jobrunner_backend: Literal["local", "kubernetes"] = "local",
    kube: FakeKubernetes | None = None,
    upload_settings: dict[str, Any] | None = None,
    jobrunner_settings: dict[str, Any] | None = None,
    **orchestrator: Any,
) -> Platform:
    """Start the platform in `tmp`; `orchestrator` overrides OrchestratorSettings,
    `upload_settings` and `jobrunner_settings` those of the other two services. On the
    kubernetes backend (`kube`: a started FakeKubernetes the caller owns and stops after the
    platform) trainers run as `[this python, -m, trainyard.trainers.<module>]` in the
    KUBE_TRAINER_IMAGE image, unless `orchestrator` says otherwise."""
    common = CommonSettings(data_dir=tmp, auth_secret=TEST_SECRET)
    harness = Harness(tmp)
    upload = harness.start_app(
        "upload",
        harness.loop.run(
            build_upload(
                common,
                UploadSettings(
                    database_url=f"sqlite+aiosqlite:///{tmp / 'u.db'}", **(upload_settings or {})
                ),
            )
        ),
    )
    jobrunner_own = {
        "database_url": f"sqlite+aiosqlite:///{tmp / 'jr.db'}",
        "kill_grace_seconds": 1,
        "workload_user": "nobody" if python_runs_as("nobody") else "",
        **(jobrunner_settings or {}),
    }
    jr_settings = JobrunnerSettings(**jobrunner_own)
    if jobrunner_backend == "kubernetes":
        if kube is None:
            raise ValueError("the kubernetes backend needs `kube`, a FakeKubernetes")
        orchestrator.setdefault("trainer_python", sys.executable)
        orchestrator.setdefault("trainer_image", KUBE_TRAINER_IMAGE)
        kube.add_image(orchestrator["trainer_image"])
        jr_settings = jr_settings.model_copy(
            update={
                "backend": "kubernetes",
                "namespace": KUBE_NAMESPACE,
                "kubeconfig": write_kubeconfig(tmp / "kubeconfig", kube),
            }
        )
    jobrunner = harness.start_app(
        "jobrunner", harness.loop.run(build_jobrunner(common, jr_settings))
    )
    wired = common.model_copy(
        update={"upload_address": upload.address, "jobrunner_address": jobrunner.address}
    )
    own = OrchestratorSettings(database_url=f"sqlite+aiosqlite:///{tmp / 'o.db'}", **orchestrator)
    harness.start_app("orchestrator", harness.loop.run(build_orchestrator(wired, own)))
    harness.start_envoy()
    return Platform(harness, tmp, kube if jobrunner_backend == "kubernetes" else None)
