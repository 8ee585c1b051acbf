"""metav1.Status objects, shaped like the ones kube-apiserver sends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._util import JSON


def qualified(resource: str, group: str) -> str:
    """'jobs' + 'batch' -> 'jobs.batch'; core resources have no group suffix."""
    return f"{resource}.{group}" if group else resource


def status_object(
    *,
    code: int,
    reason: str,
    message: str,
    details: JSON | None = None,
    success: bool = False,
) -> JSON:
    status: JSON = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if success else "Failure",
    }
    if message:
        status["message"] = message
    if reason:
        status["reason"] = reason
    if details is not None:
        status["details"] = details
    status["code"] = code
    return status


def _details(name: str, group: str, kind: str, **extra: Any) -> JSON:
    details: JSON = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details.update(extra)
    return details


@dataclass
class ApiError(Exception):
    """An error the HTTP layer turns into a Status response."""

    code: int
    reason: str
    message: str
    details: JSON | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def status(self) -> JSON:
        return status_object(
            code=self.code, reason=self.reason, message=self.message, details=self.details
        )


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified(resource, group)} "{name}" not found',
        _details(name, group, resource),
    )


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(resource, group)} "{name}" already exists',
        _details(name, group, resource),
    )


@dataclass
class Cause:
    """One field error of a 422 Invalid response."""

    field: str
    reason: str  # FieldValueRequired, FieldValueInvalid, FieldValueNotSupported, ...
    message: str

    def as_json(self) -> JSON:
        return {"reason": self.reason, "message": self.message, "field": self.field}


def invalid(kind: str, group: str, name: str, causes: list[Cause]) -> ApiError:
    summary = ", ".join(f"{cause.field}: {cause.message}" for cause in causes)
    if len(causes) > 1:
        summary = f"[{summary}]"
    return ApiError(
        422,
        "Invalid",
        f'{qualified(kind, group)} "{name}" is invalid: {summary}',
        _details(name, group, kind, causes=[cause.as_json() for cause in causes]),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def route_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def method_not_allowed() -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        {},
    )


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)
