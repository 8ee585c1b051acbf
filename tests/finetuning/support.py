"""The finetuning service as a user reaches it: the job-runner (local processes) and the
finetuning service, real, on SQLite, behind a real Envoy, with the one OpenAI-compatible test
server as the provider (reached over HTTP by the real openai SDK, from the service and from
the workload)."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.support import nl2sql
from tests.support.harness import TEST_SECRET, Harness
from tests.support.openai_finetuning import FineTuningProvider
from tests.support.openai_server import OpenAIServer
from tests.support.platform import start_local_jobrunner
from tests.support.wait import eventually
from trainyard.finetuning.app import build as build_finetuning
from trainyard.finetuning.settings import FinetuningSettings
from trainyard.runtime.settings import CommonSettings

API = "/api/v1"
MODEL = "gpt-3.5-turbo-1106"
FINAL = ("succeeded", "failed", "cancelled")


def company_sqlite(folder: Path, name: str = "company.db") -> Path:
    """The nl2sql company database as a sqlite file that the workloads (maybe another OS user)
    can read."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    path = folder / name
    with sqlite3.connect(path) as conn:
        nl2sql.create(conn.execute)
    path.chmod(0o644)
    return path


def golden(connection_id: str, pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {"db_connection_id": connection_id, "question": question, "sql_query": sql}
        for question, sql in pairs
    ]


@dataclass
class Finetuning:
    harness: Harness
    data: Path
    provider: FineTuningProvider
    openai: OpenAIServer
    settings: FinetuningSettings
    common: CommonSettings

    @property
    def http(self) -> str:
        return self.harness.http

    @property
    def databases(self) -> Path:
        return self.settings.databases_root(self.common)

    @property
    def store(self) -> Any:
        app = self.harness.servers["finetuning"].app
        assert app is not None
        return app.state["store"]

    def headers(self, user: str = "alice") -> dict[str, str]:
        return self.harness.user_headers(user)

    def call(
        self, method: str, path: str, *, user: str = "alice", json: Any = None, **params: Any
    ) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.http}{API}{path}",
            headers=self.headers(user),
            json=json,
            params=params or None,
            timeout=60,
        )

    def connection(
        self, uri: str | None = None, *, alias: str = "company", user: str = "alice", **extra: Any
    ) -> dict[str, Any]:
        if uri is None:
            uri = f"sqlite:///{company_sqlite(self.databases)}"
        resp = self.call(
            "POST",
            "/database-connections",
            user=user,
            json={"alias": alias, "connection_uri": uri, **extra},
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def golden_records(
        self, connection_id: str, pairs: Sequence[tuple[str, str]], user: str = "alice"
    ) -> list[dict[str, Any]]:
        resp = self.call("POST", "/golden-records", user=user, json=golden(connection_id, pairs))
        assert resp.status_code == 200, resp.text
        body: list[dict[str, Any]] = resp.json()
        return body

    def start(self, connection_id: str, user: str = "alice", **body: Any) -> dict[str, Any]:
        request = {
            "db_connection_id": connection_id,
            "alias": "my_model",
            "base_llm": {"model_provider": "openai", "model_name": MODEL},
            **body,
        }
        resp = self.call("POST", "/finetunings", user=user, json=request)
        assert resp.status_code == 201, resp.text
        created: dict[str, Any] = resp.json()
        return created

    def get(self, finetuning_id: str, user: str = "alice") -> dict[str, Any]:
        resp = self.call("GET", f"/finetunings/{finetuning_id}", user=user)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def wait_status(
        self, finetuning_id: str, statuses: Sequence[str] = FINAL, timeout: float = 120
    ) -> dict[str, Any]:
        return eventually(
            lambda: (f := self.get(finetuning_id))["status"] in statuses and f,
            timeout=timeout,
            message=f"finetuning {finetuning_id} never reached {statuses}",
        )

    def evaluation(self, finetuning_id: str, user: str = "alice") -> dict[str, Any]:
        resp = self.call("GET", f"/finetunings/{finetuning_id}/evaluation", user=user)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def wait_evaluation(self, finetuning_id: str, timeout: float = 120) -> dict[str, Any]:
        return eventually(
            lambda: (e := self.evaluation(finetuning_id))["status"] != "pending" and e,
            timeout=timeout,
            message=f"finetuning {finetuning_id} was never evaluated",
        )

    def restart(self) -> None:
        """Stop the finetuning service abruptly and start a new one on the same database."""
        port = self.harness.servers["finetuning"].port
        self.harness.stop_server("finetuning", grace=0)
        app = self.harness.loop.run(build_finetuning(self.common, self.settings))
        self.harness.start_app("finetuning", app, port=port)

    def close(self) -> None:
        """Stop the platform and the workloads it left running (the local job-runner leaves
        them on shutdown, to reattach on its restart; a test has no restart to come)."""
        self.harness.close()
        for process in psutil.process_iter(["cwd"]):
            if (process.info.get("cwd") or "").startswith(str(self.data / "jobs")):
                with contextlib.suppress(psutil.Error):
                    process.kill()

    def store_records(self, finetuning_id: str) -> list[dict[str, str]]:
        """The finetuning's records ({id, question, sql_query}) in their order."""
        view = self.harness.loop.run(self.store.finetuning_by_id(finetuning_id))
        return list(view.records)

    def workload_logs(self) -> str:
        """Everything under the job-runner's job directories (logs, configs)."""
        texts = []
        for path in (self.data / "jobs").rglob("*"):
            if path.is_file():
                try:
                    texts.append(path.read_text(errors="replace"))
                except OSError:
                    continue
        return "\n".join(texts)


def start_finetuning(
    tmp: Path, openai: OpenAIServer, *, api_key: str | None = "sk-test-key", **own: Any
) -> Finetuning:
    """Job-runner + finetuning + Envoy in `tmp`; `own` overrides FinetuningSettings."""
    provider = FineTuningProvider.register(openai, step_seconds=0.2, file_processing_seconds=0.1)
    common = CommonSettings(data_dir=tmp, auth_secret=TEST_SECRET)
    harness = Harness(tmp)
    wired = start_local_jobrunner(harness, tmp, common)
    own.setdefault("trainer_python", sys.executable)
    own.setdefault("poll_interval_seconds", 0.1)
    own.setdefault("provider_base_url", openai.base_url)
    settings = FinetuningSettings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'ft.db'}",
        provider_api_key=api_key,
        **own,
    )
    harness.start_app("finetuning", harness.loop.run(build_finetuning(wired, settings)))
    harness.start_envoy()
    return Finetuning(harness, tmp, provider, openai, settings, wired)
