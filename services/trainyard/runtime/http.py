"""Helpers for REST-facing RPCs behind Envoy: HTTP status overrides and exact JSON bodies."""

from __future__ import annotations

import contextvars
import functools
import json
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from google.api import httpbody_pb2
from google.protobuf import descriptor_pool

from trainyard.api.options.v1 import options_pb2

log = structlog.get_logger("trainyard.http")

HTTP_STATUS_HEADER = "x-http-status"
#: The request header Envoy sets to the client's address, overwriting any a client sent.
CLIENT_ADDRESS_HEADER = "x-trainyard-client-address"


@dataclass(frozen=True)
class HttpStatuses:
    """The REST statuses of one RPC, from its method options (options.proto)."""

    success: int = 200
    validation: int = 400
    #: The documented statuses for particular outcomes (http_statuses), code -> when.
    others: dict[int, str] = field(default_factory=dict)


@functools.cache
def http_statuses_of(full_method: str) -> HttpStatuses:
    """The HttpStatuses of `/pkg.Service/Method` from the contract (defaults when unknown)."""
    service, _, method = full_method.lstrip("/").partition("/")
    try:
        desc = descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
    except KeyError:
        return HttpStatuses()
    opts = desc.GetOptions()
    return HttpStatuses(
        success=opts.Extensions[options_pb2.success_http_status] or 200,
        validation=opts.Extensions[options_pb2.validation_http_status] or 400,
        others={s.code: s.when for s in opts.Extensions[options_pb2.http_statuses]},
    )


#: The statuses of the RPC the current task serves (bound by the interceptor).
_CURRENT: contextvars.ContextVar[HttpStatuses | None] = contextvars.ContextVar(
    "trainyard_http_statuses", default=None
)


def bind_http_statuses(statuses: HttpStatuses) -> contextvars.Token[HttpStatuses | None]:
    return _CURRENT.set(statuses)


def documented(status: int, statuses: HttpStatuses | None = None) -> bool:
    """Whether the current RPC's contract lists `status` as one of its outcomes."""
    statuses = statuses or _CURRENT.get() or HttpStatuses()
    return status in statuses.others


async def set_http_status(context: grpc.aio.ServicerContext[Any, Any], status: int) -> None:
    """Answer with `status` (e.g. 202 while the same model trains) instead of the RPC's success
    status: only a status the RPC's `http_statuses` option documents is sent; any other is
    logged and dropped, so the OpenAPI document stays true. Must be called before the first
    response message; gRPC clients see it as initial metadata."""
    if not 100 <= status <= 599:
        raise ValueError(f"not an HTTP status: {status}")
    if not documented(status):
        log.warning("http.undocumented_status", status=status)
        return
    await context.send_initial_metadata(((HTTP_STATUS_HEADER, str(status)),))


def json_body(value: Any) -> httpbody_pb2.HttpBody:
    """An HttpBody carrying `value` as compact JSON: the exact REST response body."""
    return httpbody_pb2.HttpBody(
        content_type="application/json",
        data=json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(),
    )
