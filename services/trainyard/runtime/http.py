"""Helpers for REST-facing RPCs behind Envoy: HTTP status overrides and exact JSON bodies."""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.api import httpbody_pb2

HTTP_STATUS_HEADER = "x-http-status"
#: The request header Envoy sets to the client's address, overwriting any a client sent.
CLIENT_ADDRESS_HEADER = "x-trainyard-client-address"


async def set_http_status(context: grpc.aio.ServicerContext[Any, Any], status: int) -> None:
    """Ask Envoy's Lua filter to answer with `status` (e.g. 201, 202) instead of 200. Must be
    called before the first response message; gRPC clients see it as initial metadata."""
    if not 100 <= status <= 599:
        raise ValueError(f"not an HTTP status: {status}")
    await context.send_initial_metadata(((HTTP_STATUS_HEADER, str(status)),))


def json_body(value: Any) -> httpbody_pb2.HttpBody:
    """An HttpBody carrying `value` as compact JSON: the exact REST response body."""
    return httpbody_pb2.HttpBody(
        content_type="application/json",
        data=json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(),
    )
