"""Field rules of the orchestrator's requests, checked once at the edge by the interceptor
(App.validators): each returns every violation at once. Rules that need state stay in the domain."""

from __future__ import annotations

from collections.abc import Mapping

from trainyard.api.orchestrator.v1 import messages_pb2 as msgs
from trainyard.orchestrator.registry import CALLBACK_STATUSES, MESSAGE_LEVELS
from trainyard.runtime.errors import FieldViolation
from trainyard.runtime.interceptors import Validator


def _update_train_status(request: msgs.UpdateTrainStatusRequest) -> list[FieldViolation]:
    if request.status in CALLBACK_STATUSES:
        return []
    allowed = ", ".join(CALLBACK_STATUSES)
    return [
        FieldViolation("status", f"unknown status {request.status!r}: must be one of {allowed}")
    ]


def _log_train_message(request: msgs.LogTrainMessageRequest) -> list[FieldViolation]:
    violations = []
    if request.level not in MESSAGE_LEVELS:
        violations.append(FieldViolation("level", "must be 'warning' or 'error'"))
    if not request.message.strip():
        violations.append(FieldViolation("message", "must not be empty"))
    return violations


VALIDATORS: Mapping[str, Validator] = {
    msgs.UpdateTrainStatusRequest.DESCRIPTOR.full_name: _update_train_status,
    msgs.LogTrainMessageRequest.DESCRIPTOR.full_name: _log_train_message,
}
