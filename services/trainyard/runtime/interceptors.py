"""The one server interceptor: request id, auth by contract policy, validation, error mapping, logs.

It wraps each method handler, so identity is bound in the same task that runs the servicer, and
every failure leaves as a proper gRPC status: DomainError -> its code with google.rpc details,
NotImplementedError -> UNIMPLEMENTED, anything else -> INTERNAL with a correlation id (logged with
the traceback; never sent to the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import grpc
import structlog
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError, Message
from prometheus_client import Counter, Histogram

from trainyard.api.options.v1 import options_pb2
from trainyard.runtime.auth import (
    Identity,
    TokenAuthority,
    bearer_from_metadata,
    bind_identity,
    reset_identity,
)
from trainyard.runtime.errors import (
    DomainError,
    FieldViolation,
    Internal,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unimplemented,
)
from trainyard.runtime.http import (
    HTTP_STATUS_HEADER,
    HttpStatuses,
    bind_http_statuses,
    documented,
    http_statuses_of,
)
from trainyard.runtime.untrusted import MAX_JSON_DEPTH

log = structlog.get_logger("trainyard.rpc")

Validator = Callable[[Any], Iterable[FieldViolation]]

RPC_TOTAL = Counter("trainyard_rpc_total", "RPCs served", ["service", "method", "code"])
RPC_SECONDS = Histogram("trainyard_rpc_seconds", "RPC handling time", ["service", "method"])

_PUBLIC_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


_POLICIES: dict[str, int] = {}


def auth_policy_of(full_method: str) -> int:
    """The AuthPolicy of `/pkg.Service/Method` from the contract (default USER). Remembered
    per method once the method is found in the descriptor pool (a contract does not change
    while the process runs)."""
    policy = _POLICIES.get(full_method)
    if policy is not None:
        return policy
    service, _, method = full_method.lstrip("/").partition("/")
    if service in _PUBLIC_SERVICES:
        return options_pb2.AUTH_POLICY_PUBLIC
    try:
        desc = descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
    except KeyError:
        return options_pb2.AUTH_POLICY_USER
    policy = desc.GetOptions().Extensions[options_pb2.auth_policy] or options_pb2.AUTH_POLICY_USER
    if len(_POLICIES) < 10_000:  # bounded: method names come from callers
        _POLICIES[full_method] = policy
    return policy


_OK_COUNTERS: dict[tuple[str, str], Any] = {}
_TIMERS: dict[tuple[str, str], Any] = {}


def _ok_counter(service: str, method: str) -> Any:
    """RPC_TOTAL's OK child for a method (labels() takes a lock and builds a key each call)."""
    child = _OK_COUNTERS.get((service, method))
    if child is None:
        child = _OK_COUNTERS[(service, method)] = RPC_TOTAL.labels(service, method, "OK")
    return child


def _timer(service: str, method: str) -> Any:
    child = _TIMERS.get((service, method))
    if child is None:
        child = _TIMERS[(service, method)] = RPC_SECONDS.labels(service, method)
    return child


def authorize(policy: int, ident: Identity | None) -> None:
    """Raise the right error when `ident` may not call an RPC of `policy`."""
    if policy == options_pb2.AUTH_POLICY_PUBLIC:
        return
    if ident is None:
        raise Unauthenticated(
            "missing credentials: send `Authorization: Bearer <token>` "
            "(get one with `trainyard token --user NAME` or POST /connect/token)"
        )
    if policy == options_pb2.AUTH_POLICY_JOB and ident.kind != "job":
        raise PermissionDenied(
            "this route is for training jobs only and needs a job token",
            reason="JOB_TOKEN_REQUIRED",
        )
    if policy == options_pb2.AUTH_POLICY_SERVICE and ident.kind != "service":
        raise PermissionDenied(
            "this route is internal to Trainyard services", reason="SERVICE_TOKEN_REQUIRED"
        )
    if policy == options_pb2.AUTH_POLICY_USER and ident.kind == "job":
        raise PermissionDenied("job tokens may only report on their own training")
    if policy == options_pb2.AUTH_POLICY_USER and ident.kind != "user":
        # A service acts for a user only through the SERVICE RPCs that name the owner.
        raise PermissionDenied("this route needs a user token", reason="USER_TOKEN_REQUIRED")


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        authority: TokenAuthority,
        validators: Mapping[str, Validator] | None = None,
    ) -> None:
        self._authority = authority
        self._validators = dict(validators or {})

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        metadata = {k: v for k, v in (handler_call_details.invocation_metadata or ())}
        return _wrap(handler, _Call(self, method, metadata))

    async def identify(self, policy: int, metadata: Mapping[str, str | bytes]) -> Identity | None:
        token = bearer_from_metadata(metadata) if policy != options_pb2.AUTH_POLICY_PUBLIC else None
        if policy == options_pb2.AUTH_POLICY_PUBLIC:
            return None
        if token is None:
            authorize(policy, None)
            return None
        ident = await self._authority.verify_async(token)
        authorize(policy, ident)
        return ident

    def validate(self, request: Any) -> None:
        if not isinstance(request, Message):
            return
        validator = self._validators.get(request.DESCRIPTOR.full_name)
        if validator is None:
            return
        violations = list(validator(request))
        if violations:
            # A validator may word the whole message (a public API's documented text).
            summarize = getattr(validator, "summary", None)
            if callable(summarize):
                message = str(summarize(violations))
            else:
                message = "invalid request: " + "; ".join(
                    f"{v.field}: {v.description}" for v in violations
                )
            raise InvalidArgument(message, violations=violations)


