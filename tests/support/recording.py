"""Recording servicers: every RPC of a contract records what it received, so contract tests can
prove which RPC a REST route reached and which fields Envoy bound. Test hooks (request headers):
`x-test-http-status: N` makes the RPC send x-http-status N; `x-test-fail: 422` makes it fail with
INVALID_ARGUMENT and that HTTP status."""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from trainyard.gateway.descriptors import SERVICES, service_descriptor
from trainyard.runtime.auth import current_identity
from trainyard.runtime.errors import FieldViolation, InvalidArgument
from trainyard.runtime.http import HTTP_STATUS_HEADER, json_body
from trainyard.runtime.server import Registration


@dataclass
class Call:
    method: str
    requests: list[Any]
    metadata: dict[str, str]
    principal: str | None

    @property
    def request(self) -> Any:
        return self.requests[0]


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()

    def last(self) -> Call:
        with self.lock:
            assert self.calls, "no RPC was received"
            return self.calls[-1]


def _response_for(method: MethodDescriptor) -> Any:
    cls = message_factory.GetMessageClass(method.output_type)
    # A class built from the descriptor at run time: its fields are unknown to the type checker.
    response: Any = cls()
    if "http_body" in cls.DESCRIPTOR.fields_by_name:
        response.http_body.CopyFrom(json_body({"rpc": method.name}))
    return response


def _make_handler(method: MethodDescriptor, recorder: Recorder) -> Any:
    async def hooks(context: grpc.aio.ServicerContext[Any, Any], md: dict[str, str]) -> None:
        if md.get("x-test-fail") == "violation":  # the RPC's contract picks the status
            raise InvalidArgument("test failure", violations=[FieldViolation("field", "is wrong")])
        if "x-test-fail" in md:
            raise InvalidArgument(
                "test failure",
                violations=[FieldViolation("field", "is wrong")],
                http_status=int(md["x-test-fail"]),
            )
        if "x-test-http-status" in md:
            # Raw, past the contract check of set_http_status: this tests the Envoy mechanism.
            await context.send_initial_metadata(((HTTP_STATUS_HEADER, md["x-test-http-status"]),))

    def record(requests: list[Any], context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
        md = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        try:
            principal: str | None = current_identity().subject
        except Exception:
            principal = None
        recorder.add(Call(method.full_name, requests, md, principal))
        return md

    if method.client_streaming:

        async def stream_in(self: Any, request_iterator: Any, context: Any) -> Any:
            requests = [r async for r in request_iterator]
            await hooks(context, record(requests, context))
            return _response_for(method)

        return stream_in
    if method.server_streaming:

        async def stream_out(self: Any, request: Any, context: Any) -> Any:
            await hooks(context, record([request], context))
            yield _response_for(method)

        return stream_out

    async def unary(self: Any, request: Any, context: Any) -> Any:
        await hooks(context, record([request], context))
        return _response_for(method)

    return unary


def recording_registrations(service: str, recorder: Recorder) -> list[Registration]:
    """Registrations of every public gRPC service of process `service`, all recording."""
    regs = []
    for full_name in SERVICES[service]:
        desc = service_descriptor(full_name)
        package = full_name.rsplit(".", 1)[0]
        grpc_module = importlib.import_module(f"{package}.service_pb2_grpc")
        base = getattr(grpc_module, f"{desc.name}Servicer")
        attrs = {m.name: _make_handler(m, recorder) for m in desc.methods}
        servicer_cls = type(f"Recording{desc.name}", (base,), attrs)
        add = getattr(grpc_module, f"add_{desc.name}Servicer_to_server")
        regs.append(Registration(add, servicer_cls(), full_name))
    return regs
