"""Entry point of the clustering workload: config -> reporter -> normalised data -> train ->
model artifact -> Completed (exit 0); a bad config exits 2, a failure is reported as Failed
with its reason and exits 1.

The config (written by the clustering service): experiment_id, model_id, language_code,
num_clusters, seed, llm (null, or {provider, base_url, api_key, model}: the provider settings
travel in the config, never in the environment), data_uri (the normalised utterances, JSON
Lines of data.Record), artifacts_uri + model_prefix (where the `model` artifact goes) and the
platform section (callback_address, job_token, relay) that `load_config` takes out for the
reporter. With `"relay": "clustering"` (as the service starts it) the workload touches no
storage: it reads its data through ReadTrainingData and uploads the model through UploadModel,
with its job token, so it runs as an unprivileged user or in a pod without credentials; without
it (a job run by hand) it reads data_uri and writes under artifacts_uri itself.
Statuses go to the clustering service's ReportTrainingStatus with the job token: the library
reports DataProcessing, TrainingStarted, Training and Trained as it works; this entry point
ModelUploading while it writes the artifact, then Completed with the metrics.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainyard.api.clustering.v1 import messages_pb2 as msgs
from trainyard.api.clustering.v1 import service_pb2_grpc as svc
from trainyard.blobs import storage_at
from trainyard.trainers.clustering.data import DataError, from_jsonl
from trainyard.workload import (
    ArtifactCorrupt,
    Artifacts,
    ConfigError,
    InputError,
    ReportError,
    fetch_inputs,
    load_config,
)
from trainyard.workload.config import platform_settings
from trainyard.workload.reporter import JobCallbacks

PROG = "trainyard.trainers.clustering"
MODEL_ARTIFACT = "model"
FINAL = ("Completed", "Failed")
#: The platform section's `relay` value that sends data and model through the service.
RELAY = "clustering"
UPLOAD_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Config:
    experiment_id: str
    model_id: str
    language_code: str
    num_clusters: int
    seed: int
    llm: dict[str, str] | None
    data_uri: str
    artifacts_uri: str
    model_prefix: str

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Config:
        problems = []
        strings = ("experiment_id", "model_id", "language_code", "data_uri", "artifacts_uri")
        for key in (*strings, "model_prefix"):
            if not isinstance(raw.get(key), str) or not raw.get(key):
                problems.append(f"{key} must be a non-empty string")
        for key in ("num_clusters", "seed"):
            if not isinstance(raw.get(key, 0), int) or raw.get(key, 0) < 0:
                problems.append(f"{key} must be an integer >= 0")
        llm = raw.get("llm")
        if llm is not None and (
            not isinstance(llm, dict) or not all(isinstance(v, str) for v in llm.values())
        ):
            problems.append("llm must be null or an object of strings")
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(
            experiment_id=raw["experiment_id"],
            model_id=raw["model_id"],
            language_code=raw["language_code"],
            num_clusters=int(raw.get("num_clusters", 0)),
            seed=int(raw.get("seed", 0)),
            llm=dict(llm) if llm else None,
            data_uri=raw["data_uri"],
            artifacts_uri=raw["artifacts_uri"],
            model_prefix=raw["model_prefix"],
        )


class StatusReporter(JobCallbacks):
    """ReportTrainingStatus calls with the job token (offline: lines on stderr)."""

    _stub: svc.ClusteringTrainingServiceStub | None = None

    @classmethod
    def from_platform(cls) -> StatusReporter:
        platform = platform_settings()
        return cls(platform.get("callback_address") or None, platform.get("job_token") or None)

    def _closed(self) -> None:
        self._stub = None

    def _service(self) -> svc.ClusteringTrainingServiceStub:
        if self._stub is None:
            self._stub = svc.ClusteringTrainingServiceStub(self.channel())
        return self._stub

    async def read_data(self, dest: Path) -> Path:
        """The training data, relayed by the clustering service into `dest`."""

        async def attempt() -> Path:
            with open(dest, "wb") as fh:  # noqa: ASYNC230 - chunks of a local file
                call: Any = self._service().ReadTrainingData(
                    msgs.ReadTrainingDataRequest(), metadata=self.auth, wait_for_ready=True
                )
                async for response in call:
                    fh.write(response.chunk)
            return dest

        return await self.retried("ReadTrainingData", attempt)

    async def upload_model(self, folder: Path) -> msgs.UploadModelResponse:
        """Every file under `folder` (links left out), relayed as the model artifact."""
        files = await asyncio.to_thread(_model_files, folder)

        async def messages() -> AsyncIterator[msgs.UploadModelRequest]:
            for path in files:
                name = path.relative_to(folder).as_posix()
                with open(path, "rb") as fh:  # noqa: ASYNC230 - chunks of a local file
                    chunk = fh.read(UPLOAD_CHUNK_BYTES)
                    yield msgs.UploadModelRequest(path=name, chunk=chunk)
                    while chunk := fh.read(UPLOAD_CHUNK_BYTES):
                        yield msgs.UploadModelRequest(chunk=chunk)

        async def attempt() -> msgs.UploadModelResponse:
            upload: Any = self._service().UploadModel  # an aio stub: it takes an async iterator
            response: msgs.UploadModelResponse = await upload(
                messages(), metadata=self.auth, wait_for_ready=True
            )
            return response

        return await self.retried("UploadModel", attempt)

    async def status(
        self,
        status: str,
        percent: float,
        *,
        metrics: list[tuple[str, float]] | None = None,
        error: str = "",
    ) -> None:
        request = msgs.ReportTrainingStatusRequest(
            status=status,
            percent=int(max(0.0, min(100.0, percent))),
            metrics=[msgs.ExperimentMetric(name=n, value=float(v)) for n, v in metrics or []],
            error=error,
        )
        if not self.connected:
            self._offline("status", {"status": status, "percent": request.percent})
            return
        await self._call(
            "ReportTrainingStatus",
            self._service().ReportTrainingStatus,
            request,
            essential=status in FINAL,
        )


def _model_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()]


def _library() -> Any:
    # The clustering library is this package itself; imported here so that the entry point's
    # module stays importable (and its config errors reportable) without the ML stack.
    return importlib.import_module("trainyard.trainers.clustering")


def _namer(library: Any, llm: dict[str, str] | None) -> Any:
    if not llm:
        return None
    return library.OpenAINamer(
        base_url=llm.get("base_url") or None,
        api_key=llm.get("api_key") or "",
        model=llm.get("model") or "gpt-4o-mini",
    )


async def _train(config: Config, reporter: StatusReporter, work: Path) -> list[tuple[str, float]]:
    library = _library()
    loop = asyncio.get_running_loop()
    relayed = platform_settings().get("relay") == RELAY
    if relayed and not reporter.connected:
        raise ConfigError("the config asks for relayed data but names no service or token")
    try:
        if relayed:
            data = await reporter.read_data(work / "data.jsonl")
        else:
            data = (await fetch_inputs([config.data_uri], work))[0].path
        records = from_jsonl(data.read_bytes())
    except (InputError, ValueError, KeyError) as exc:
        raise DataError(f"cannot read the training data: {exc}") from exc
    utterances = [library.Utterance(r.text, r.intent, r.source) for r in records]
    params = library.ClusteringParams(
        language_code=config.language_code, num_clusters=config.num_clusters, seed=config.seed
    )

    def report(status: str, percent: float) -> None:
        # From the training thread: each report is delivered, in order, before training goes on.
        # The library counts 0-100 up to Trained; storing the model is the last 10%.
        scaled = 0.9 * max(0.0, min(100.0, percent))
        asyncio.run_coroutine_threadsafe(reporter.status(status, scaled), loop).result()

    out = work / "model"
    out.mkdir()
    result = await asyncio.to_thread(
        library.train, utterances, params, out, report, _namer(library, config.llm)
    )
    await reporter.status("ModelUploading", 95)
    if relayed:
        await reporter.upload_model(out)
        return [(str(n), float(v)) for n, v in result.metrics]
    storage = storage_at(config.artifacts_uri)
    await storage.start()
    try:
        async with Artifacts(storage, config.model_prefix).writer(MODEL_ARTIFACT) as writer:
            for path in sorted(out.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    await writer.add_file(path.relative_to(out).as_posix(), path)
            await writer.commit({"kind": "clustering", "model_id": config.model_id})
    finally:
        await storage.close()
    return [(str(n), float(v)) for n, v in result.metrics]


async def run(environ: Mapping[str, str]) -> int:
    def say(message: str) -> None:
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)

    try:
        config = Config.parse(await load_config(environ))
    except ConfigError as exc:
        say(f"bad config: {exc}")
        return 2
    try:
        reporter = StatusReporter.from_platform()
    except ValueError as exc:
        say(str(exc))
        return 1
    async with reporter:
        try:
            with tempfile.TemporaryDirectory(prefix="clustering-", dir=os.getcwd()) as tmp:
                metrics = await _train(config, reporter, Path(tmp))
            await reporter.status("Completed", 100, metrics=metrics)
        except ReportError as exc:
            say(f"cannot report: {exc}")
            return 1
        except Exception as exc:
            user = isinstance(exc, DataError | ValueError | ArtifactCorrupt)
            message = str(exc) if user else f"{type(exc).__name__}: {exc}"
            say(f"failed: {message}")
            try:
                await reporter.status("Failed", 0, error=message)
            except ReportError as report_exc:
                say(f"cannot report the failure either: {report_exc}")
            return 1
    print(f"{PROG}: trained {config.model_id} (experiment {config.experiment_id})", flush=True)
    return 0


def main() -> int:
    return asyncio.run(run(os.environ))


if __name__ == "__main__":
    sys.exit(main())