def http_status_for(exc: DomainError, statuses: HttpStatuses) -> int | None:
    """The `x-http-status` an error leaves with, from the RPC's contract: its validation status
    for field violations (when not 400), or the particular status the error names when the RPC
    documents it. An undocumented one is logged and not sent (the code's mapping applies)."""
    if exc.http_status is not None and exc.http_status != 400:
        if documented(exc.http_status, statuses) or (
            isinstance(exc, InvalidArgument) and exc.http_status == statuses.validation
        ):
            return exc.http_status
        log.warning("rpc.undocumented_http_status", status=exc.http_status, reason=exc.reason)
    if isinstance(exc, InvalidArgument) and exc.violations and statuses.validation != 400:
        return statuses.validation
    return None


class _Call:
    """Per-RPC state shared by the wrapped behaviours."""

    def __init__(self, owner: ServiceInterceptor, method: str, metadata: dict[str, Any]) -> None:
        self.owner = owner
        self.method = method
        self.metadata = metadata
        service, _, name = method.lstrip("/").rpartition("/")
        self.service = service.rsplit(".", 1)[-1]
        self.name = name
        self.statuses = http_statuses_of(method)
        raw_id = metadata.get("x-request-id")
        self.request_id = (
            raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        ) or uuid.uuid4().hex

    @contextlib.asynccontextmanager
    async def guard(
        self, context: grpc.aio.ServicerContext[Any, Any], request: Any
    ) -> AsyncIterator[None]:
        """Around the servicer: identity and log context in, every failure out as a status."""
        started = time.perf_counter()
        token = None
        try:
            structlog.contextvars.bind_contextvars(request_id=self.request_id, rpc=self.method)
            ident = await self.owner.identify(auth_policy_of(self.method), self.metadata)
            if ident is not None:
                structlog.contextvars.bind_contextvars(principal=ident.subject)
            token = bind_identity(ident)
            bind_http_statuses(self.statuses)
            if isinstance(request, _Undecodable):
                raise request.error()
            if request is not None:
                self.owner.validate(request)
            yield
            _ok_counter(self.service, self.name).inc()
        except (GeneratorExit, KeyboardInterrupt, SystemExit, asyncio.CancelledError):
            raise
        except BaseException as exc:  # mapped to a status; fail() always raises
            await self.fail(context, exc)
        finally:
            _timer(self.service, self.name).observe(time.perf_counter() - started)
            if token is not None:
                reset_identity(token)

    async def fail(self, context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        if isinstance(exc, NotImplementedError):
            exc = Unimplemented(f"{self.method} is not implemented yet", reason="NOT_IMPLEMENTED")
        if not isinstance(exc, DomainError):
            correlation = uuid.uuid4().hex[:12]
            log.error("rpc.crashed", correlation_id=correlation, exc_info=exc)
            exc = Internal(
                f"internal error (correlation id {correlation}); the operators can find it in "
                "the service log",
                metadata={"correlation_id": correlation},
            )
        RPC_TOTAL.labels(self.service, self.name, exc.code.name).inc()
        log.info("rpc.error", code=exc.code.name, message=exc.message)
        metadata = exc.trailing_metadata()
        status = http_status_for(exc, self.statuses)
        if status is not None:
            metadata = (*metadata, (HTTP_STATUS_HEADER, str(status)))
        await context.abort(exc.code, exc.message, trailing_metadata=metadata)

    async def succeed(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Send the RPC's success status (e.g. 201) unless the servicer already sent its initial
        metadata (a documented other status such as 202, chosen by the servicer)."""
        if self.statuses.success == 200:
            return
        with contextlib.suppress(grpc.aio.UsageError):
            await context.send_initial_metadata(((HTTP_STATUS_HEADER, str(self.statuses.success)),))


class _Undecodable:
    """Stands in for a request message the deserializer could not decode (bad wire bytes, or
    nested deeper than protobuf's limit of 100 levels): the guard answers INVALID_ARGUMENT
    instead of gRPC's UNKNOWN with the decoder's exception text."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            f"the request could not be decoded as {self.type_name}: it is malformed or nested "
            f"too deeply (JSON values may nest at most {MAX_JSON_DEPTH} levels)",
            reason="UNDECODABLE_REQUEST",
        )


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)
    type_name = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "the request message")

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, RecursionError, ValueError):
            return _Undecodable(type_name)

    return decode


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, _Undecodable):
            raise request.error()
        yield request


async def _call_servicer(inner: Any, request: Any, context: Any) -> Any:
    # Unimplemented generated methods are plain functions that raise NotImplementedError.
    result = inner(request, context)
    return await result if inspect.isawaitable(result) else result


def _wrap(handler: Any, call: _Call) -> Any:
    """The handler with the same cardinality, its behaviour run inside `call.guard`."""
    unary_request = not handler.request_streaming
    options = {
        "request_deserializer": _tolerant(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        inner: Any = handler.unary_stream or handler.stream_stream

        async def streaming(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async with call.guard(context, request if unary_request else None):
                incoming = request if unary_request else _checked_stream(request)
                first = True
                async for item in await _call_servicer(inner, incoming, context):
                    if first:
                        await call.succeed(context)
                        first = False
                    yield item

        if unary_request:
            return grpc.unary_stream_rpc_method_handler(streaming, **options)
        return grpc.stream_stream_rpc_method_handler(streaming, **options)

    inner_unary: Any = handler.unary_unary or handler.stream_unary

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async with call.guard(context, request if unary_request else None):
            incoming = request if unary_request else _checked_stream(request)
            result = await _call_servicer(inner_unary, incoming, context)
            await call.succeed(context)
            return result

    if unary_request:
        return grpc.unary_unary_rpc_method_handler(unary, **options)
    return grpc.stream_unary_rpc_method_handler(unary, **options)
