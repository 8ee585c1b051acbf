"""gRPC servicers of the orchestrator: proto <-> registry mapping only."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import grpc
from google.api import httpbody_pb2

from trainyard.api.auth.v1 import messages_pb2 as auth_msgs
from trainyard.api.auth.v1 import service_pb2_grpc as auth_grpc
from trainyard.api.orchestrator.v1 import messages_pb2 as msgs
from trainyard.api.orchestrator.v1 import service_pb2_grpc as svc
from trainyard.orchestrator.feedback import Association, ImplicitEvent, Upvote
from trainyard.orchestrator.inference import Models, NdbReference
from trainyard.orchestrator.registry import ModelRegistry, ModelView
from trainyard.orchestrator.retrieval import Retrieval
from trainyard.orchestrator.token_feedback import TokenFeedbackStore
from trainyard.orchestrator.tokens import issue_token, parse_token_request
from trainyard.orchestrator.training import Trainings
from trainyard.runtime.auth import TokenAuthority, current_identity, current_user
from trainyard.runtime.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from trainyard.runtime.http import CLIENT_ADDRESS_HEADER, json_body
from trainyard.runtime.ratelimit import FailureLimiter
from trainyard.runtime.untrusted import struct_to_dict

Context = grpc.aio.ServicerContext[Any, Any]


def _job_model(expected_kind: str = "job") -> str:
    ident = current_identity()
    if ident.kind != expected_kind or not ident.model_id:
        raise PermissionDenied("this job token does not name a model", reason="JOB_TOKEN_REQUIRED")
    return ident.model_id


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _model_info(model: ModelView) -> msgs.ModelInfo:
    metadata = dict(model.metadata)
    progress = metadata.pop("progress", None)
    info = msgs.ModelInfo(
        model_id=model.id,
        model_name=model.name,
        type=model.type,
        access=model.access,
        train_status=model.status,
        username=model.owner,
        base_model_id=model.base_model_id or "",
        publish_date=_rfc3339(model.created_at),
        origin=str(model.train_config.get("kind") or model.type),
    )
    info.attributes.update(metadata)
    if isinstance(progress, dict):
        fraction = progress.get("fraction")
        info.progress.fraction = float(fraction) if isinstance(fraction, int | float) else 0.0
        info.progress.phase = str(progress.get("phase") or "")
    elif model.status == "complete":
        info.progress.fraction = 1.0
    else:
        info.progress.SetInParent()
    return info


class TrainServicer(svc.TrainServiceServicer):
    """The Model Bazaar train API: proto <-> trainings/registry mapping only."""

    def __init__(self, registry: ModelRegistry, trainings: Trainings, models: Models) -> None:
        self._registry = registry
        self._trainings = trainings
        self._models = models

    async def _start(self, kind: str, request: Any) -> str:
        return await self._trainings.start(kind, request, current_user())

    async def TrainNdb(
        self, request: msgs.TrainNdbRequest, context: Context
    ) -> msgs.TrainNdbResponse:
        return msgs.TrainNdbResponse(model_id=await self._start("ndb", request))

    async def RetrainNdb(
        self, request: msgs.RetrainNdbRequest, context: Context
    ) -> msgs.RetrainNdbResponse:
        return msgs.RetrainNdbResponse(model_id=await self._start("ndb-retrain", request))

    async def TrainNlpToken(
        self, request: msgs.TrainNlpTokenRequest, context: Context
    ) -> msgs.TrainNlpTokenResponse:
        return msgs.TrainNlpTokenResponse(model_id=await self._start("nlp-token", request))

    async def TrainNlpText(
        self, request: msgs.TrainNlpTextRequest, context: Context
    ) -> msgs.TrainNlpTextResponse:
        return msgs.TrainNlpTextResponse(model_id=await self._start("nlp-text", request))

    async def TrainNlpDatagen(
        self, request: msgs.TrainNlpDatagenRequest, context: Context
    ) -> msgs.TrainNlpDatagenResponse:
        return msgs.TrainNlpDatagenResponse(model_id=await self._start("nlp-datagen", request))

    async def RetrainNlpToken(
        self, request: msgs.RetrainNlpTokenRequest, context: Context
    ) -> msgs.RetrainNlpTokenResponse:
        return msgs.RetrainNlpTokenResponse(
            model_id=await self._start("nlp-token-retrain", request)
        )

    async def GetTrainStatus(
        self, request: msgs.GetTrainStatusRequest, context: Context
    ) -> msgs.GetTrainStatusResponse:
        status = await self._registry.train_status(request.model_id, current_user())
        return msgs.GetTrainStatusResponse(
            status=status.status, errors=status.errors, warnings=status.warnings
        )

    async def GetTrainLogs(
        self, request: msgs.GetTrainLogsRequest, context: Context
    ) -> msgs.GetTrainLogsResponse:
        logs = await self._trainings.logs(request.model_id, current_user())
        return msgs.GetTrainLogsResponse(
            logs=[msgs.AllocationLogs(**entry) for entry in logs], http_body=json_body(logs)
        )

    async def FollowTrainLogs(
        self, request: msgs.FollowTrainLogsRequest, context: Context
    ) -> AsyncIterator[msgs.FollowTrainLogsResponse]:
        async for message in self._trainings.follow(
            request.model_id, current_user(), max(request.from_sequence, 0)
        ):
            yield message

    async def GetTrainReport(
        self, request: msgs.GetTrainReportRequest, context: Context
    ) -> msgs.GetTrainReportResponse:
        model = await self._registry.readable(request.model_id, current_user())
        raw = await self._models.report(model)
        response = msgs.GetTrainReportResponse(
            http_body=httpbody_pb2.HttpBody(content_type="application/json", data=raw)
        )
        value = json.loads(raw)
        if isinstance(value, dict):
            response.report.update(value)
        return response

    async def StopTraining(
        self, request: msgs.StopTrainingRequest, context: Context
    ) -> msgs.StopTrainingResponse:
        await self._trainings.stop(request.model_id, current_user())
        return msgs.StopTrainingResponse()

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

    # ---- a workload's data, relayed (job tokens only; see workload_data.py) ------------------

    async def ReadTrainInput(
        self, request: msgs.ReadTrainInputRequest, context: Context
    ) -> AsyncIterator[msgs.ReadTrainInputResponse]:
        async for item in self._trainings.data.read_input(_job_model(), request.uri):
            if isinstance(item, bytes):
                yield msgs.ReadTrainInputResponse(data=item)
            else:
                yield msgs.ReadTrainInputResponse(
                    file=msgs.ReadTrainInputFile(name=item.name, uri=item.uri)
                )

    async def ReadTrainBlob(
        self, request: msgs.ReadTrainBlobRequest, context: Context
    ) -> AsyncIterator[msgs.ReadTrainBlobResponse]:
        async for chunk in self._trainings.data.read_blob(_job_model(), request.key):
            yield msgs.ReadTrainBlobResponse(data=chunk)

    async def WriteTrainBlob(
        self, request_iterator: AsyncIterator[msgs.WriteTrainBlobRequest], context: Context
    ) -> msgs.WriteTrainBlobResponse:
        model_id = _job_model()
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.key:
            raise InvalidArgument("the first message must name the blob's key", reason="NO_KEY")

        async def chunks() -> AsyncIterator[bytes]:
            if first.data:
                yield first.data
            async for message in request_iterator:
                if message.data:
                    yield message.data

        stored = await self._trainings.data.write_blob(model_id, first.key, chunks())
        return msgs.WriteTrainBlobResponse(size=stored.size, sha256=stored.sha256)

    async def DeleteTrainBlobs(
        self, request: msgs.DeleteTrainBlobsRequest, context: Context
    ) -> msgs.DeleteTrainBlobsResponse:
        await self._trainings.data.delete_blobs(_job_model(), request.prefix)
        return msgs.DeleteTrainBlobsResponse()


def _plain(value: Any) -> Any:
    """A metadata value as JSON a Struct holds (anything else as its text)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _reference(ref: NdbReference, into: msgs.Reference) -> None:
    into.id = ref.id
    into.doc_id = ref.doc_id
    into.text = ref.text
    into.source = ref.source
    into.score = float(ref.score)
    into.metadata.update(_plain(dict(ref.metadata)))


