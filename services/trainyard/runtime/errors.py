"""Domain errors carry their gRPC status; one interceptor turns them into rich google.rpc errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "trainyard.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path (e.g. `data.supervised_files[0].path`) and what to fix."""

    field: str
    description: str


class DomainError(Exception):
    """Base of errors a user can cause or act on. Subclasses fix the gRPC code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        violations: Iterable[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
        http_status: int | None = None,
        retry_after_seconds: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.violations = tuple(violations)
        self.metadata = dict(metadata or {})
        #: A particular HTTP status for this outcome; sent only when the RPC's contract lists it
        #: (http_statuses option), checked by the interceptor.
        self.http_status = http_status
        #: When to try again: a google.rpc.RetryInfo detail and a `retry-after` header.
        self.retry_after_seconds = retry_after_seconds
        #: Response headers of this error (sent as trailing metadata, which Envoy turns into
        #: headers of the REST answer), e.g. `deprecation` on a deprecated route.
        self.headers = dict(headers or {})

    def to_status_proto(self) -> status_pb2.Status:
        details: list[any_pb2.Any] = []
        info = any_pb2.Any()
        info.Pack(
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
            )
        )
        details.append(info)
        if self.violations:
            bad = any_pb2.Any()
            bad.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in self.violations
                    ]
                )
            )
            details.append(bad)
        if self.retry_after_seconds is not None:
            retry = any_pb2.Any()
            retry.Pack(
                error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(seconds=self.retry_after_seconds)
                )
            )
            details.append(retry)
        # grpc.StatusCode values are (number, name); the number is google.rpc.Code's.
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        # grpcio-status packs the status the way its from_call (and other gRPC clients)
        # read it back: the grpc-status-details-bin trailer.
        md: list[tuple[str, str | bytes]] = list(
            rpc_status.to_status(self.to_status_proto()).trailing_metadata
        )
        if self.retry_after_seconds is not None:
            md.append(("retry-after", str(self.retry_after_seconds)))
        md.extend((name.lower(), value) for name, value in self.headers.items())
        return tuple(md)


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unimplemented(DomainError):
    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class Internal(DomainError):
    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"


def status_from_rpc_error(err: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status carried by an RpcError (a failed call), if any, for clients and
    tests; None when it carries none or one that contradicts the call's code or message."""
    # from_call reads code(), details() and trailing_metadata(), which every RpcError a call
    # raises has (sync errors are grpc.Call; AioRpcError is not, but has the same methods).
    call = cast(grpc.Call, err)
    try:
        status: status_pb2.Status | None = rpc_status.from_call(call)
    except ValueError:  # details that disagree with the status line are not to be trusted
        return None
    return status
