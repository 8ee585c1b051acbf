"""gRPC servicers of the orchestrator: proto <-> registry mapping only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from trainyard.api.auth.v1 import messages_pb2 as auth_msgs
from trainyard.api.auth.v1 import service_pb2_grpc as auth_grpc
from trainyard.api.orchestrator.v1 import messages_pb2 as msgs
from trainyard.api.orchestrator.v1 import service_pb2_grpc as svc
from trainyard.orchestrator.registry import ModelRegistry
from trainyard.orchestrator.tokens import issue_token, parse_token_request
from trainyard.runtime.auth import TokenAuthority, current_identity, current_user
from trainyard.runtime.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from trainyard.runtime.http import CLIENT_ADDRESS_HEADER
from trainyard.runtime.ratelimit import FailureLimiter
from trainyard.runtime.untrusted import struct_to_dict

Context = grpc.aio.ServicerContext[Any, Any]


def _job_model(expected_kind: str = "job") -> str:
    ident = current_identity()
    if ident.kind != expected_kind or not ident.model_id:
        raise PermissionDenied("this job token does not name a model", reason="JOB_TOKEN_REQUIRED")
    return ident.model_id


class TrainServicer(svc.TrainServiceServicer):
    """Model Bazaar train API. Train/retrain RPCs arrive with the job-runner integration."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    async def GetTrainStatus(
        self, request: msgs.GetTrainStatusRequest, context: Context
    ) -> msgs.GetTrainStatusResponse:
        status = await self._registry.train_status(request.model_id, current_user())
        return msgs.GetTrainStatusResponse(
            status=status.status, errors=status.errors, warnings=status.warnings
        )

    async def UpdateTrainStatus(
        self, request: msgs.UpdateTrainStatusRequest, context: Context
    ) -> msgs.UpdateTrainStatusResponse:
        metadata = (
            # The REST body is {status, metadata}: metadata starts one JSON level down.
            struct_to_dict(request.metadata, field="metadata", base_depth=1)
            if request.HasField("metadata")
            else None
        )
        await self._registry.update_status(_job_model(), request.status, metadata)
        return msgs.UpdateTrainStatusResponse()

    async def LogTrainMessage(
        self, request: msgs.LogTrainMessageRequest, context: Context
    ) -> msgs.LogTrainMessageResponse:
        await self._registry.add_message(_job_model(), request.level, request.message)
        return msgs.LogTrainMessageResponse()


def _source_address(md: Mapping[str, str | bytes], context: Context) -> str:
    """The caller's address: the one Envoy sets (x-trainyard-client-address, from the peer or
    the trusted x-forwarded-for entry), else the gRPC peer of a direct call."""
    forwarded = md.get(CLIENT_ADDRESS_HEADER)
    if isinstance(forwarded, str) and forwarded.strip():
        return forwarded.strip()
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer


class AuthServicer(auth_grpc.AuthServiceServicer):
    def __init__(
        self,
        authority: TokenAuthority,
        clients: Mapping[str, str],
        failures: FailureLimiter | None = None,
    ) -> None:
        self._authority = authority
        self._clients = clients
        self._failures = failures or FailureLimiter(30, 60.0)

    async def IssueToken(
        self, request: auth_msgs.IssueTokenRequest, context: Context
    ) -> auth_msgs.IssueTokenResponse:
        md = {k: v for k, v in context.invocation_metadata() or ()}
        authorization = md.get("authorization")
        _, client_id, secret = parse_token_request(
            request.http_body.content_type,
            request.http_body.data,
            authorization if isinstance(authorization, str) else None,
        )
        keys = (f"client:{client_id}", f"source:{_source_address(md, context)}")
        wait = self._failures.retry_after(keys)
        if wait:
            raise ResourceExhausted(
                f"too many failed token requests for this client or address; try again in {wait} s",
                reason="TOO_MANY_FAILED_ATTEMPTS",
                retry_after_seconds=wait,
            )
        try:
            token, ttl = issue_token(self._authority, self._clients, client_id, secret)
        except Unauthenticated:
            self._failures.record_failure(keys)
            raise
        return auth_msgs.IssueTokenResponse(access_token=token, token_type="Bearer", expires_in=ttl)