class ModelServicer(svc.ModelServiceServicer):
    """Model management, predictions and ndb search/feedback: proto <-> domain mapping only."""

    def __init__(
        self,
        registry: ModelRegistry,
        trainings: Trainings,
        models: Models,
        retrieval: Retrieval,
        token_feedback: TokenFeedbackStore | None = None,
    ) -> None:
        self._registry = registry
        self._trainings = trainings
        self._models = models
        self._retrieval = retrieval
        self._token_feedback = token_feedback

    async def ListModels(
        self, request: msgs.ListModelsRequest, context: Context
    ) -> msgs.ListModelsResponse:
        page = await self._registry.list(
            current_user(),
            page_size=request.page_size,
            page_token=request.page_token,
            type=request.type,
            status=request.status,
        )
        return msgs.ListModelsResponse(
            models=[_model_info(m) for m in page.models], next_page_token=page.next_page_token
        )

    async def GetModel(self, request: msgs.GetModelRequest, context: Context) -> msgs.ModelInfo:
        return _model_info(await self._registry.readable(request.model_id, current_user()))

    async def DeleteModel(
        self, request: msgs.DeleteModelRequest, context: Context
    ) -> msgs.DeleteModelResponse:
        await self._trainings.delete(request.model_id, current_user())
        self._models.forget(request.model_id)
        return msgs.DeleteModelResponse()

    async def SetModelAccess(
        self, request: msgs.SetModelAccessRequest, context: Context
    ) -> msgs.SetModelAccessResponse:
        await self._registry.set_access(request.model_id, current_user(), request.access)
        return msgs.SetModelAccessResponse()

    async def GetModelPermissions(
        self, request: msgs.GetModelPermissionsRequest, context: Context
    ) -> msgs.GetModelPermissionsResponse:
        user = current_user()
        model = await self._registry.readable(request.model_id, user)
        owner = model.owner == user
        return msgs.GetModelPermissionsResponse(read=True, write=owner, owner=owner)

    async def DownloadModel(
        self, request: msgs.DownloadModelRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        model = await self._registry.readable(request.model_id, current_user())
        manifest = await self._models.manifest(model)
        async for body in _zip_bodies(self._models.zipped(model, manifest)):
            yield body

    async def Predict(self, request: msgs.PredictRequest, context: Context) -> msgs.PredictResponse:
        model = await self._registry.readable(request.model_id, current_user())
        queries = [request.query] if request.HasField("query") else list(request.queries)
        top_k = request.top_k if request.HasField("top_k") else 5
        results = await self._models.predict(model, queries, top_k)
        response = msgs.PredictResponse(http_body=json_body({"predictions": results}))
        for result in results:
            prediction = response.predictions.add(query=str(result.get("query", "")))
            for label, score in result.get("predicted_classes", ()):
                prediction.predicted_classes.add(label=str(label), score=float(score))
            prediction.tokens.extend(str(t) for t in result.get("tokens", ()))
            prediction.predicted_tags.extend(str(t) for t in result.get("predicted_tags", ()))
        return response

    # ---- datagen and token feedback (issue 11) ----

    async def GetGeneratedData(
        self, request: msgs.GetGeneratedDataRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        model = await self._registry.readable(request.model_id, current_user())
        manifest = await self._models.generated_manifest(model)
        async for body in _zip_bodies(self._models.zipped(model, manifest)):
            yield body

    async def AddTokenFeedback(
        self, request: msgs.AddTokenFeedbackRequest, context: Context
    ) -> msgs.AddTokenFeedbackResponse:
        user = current_user()
        model = await self._registry.readable(request.model_id, user)
        known, _ = await self._models.token_tags(model)
        assert self._token_feedback is not None, "the app wires the feedback store"
        count = await self._token_feedback.add(
            model.id, user, list(request.tokens), list(request.tags), known
        )
        return msgs.AddTokenFeedbackResponse(feedback_count=count)

    # ---- ndb search and feedback (request fields checked by validation.py) -------------------

    async def Search(self, request: msgs.SearchRequest, context: Context) -> msgs.SearchResponse:
        queries = [request.query] if request.HasField("query") else list(request.queries)
        top_k = request.top_k if request.HasField("top_k") else 5
        constraints = (
            struct_to_dict(request.constraints, field="constraints", base_depth=1)
            if request.HasField("constraints")
            else None
        )
        results = await self._retrieval.search(
            request.model_id, current_user(), queries, top_k, constraints or None
        )
        response = msgs.SearchResponse()
        for query, refs in zip(queries, results, strict=True):
            result = response.results.add(query=query)
            for ref in refs:
                _reference(ref, result.references.add())
        return response

    async def Upvote(self, request: msgs.UpvoteRequest, context: Context) -> msgs.UpvoteResponse:
        upvotes = [Upvote(p.query_text, p.reference_id) for p in request.text_id_pairs]
        recorded = await self._retrieval.upvote(request.model_id, current_user(), upvotes)
        return msgs.UpvoteResponse(recorded=recorded)

    async def Associate(
        self, request: msgs.AssociateRequest, context: Context
    ) -> msgs.AssociateResponse:
        pairs = [Association(p.source, p.target) for p in request.text_pairs]
        recorded = await self._retrieval.associate(request.model_id, current_user(), pairs)
        return msgs.AssociateResponse(recorded=recorded)

    async def ImplicitFeedback(
        self, request: msgs.ImplicitFeedbackRequest, context: Context
    ) -> msgs.ImplicitFeedbackResponse:
        event = ImplicitEvent(request.query_text, request.reference_id, request.event)
        recorded = await self._retrieval.implicit(request.model_id, current_user(), event)
        return msgs.ImplicitFeedbackResponse(recorded=recorded)

    async def ListSources(
        self, request: msgs.ListSourcesRequest, context: Context
    ) -> msgs.ListSourcesResponse:
        page = await self._retrieval.sources(
            request.model_id,
            current_user(),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return msgs.ListSourcesResponse(
            sources=[
                msgs.SourceInfo(doc_id=s.doc_id, source=s.source, chunk_count=int(s.chunk_count))
                for s in page.sources
            ],
            next_page_token=page.next_page_token,
        )


async def _zip_bodies(chunks: AsyncIterator[bytes]) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """A streamed zip as HttpBody messages (the first one names the content type)."""
    first = True
    async for chunk in chunks:
        if first:
            yield httpbody_pb2.HttpBody(content_type="application/zip", data=chunk)
            first = False
        else:
            yield httpbody_pb2.HttpBody(data=chunk)


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
