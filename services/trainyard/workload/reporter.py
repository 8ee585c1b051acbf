"""Reports from inside a workload to the training orchestrator, with the job's token.

`status()` and `progress()` call UpdateTrainStatus, `log()` calls LogTrainMessage, over gRPC
with `authorization: Bearer <job token>`. The platform gives a workload its token in
TRAINYARD_JOB_TOKEN and the orchestrator's address in TRAINYARD_ORCHESTRATOR_ADDRESS. Without
either (a job run by hand, a /training-jobs pipeline) the reporter is offline: every report is
one line on stderr, which the job's log keeps. A refused report raises `ReportError` naming
the RPC, the gRPC code and the orchestrator's message; nothing is dropped silently.

An orchestrator that is away for a moment (restarting, say) does not fail the training: a
progress or in_progress report that cannot be delivered is written to stderr and the training
goes on, while the reports that end it (a final status, an error) are retried with backoff
for up to `final_timeout` seconds. Even when the final report is lost, the orchestrator ends
the model from the job's exit (and finds the model artifact of a trainer that exited 0).

The orchestrator stores a model's metadata whole on each update, so the reporter sends all the
metadata reported so far with every call (progress sits in it as `progress`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self, TextIO, TypeVar

import grpc
import tenacity
from google.protobuf import json_format, struct_pb2

from trainyard.api.orchestrator.v1 import messages_pb2 as msgs
from trainyard.api.orchestrator.v1 import service_pb2_grpc as svc
from trainyard.workload.config import platform_settings

T = TypeVar("T")

#: The workload's job token (a JWT naming its model).
JOB_TOKEN_VAR = "TRAINYARD_JOB_TOKEN"
#: host:port of the training orchestrator's gRPC server.
ORCHESTRATOR_ADDRESS_VAR = "TRAINYARD_ORCHESTRATOR_ADDRESS"
#: What UpdateTrainStatus accepts.
STATUSES = ("starting", "in_progress", "complete", "failed", "stopped")
#: What LogTrainMessage accepts.
LEVELS = ("warning", "error")
#: Statuses that end a training: their reports are retried until delivered or given up on.
FINAL_STATUSES = ("complete", "failed", "stopped")
#: Codes worth another try: the orchestrator is away or slow, not refusing.
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ReportError(Exception):
    """The orchestrator refused or never got a report."""

    def __init__(self, rpc: str, code: grpc.StatusCode, details: str, address: str) -> None:
        hint = ""
        if code == grpc.StatusCode.UNIMPLEMENTED:
            hint = f" (the orchestrator at {address} does not implement {rpc})"
        elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            hint = f" (is the orchestrator at {address} reachable? {ORCHESTRATOR_ADDRESS_VAR})"
        elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            hint = f" (check the job token in {JOB_TOKEN_VAR})"
        super().__init__(f"{rpc} failed: {code.name}: {details}{hint}")
        self.rpc = rpc
        self.code = code
        self.details = details


class JobCallbacks:
    """What every workload callback client shares: a job token, a lazily opened channel to the
    service that follows the job, essential calls retried with backoff on transient codes for up
    to `final_timeout` seconds, other undelivered calls written to stderr, a refusal raised as
    ReportError. `Reporter` (the orchestrator's trainers) and the clustering trainer's reporter
    build on it."""

    def __init__(
        self,
        address: str | None,
        token: str | None,
        *,
        timeout: float = 10.0,
        final_timeout: float = 300.0,
        stream: TextIO | None = None,
    ) -> None:
        if bool(address) != bool(token):
            missing = ORCHESTRATOR_ADDRESS_VAR if not address else JOB_TOKEN_VAR
            raise ValueError(f"{missing} is not set: a reporter needs an address and a token")
        self.address = address or ""
        self._token = token or ""
        self.timeout = timeout
        self.final_timeout = final_timeout
        self._stream = stream
        self._channel: grpc.aio.Channel | None = None

    @property
    def connected(self) -> bool:
        """Whether reports go to a service (else only to stderr)."""
        return bool(self.address)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
            self._closed()

    def _closed(self) -> None:
        """Drop what was built on the channel (subclasses' stubs)."""

    @property
    def auth(self) -> tuple[tuple[str, str]]:
        """The call metadata that carries the job token."""
        return (("authorization", f"Bearer {self._token}"),)

    def _retrying(self, seconds: float) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, grpc.aio.AioRpcError) and e.code() in _TRANSIENT
            ),
            wait=tenacity.wait_exponential(multiplier=0.5, max=10.0),
            stop=tenacity.stop_after_delay(seconds),
            reraise=True,
        )

    async def retried(self, rpc: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` (a whole call, a streaming one included, started again from scratch
        each time) until it succeeds, retrying transient codes for up to final_timeout seconds;
        a refusal is raised as ReportError."""
        try:
            async for retry in self._retrying(self.final_timeout):
                with retry:
                    return await attempt()
        except grpc.aio.AioRpcError as exc:
            raise ReportError(rpc, exc.code(), exc.details() or "", self.address) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(self, rpc: str, method: Any, request: Any, *, essential: bool) -> Any:
        """Deliver one report (or ask one question: the response is returned). An essential
        call is retried on transient codes for up to final_timeout seconds; any other that
        meets a transient code goes to stderr only, and None is returned."""

        async def once() -> Any:
            return await method(
                request,
                metadata=self.auth,
                timeout=self.timeout,
                wait_for_ready=True,  # ride out a moment of the service (re)starting
            )

        retrying = self._retrying(self.final_timeout if essential else 0)
        try:
            async for attempt in retrying:
                with attempt:
                    return await once()
        except grpc.aio.AioRpcError as exc:
            if not essential and exc.code() in _TRANSIENT:
                self._offline(
                    "undelivered", {"rpc": rpc, "code": exc.code().name, "request": _json(request)}
                )
                return None
            raise ReportError(rpc, exc.code(), exc.details() or "", self.address) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _offline(self, kind: str, body: Mapping[str, Any]) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write(f"trainyard-report {kind} {json.dumps(body, sort_keys=True)}\n")
        stream.flush()


class Reporter(JobCallbacks):
    """One workload's reports. Use as `async with Reporter.from_env() as report: ...`."""

    def __init__(
        self,
        address: str | None,
        token: str | None,
        *,
        timeout: float = 10.0,
        final_timeout: float = 300.0,
        stream: TextIO | None = None,
    ) -> None:
        super().__init__(
            address, token, timeout=timeout, final_timeout=final_timeout, stream=stream
        )
        self._metadata: dict[str, Any] = {}
        self._stub: svc.TrainServiceStub | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Reporter:
        """Connected with TRAINYARD_ORCHESTRATOR_ADDRESS and TRAINYARD_JOB_TOKEN (else the
        platform section of the config `load_config` read), offline without both; ValueError
        when only one is set (a platform mistake worth stopping for)."""
        env = os.environ if environ is None else environ
        address = env.get(ORCHESTRATOR_ADDRESS_VAR) or None
        token = env.get(JOB_TOKEN_VAR) or None
        if address is None and token is None:
            # The orchestrator's trainers get both in their config (see workload.config).
            platform = platform_settings()
            address = platform.get("orchestrator_address") or None
            token = platform.get("job_token") or None
        return cls(address, token, **kwargs)

    def _closed(self) -> None:
        self._stub = None

    # ---- reports ---------------------------------------------------------------------------

    async def status(self, status: str, metadata: Mapping[str, Any] | None = None) -> None:
        """Set the model's status; `metadata` is merged into what was reported before."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        if metadata is not None:
            self._metadata.update(metadata)
        await self._update(status)

    async def progress(self, fraction: float, phase: str = "") -> None:
        """How far the training is (0..1) and in which phase; the status becomes in_progress."""
        if not (isinstance(fraction, int | float) and math.isfinite(fraction)):
            raise ValueError(f"progress must be a number from 0 to 1, not {fraction!r}")
        if not 0 <= fraction <= 1:
            raise ValueError(f"progress must be from 0 to 1, not {fraction}")
        self._metadata["progress"] = {"fraction": float(fraction), "phase": phase}
        await self._update("in_progress")

    async def log(self, level: str, message: str) -> None:
        """Record a warning or an error on the model (what its owner sees in the status)."""
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}; one of {', '.join(LEVELS)}")
        if not message.strip():
            raise ValueError("a log message must not be empty")
        if not self.connected:
            self._offline("log", {"level": level, "message": message})
            return
        request = msgs.LogTrainMessageRequest(level=level, message=message)
        await self._call(
            "LogTrainMessage", self._service().LogTrainMessage, request, essential=level == "error"
        )

    # ---------------------------------------------------------------------------------------

    async def _update(self, status: str) -> None:
        if not self.connected:
            self._offline("status", {"status": status, "metadata": self._metadata})
            return
        request = msgs.UpdateTrainStatusRequest(status=status)
        if self._metadata:
            request.metadata.CopyFrom(json_format.ParseDict(self._metadata, struct_pb2.Struct()))
        await self._call(
            "UpdateTrainStatus",
            self._service().UpdateTrainStatus,
            request,
            essential=status in FINAL_STATUSES,
        )

    def _service(self) -> svc.TrainServiceStub:
        if self._stub is None:
            self._stub = svc.TrainServiceStub(self.channel())
        return self._stub


def _json(request: Any) -> Any:
    return json_format.MessageToDict(request, preserving_proto_field_name=True)


#: The least time between two progress reports of the same phase (ThrottledProgress).
PROGRESS_INTERVAL_S = 0.5


class ThrottledProgress:
    """Progress from a training thread to the Reporter on the event loop, at most one report
    per PROGRESS_INTERVAL_S (and on each new phase)."""

    def __init__(self, reporter: Reporter, loop: asyncio.AbstractEventLoop) -> None:
        self._reporter = reporter
        self._loop = loop
        self._last = 0.0
        self._phase = ""
        self._lock = threading.Lock()
        self._pending: list[concurrent.futures.Future[None]] = []

    def __call__(self, fraction: float, phase: str) -> None:
        now = time.monotonic()
        with self._lock:
            if phase == self._phase and now - self._last < PROGRESS_INTERVAL_S:
                return
            self._last, self._phase = now, phase
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(
                asyncio.run_coroutine_threadsafe(
                    self._reporter.progress(min(max(fraction, 0.0), 1.0), phase), self._loop
                )
            )

    async def drain(self) -> None:
        for future in list(self._pending):
            await asyncio.wrap_future(future)
