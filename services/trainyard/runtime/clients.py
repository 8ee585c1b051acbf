"""The one way a Trainyard service calls another over gRPC.

`ServiceClients` holds one channel per target (addresses from settings), opened on first use
and closed on shutdown, with an interceptor that

- attaches `authorization: Bearer <token>` from a `Credentials` callable (a service token
  minted by the caller's TokenAuthority, refreshed before it expires; or a fixed job token for
  a workload) unless the call already carries its own (a call made for a user or a model);
- applies a default deadline to calls with a single response when the caller gave none
  (streams run as long as the caller reads them);
- retries a unary call that failed with UNAVAILABLE, with exponential backoff and jitter,
  when that is safe: the method is listed as idempotent, or its request carries a non-empty
  `idempotency_key` (the callee then answers a repeat with the first outcome). Anything else
  fails on the first UNAVAILABLE: a SubmitJob without a key may have started a job.

Why tenacity rather than gRPC's service-config retry policy: the policy is per method, so it
cannot tell a SubmitJob with an idempotency key from one without; tenacity is also what every
other retry in the code base uses (one mechanism, one place to read backoff), and it logs each
retry. All attempts of one call share its deadline. A retried call's response is returned
as such: its initial and trailing metadata are not available to the caller. Streams are not
retried (a half-read stream cannot be replayed transparently): their callers resume with a
sequence number, as `follow_jobs` and the log readers do.

This module is pure grpc + tenacity (no database, no service code), so workload code may use
it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

if TYPE_CHECKING:
    from trainyard.runtime.auth import TokenAuthority

log = structlog.get_logger("trainyard.clients")

#: A source of bearer tokens, called for every call (cheap: tokens are cached by the source).
Credentials = Callable[[], str]
#: Called before each retry with (method, code of the failure, attempt that failed).
RetryHook = Callable[[str, grpc.StatusCode, int], None]
StubT = TypeVar("StubT")

#: Default deadline of a call with a single response, in seconds.
DEFAULT_DEADLINE_SECONDS = 15.0

#: Methods safe to repeat: reads, and writes whose repeat changes nothing (cancelling a
#: cancelled job; resolving an upload). Full gRPC method names.
IDEMPOTENT_METHODS = frozenset(
    {
        "/trainyard.api.jobrunner.v1.JobRunnerService/GetJob",
        "/trainyard.api.jobrunner.v1.JobRunnerService/ListJobs",
        "/trainyard.api.jobrunner.v1.JobRunnerService/CancelJob",
        "/trainyard.api.upload.v1.UploadService/ResolveUpload",
        "/trainyard.api.upload.v1.UploadService/GetUpload",
        "/trainyard.api.upload.v1.UploadService/ListUploads",
        "/trainyard.api.orchestrator.v1.TrainService/UpdateTrainStatus",
    }
)

#: Channel options: reconnect quickly after a peer restarts (gRPC's default waits 1 s, growing
#: to 120 s, and fails calls fast meanwhile, which would use up every retry on a dead socket).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
)


@dataclass(frozen=True)
class RetryPolicy:
    """How UNAVAILABLE is retried: at most `attempts` tries in all, waiting `initial_backoff`
    seconds doubling up to `max_backoff` (plus up to `initial_backoff` of jitter) in between."""

    attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"invalid retry policy {self!r}")


class ServiceToken:
    """Service tokens of `service`, minted by its TokenAuthority and reused until half their
    lifetime has passed (a token never expires in flight)."""

    def __init__(self, authority: TokenAuthority, service: str, ttl: int = 3600) -> None:
        self._authority = authority
        self._service = service
        self._ttl = ttl
        self._token = ""
        self._until = 0.0

    def __call__(self) -> str:
        now = time.monotonic()
        if now >= self._until:
            self._token = self._authority.mint_service(self._service, ttl=self._ttl)
            self._until = now + self._ttl / 2
        return self._token


def fixed_token(token: str) -> Credentials:
    """Credentials of a workload: the job token the platform gave it."""
    if not token:
        raise ValueError("a job token must not be empty")
    return lambda: token


# grpc-stubs makes the interceptor bases generic; at run time they are plain classes.
if TYPE_CHECKING:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor


def _method_name(details: grpc.aio.ClientCallDetails) -> str:
    method: str | bytes = details.method
    return method.decode() if isinstance(method, bytes) else method


class _CallPolicy:
    """What every intercepted call gets: the token, the default deadline, retries."""

    def __init__(
        self,
        credentials: Credentials,
        deadline: float,
        idempotent: frozenset[str],
        retry: RetryPolicy,
        on_retry: RetryHook | None,
    ) -> None:
        self._credentials = credentials
        self.deadline = deadline
        self._idempotent = idempotent
        self._retry = retry
        self._on_retry = on_retry

    def details(
        self, details: grpc.aio.ClientCallDetails, timeout: float | None
    ) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata.from_tuple(tuple(details.metadata or ()))
        if "authorization" not in metadata:
            metadata.add("authorization", f"Bearer {self._credentials()}")
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )

    def retryable(self, method: str, request: Any) -> bool:
        return method in self._idempotent or bool(getattr(request, "idempotency_key", ""))

    async def unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = _method_name(client_call_details)
        timeout = client_call_details.timeout
        timeout = self.deadline if timeout is None else timeout
        if not self.retryable(method, request) or self._retry.attempts == 1:
            return await continuation(self.details(client_call_details, timeout), request)
        ends = time.monotonic() + timeout

        async def attempt() -> Any:
            # Every attempt gets what is left of the call's deadline, never a fresh one.
            remaining = max(0.0, ends - time.monotonic())
            call = await continuation(self.details(client_call_details, remaining), request)
            return await call  # the response, or the call's RpcError raised here

        retrying = AsyncRetrying(
            retry=retry_if_exception(_unavailable),
            # No retry whose backoff would end past the call's deadline: fail with the
            # UNAVAILABLE in hand rather than a DEADLINE_EXCEEDED after a pointless wait.
            stop=stop_after_attempt(self._retry.attempts) | stop_before_delay(timeout),
            wait=wait_exponential_jitter(
                multiplier=self._retry.initial_backoff,
                max=self._retry.max_backoff,
                jitter=self._retry.initial_backoff,
            ),
            before_sleep=self._logger(method),
            reraise=True,  # the caller sees the last RpcError, not tenacity's RetryError
        )
        return await retrying(attempt)

    def _logger(self, method: str) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else grpc.StatusCode.UNKNOWN
            log.warning(
                "client.retry",
                method=method,
                code=code.name,
                attempt=state.attempt_number,
                retry_in_seconds=round(state.upcoming_sleep, 3),
            )
            if self._on_retry is not None:
                self._on_retry(method, code, state.attempt_number)

        return before_sleep


# grpc.aio files an interceptor under the first of these kinds it is an instance of, so one
# object cannot serve several: one small interceptor per kind, sharing the policy.
class _UnaryUnaryInterceptor(_UnaryUnary):
    def __init__(self, policy: _CallPolicy) -> None:
        self._policy = policy

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await self._policy.unary(continuation, client_call_details, request)


class _UnaryStreamInterceptor(_UnaryStream):
    def __init__(self, policy: _CallPolicy) -> None:
        self._policy = policy

    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(
            self._policy.details(client_call_details, client_call_details.timeout), request
        )


class _StreamUnaryInterceptor(_StreamUnary):
    def __init__(self, policy: _CallPolicy) -> None:
        self._policy = policy

    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        timeout = client_call_details.timeout
        timeout = self._policy.deadline if timeout is None else timeout
        return await continuation(
            self._policy.details(client_call_details, timeout), request_iterator
        )


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE


class ServiceClients:
    """Channels to other services, by target name ("upload", "jobrunner", ...)."""

    def __init__(
        self,
        addresses: Mapping[str, str],
        credentials: Credentials,
        *,
        deadline: float = DEFAULT_DEADLINE_SECONDS,
        idempotent: Iterable[str] = IDEMPOTENT_METHODS,
        retry: RetryPolicy | None = None,
        on_retry: RetryHook | None = None,
    ) -> None:
        if deadline <= 0:
            raise ValueError("the default deadline must be positive")
        self._addresses = dict(addresses)
        policy = _CallPolicy(
            credentials, deadline, frozenset(idempotent), retry or RetryPolicy(), on_retry
        )
        self._interceptors: list[Any] = [  # grpc-stubs types these as "cast or ignore"
            _UnaryUnaryInterceptor(policy),
            _UnaryStreamInterceptor(policy),
            _StreamUnaryInterceptor(policy),
        ]
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, target: str) -> grpc.aio.Channel:
        """The channel to `target`, opened on first use (no connection before the first call)."""
        channel = self._channels.get(target)
        if channel is None:
            try:
                address = self._addresses[target]
            except KeyError:
                raise KeyError(f"no address configured for {target!r}") from None
            channel = grpc.aio.insecure_channel(
                address,
                options=CHANNEL_OPTIONS,
                interceptors=self._interceptors,
            )
            self._channels[target] = channel
        return channel

    def stub(self, target: str, stub_class: Callable[[grpc.aio.Channel], StubT]) -> StubT:
        """A generated stub (`*ServiceStub`) on the channel to `target`."""
        return stub_class(self.channel(target))

    async def close(self) -> None:
        """Close every channel (calls in flight are cancelled)."""
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close(grace=None)
