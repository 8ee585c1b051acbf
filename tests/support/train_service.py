"""A training orchestrator double for workload tests: a grpc.aio TrainService on port 0 that
records what UpdateTrainStatus and LogTrainMessage receive (with the authorization metadata)
and can refuse them with a chosen code. Every other RPC is the generated base's:
UNIMPLEMENTED."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format

from trainyard.api.orchestrator.v1 import messages_pb2 as msgs
from trainyard.api.orchestrator.v1 import service_pb2_grpc as svc


@dataclass
class Received:
    method: str
    request: dict[str, Any]
    authorization: str


@dataclass
class RecordingTrainService(svc.TrainServiceServicer):
    """Records UpdateTrainStatus and LogTrainMessage; `refuse` makes them fail with that code.

    Tests that build partial servicers like this one (or serve the bare generated base) silence
    mypy's `abstract` at the call: mypy-protobuf's stub marks every RPC abstract, while the
    generated class at run time answers UNIMPLEMENTED for each one not overridden, which is
    exactly what those tests rely on."""

    received: list[Received] = field(default_factory=list)
    refuse: grpc.StatusCode | None = None

    async def _record(self, method: str, request: Any, context: Any) -> None:
        md = dict(context.invocation_metadata() or ())
        self.received.append(
            Received(
                method,
                json_format.MessageToDict(request, preserving_proto_field_name=True),
                str(md.get("authorization", "")),
            )
        )
        if self.refuse is not None:
            await context.abort(self.refuse, f"refused by the test ({self.refuse.name})")

    async def UpdateTrainStatus(
        self, request: msgs.UpdateTrainStatusRequest, context: Any
    ) -> msgs.UpdateTrainStatusResponse:
        await self._record("UpdateTrainStatus", request, context)
        return msgs.UpdateTrainStatusResponse()

    async def LogTrainMessage(
        self, request: msgs.LogTrainMessageRequest, context: Any
    ) -> msgs.LogTrainMessageResponse:
        await self._record("LogTrainMessage", request, context)
        return msgs.LogTrainMessageResponse()


async def serve(servicer: svc.TrainServiceServicer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    svc.add_TrainServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@dataclass
class RelayTrainService(RecordingTrainService):
    """Also the relay's RPCs, over in-memory `inputs` (uri -> [(name, bytes)]) and `blobs`
    (key -> bytes). Each method named in `fail_once` answers its first call UNAVAILABLE (a
    ReadTrainInput after streaming half of its first file), as an orchestrator restarting would;
    `calls` counts the calls of each method."""

    inputs: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    fail_once: set[str] = field(default_factory=set)
    calls: dict[str, int] = field(default_factory=dict)

    async def _count(self, method: str, context: Any, *, abort_now: bool = True) -> bool:
        self.calls[method] = self.calls.get(method, 0) + 1
        failing = method in self.fail_once
        self.fail_once.discard(method)
        if failing and abort_now:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting (the test)")
        return failing

    async def ReadTrainInput(self, request: msgs.ReadTrainInputRequest, context: Any) -> Any:
        failing = await self._count("ReadTrainInput", context, abort_now=False)
        if request.uri not in self.inputs:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not one of its inputs")
        for name, data in self.inputs[request.uri]:
            yield msgs.ReadTrainInputResponse(file=msgs.ReadTrainInputFile(name=name, uri=""))
            yield msgs.ReadTrainInputResponse(data=data[: len(data) // 2])
            if failing:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting (the test)")
            yield msgs.ReadTrainInputResponse(data=data[len(data) // 2 :])

    async def ReadTrainBlob(self, request: msgs.ReadTrainBlobRequest, context: Any) -> Any:
        await self._count("ReadTrainBlob", context)
        if request.key not in self.blobs:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such blob")
        data = self.blobs[request.key]
        for start in range(0, len(data), 1 << 20):
            yield msgs.ReadTrainBlobResponse(data=data[start : start + (1 << 20)])

    async def WriteTrainBlob(self, request_iterator: Any, context: Any) -> Any:
        key, data = "", b""
        async for message in request_iterator:
            key = key or message.key
            data += message.data
        await self._count("WriteTrainBlob", context)
        self.blobs[key] = data
        return msgs.WriteTrainBlobResponse(size=len(data), sha256=hashlib.sha256(data).hexdigest())

    async def DeleteTrainBlobs(self, request: msgs.DeleteTrainBlobsRequest, context: Any) -> Any:
        await self._count("DeleteTrainBlobs", context)
        for key in [k for k in self.blobs if k.startswith(request.prefix)]:
            del self.blobs[key]
        return msgs.DeleteTrainBlobsResponse()
