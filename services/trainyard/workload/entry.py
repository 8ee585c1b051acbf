"""The one skeleton of a trainer's entry point: `return await run_trainer(...)`.

Every trainer does the same around its own work: load and parse the config (a bad one exits
2), open the reporter, report in_progress, train and write its artifacts, report complete with
where the model artifact is, and exit 0; a failure is recorded on the model (an error, then
status failed) and exits 1, each outcome with one clear line on stderr. A refused report
(ReportError) exits 1 too, as nothing could be told. `user_errors` are failures whose message is
already written for the model's owner (bad data, too many classes): they are reported as they
are; any other exception is reported with its type, so it can be traced.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import json
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from trainyard.workload.artifacts import Artifacts
from trainyard.workload.config import ConfigError, load_config
from trainyard.workload.relay import storage_for
from trainyard.workload.reporter import Reporter, ReportError

#: The artifacts a trainer writes under models/<model_id>/: the model, and its report.
MODEL_ARTIFACT = "model"
REPORT_ARTIFACT = "report"

C = TypeVar("C")


@dataclass(frozen=True)
class Written:
    """Where the trainer's model artifact went: its manifest URI and version, and what else
    the model's attributes should say (reported with the complete status)."""

    where: str
    version: str
    attributes: Mapping[str, Any] | None = None


async def publish_model(
    reporter: Reporter,
    artifacts_uri: str,
    model_id: str,
    files: Mapping[str, bytes | Path],
    metadata: Mapping[str, Any],
    report: dict[str, Any],
) -> Written:
    """Write a trained model (`files`: bytes, or local files streamed) and then its report,
    which names the model version it describes, as the model's artifacts; progress says
    "writing". A killed trainer leaves no half-written version (artifacts commit last)."""
    await reporter.progress(0.0, "writing")
    storage = storage_for(artifacts_uri)
    await storage.start()
    try:
        artifacts = Artifacts(storage, f"models/{model_id}/")
        async with artifacts.writer(MODEL_ARTIFACT) as writer:
            for name, content in files.items():
                if isinstance(content, Path):
                    await writer.add_file(name, content)
                else:
                    await writer.add_bytes(name, content)
            manifest = await writer.commit(dict(metadata))
        report["artifact_version"] = manifest.version
        await artifacts.write(
            REPORT_ARTIFACT,
            {"report.json": json.dumps(report, indent=1, sort_keys=True).encode()},
        )
        where = artifacts.uri(MODEL_ARTIFACT)
    finally:
        await storage.close()
    await reporter.progress(1.0, "writing")
    return Written(where, manifest.version)


class Preload:
    """Imports a trainer's heavy libraries (NumPy, SciPy, scikit-learn: seconds of a start) in
    a thread from the moment it is made, while the config, the first report and the inputs
    travel (they wait on the platform, not on this CPU). Make it before `asyncio.run`; the
    trainer imports that module lazily, after `await preload.ready()`."""

    def __init__(self, module: str) -> None:
        self.module = module
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="preload")
        self._future: concurrent.futures.Future[ModuleType] = pool.submit(
            importlib.import_module, module
        )
        pool.shutdown(wait=False)

    async def ready(self) -> ModuleType:
        """The imported module (an import error raises here)."""
        return await asyncio.wrap_future(self._future)


async def run_trainer(
    prog: str,
    environ: Mapping[str, str],
    parse: Callable[[Mapping[str, Any]], C],
    train: Callable[[C, Reporter], Awaitable[Written]],
    *,
    user_errors: tuple[type[Exception], ...] = (),
) -> int:
    """Run one training as described above; the process's exit code."""

    def say(message: str) -> None:
        print(f"{prog}: {message}", file=sys.stderr, flush=True)

    try:
        config = parse(await load_config(environ))
    except ConfigError as exc:
        say(f"bad config: {exc}")
        return 2
    try:
        reporter = Reporter.from_env(environ)
    except ValueError as exc:
        say(str(exc))
        return 1
    async with reporter:
        try:
            await reporter.status("in_progress")
            written = await train(config, reporter)
            await reporter.status(
                "complete",
                {
                    **(written.attributes or {}),
                    "artifact": written.where,
                    "artifact_version": written.version,
                },
            )
        except ReportError as exc:
            say(f"cannot report: {exc}")
            return 1
        except Exception as exc:
            message = str(exc) if isinstance(exc, user_errors) else f"{type(exc).__name__}: {exc}"
            say(f"failed: {message}")
            try:
                await reporter.log("error", message)
                await reporter.status("failed")
            except (ReportError, ValueError) as report_exc:
                say(f"cannot report the failure either: {report_exc}")
            return 1
    print(f"{prog}: wrote {written.where} (version {written.version})", flush=True)
    return 0
