"""A training orchestrator double for workload tests: a grpc.aio TrainService on port 0 that
records what UpdateTrainStatus and LogTrainMessage receive (with the authorization metadata)
and can refuse them with a chosen code. Every other RPC is the generated base's:
UNIMPLEMENTED."""

from __future__ import annotations

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
