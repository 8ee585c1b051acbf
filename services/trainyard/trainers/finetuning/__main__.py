"""Entry point of the finetuning workload: ask the finetuning service for the work (with the job
token), run it (`trainyard.trainers.finetuning.run`), and report each change back.

The job's own config holds only `finetuning_id` and the platform section (callback_address,
job_token): the connection URI with its password and the provider key come from the service's
GetFinetuningWork, so they are stored in no job spec. Exit codes: 0 when the provider's job
ended (whatever its outcome, reported) or the finetuning had already ended; 1 on a failure
(reported as the finetuning's error when the service can be told); 2 on a bad config.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import grpc

from trainyard.api.finetuning.v1 import messages_pb2 as msgs
from trainyard.api.finetuning.v1 import service_pb2_grpc as svc
from trainyard.trainers.finetuning import FinetuningError
from trainyard.trainers.finetuning import run as run_finetuning
from trainyard.workload import ConfigError, ReportError, load_config
from trainyard.workload.config import platform_settings
from trainyard.workload.reporter import JobCallbacks

PROG = "trainyard.trainers.finetuning"
_FIELDS = ("status", "provider_file_id", "provider_job_id", "model_id", "error")


def progress_request(update: Mapping[str, Any]) -> msgs.ReportFinetuningProgressRequest:
    """The library's report (see the package docstring) as a ReportFinetuningProgress."""
    request = msgs.ReportFinetuningProgressRequest()
    for field in _FIELDS:
        value = update.get(field)
        if value is not None:
            setattr(request, field, str(value))
    if "error" in update and update["error"] is None:
        request.error = ""
    result = update.get("evaluation")
    metadata = update.get("metadata") or {}
    problem = metadata.get("evaluation", {}) if isinstance(metadata, Mapping) else {}
    if isinstance(result, Mapping):
        evaluation = request.evaluation
        evaluation.status = "done"
        evaluation.total = int(result.get("total", 0))
        evaluation.execution_accuracy = float(result.get("execution_accuracy", 0.0))
        evaluation.exact_match = float(result.get("exact_match", 0.0))
        for failure in result.get("failures") or []:
            evaluation.failures.add(
                question=str(failure.get("question") or ""),
                golden_sql=str(failure.get("golden_sql") or ""),
                generated_sql=str(failure.get("generated_sql") or ""),
                error=str(failure.get("error") or ""),
            )
    elif isinstance(problem, Mapping) and problem.get("error"):
        request.evaluation.status = "failed"
        request.evaluation.error = str(problem["error"])
    return request


class FinetuningCallbacks(JobCallbacks):
    """GetFinetuningWork and ReportFinetuningProgress with the job token."""

    _stub: svc.FinetuningServiceStub | None = None

    def _closed(self) -> None:
        self._stub = None

    def _service(self) -> svc.FinetuningServiceStub:
        if self._stub is None:
            self._stub = svc.FinetuningServiceStub(self.channel())
        return self._stub

    async def work(self) -> dict[str, Any]:
        response = await self._call(
            "GetFinetuningWork",
            self._service().GetFinetuningWork,
            msgs.GetFinetuningWorkRequest(),
            essential=True,
        )
        config: dict[str, Any] = json.loads(response.config_json)
        return config

    async def report(self, update: Mapping[str, Any]) -> None:
        await self._call(
            "ReportFinetuningProgress",
            self._service().ReportFinetuningProgress,
            progress_request(update),
            essential=True,
        )


async def run(environ: Mapping[str, str]) -> int:
    def say(message: str) -> None:
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)

    try:
        config = await load_config(environ)
    except ConfigError as exc:
        say(f"bad config: {exc}")
        return 2
    platform = platform_settings()
    address, token = platform.get("callback_address"), platform.get("job_token")
    if not address or not token or not isinstance(config.get("finetuning_id"), str):
        say("bad config: it needs finetuning_id and the platform's callback_address and job_token")
        return 2
    async with FinetuningCallbacks(address, token) as callbacks:
        try:
            work = await callbacks.work()
        except ReportError as exc:
            if exc.code == grpc.StatusCode.FAILED_PRECONDITION:
                say(f"nothing to do: {exc.details}")
                return 0
            say(f"cannot get the work: {exc}")
            return 1
        loop = asyncio.get_running_loop()

        def report(update: Mapping[str, Any]) -> None:
            # From the work's thread: each report is delivered, in order, before it goes on.
            asyncio.run_coroutine_threadsafe(callbacks.report(update), loop).result()

        try:
            await asyncio.to_thread(run_finetuning, work, report)
        except ReportError as exc:
            say(f"cannot report: {exc}")
            return 1
        except Exception as exc:
            user = isinstance(exc, FinetuningError)
            message = str(exc) if user else f"the finetuning workload failed: {exc}"
            say(f"failed: {message if user else f'{type(exc).__name__}: {exc}'}")
            try:
                await callbacks.report({"status": "failed", "error": message})
            except ReportError as report_exc:
                say(f"cannot report the failure either: {report_exc}")
            return 1
    say(f"finetuning {config['finetuning_id']} done")
    return 0


def main() -> int:
    return asyncio.run(run(os.environ))


if __name__ == "__main__":
    sys.exit(main())
