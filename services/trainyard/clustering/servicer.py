"""gRPC servicer of the clustering service: proto <-> Trainings / Published mapping only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import struct_pb2

from trainyard.api.clustering.v1 import messages_pb2 as msgs
from trainyard.api.clustering.v1 import service_pb2_grpc as svc
from trainyard.clustering.inference import PENDING, RUNNING, Published
from trainyard.clustering.store import COMPLETED, FAILED, ExperimentStore, ExperimentView
from trainyard.clustering.training import Trainings
from trainyard.runtime.auth import current_identity, current_user
from trainyard.runtime.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
)
from trainyard.runtime.http import json_body

Context = grpc.aio.ServicerContext[Any, Any]
BASE = "/sestekai-api/api/external/trainings"
NEW_TRAIN_PATH = f"{BASE}/train"


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def endpoints_of(model_id: str) -> list[str]:
    return [f"{BASE}/{model_id}/assign", f"{BASE}/{model_id}/clusters"]


def experiment_proto(view: ExperimentView, published: Published) -> msgs.Experiment:
    p = view.params
    message = view.status_name
    if view.status == FAILED and view.error:
        message = f"{message}: {view.error}"
    serving = (
        view.status == COMPLETED
        and view.model_prefix is not None
        and published.state(view.model_id, view.model_prefix) == RUNNING
    )
    return msgs.Experiment(
        id=view.id,
        name=view.model_id,
        description=view.product_name,
        status=view.status,
        statusMessage=message,
        percent=view.percent,
        trainingParams=msgs.TrainingParams(
            modelId=str(p.get("modelId", "")),
            productName=str(p.get("productName", "")),
            languageCode=str(p.get("languageCode", "")),
            dataSchema=str(p.get("dataSchema", "")),
            secondaryDataSchema=str(p.get("secondaryDataSchema", "")),
            numClusters=int(p.get("numClusters", 0)),
            llm=str(p.get("llm", "")),
            forceTrain=bool(p.get("forceTrain", False)),
        ),
        endpoints=endpoints_of(view.model_id) if serving else [],
        experimentMetrics=[
            msgs.ExperimentMetric(name=str(m["name"]), value=float(m["value"]))
            for m in view.metrics
        ],
        experimentDatasetMappings=[
            msgs.ExperimentDatasetMapping(
                datasetId=str(d["datasetId"]),
                experimentId=str(d["experimentId"]),
                datasetColumn=str(d["datasetColumn"]),
            )
            for d in view.datasets
        ],
        creationTime=_rfc3339(view.created_at),
        lastModificationTime=_rfc3339(view.updated_at),
    )


async def _chunks(requests: AsyncIterator[Any]) -> AsyncIterator[tuple[str, bytes]]:
    async for request in requests:
        yield request.http_body.content_type, request.http_body.data


class ClusteringServicer(svc.ClusteringTrainingServiceServicer):
    def __init__(
        self,
        store: ExperimentStore,
        trainings: Trainings,
        published: Published,
        *,
        max_assign_texts: int,
    ) -> None:
        self._max_assign_texts = max_assign_texts
        self._store = store
        self._trainings = trainings
        self._published = published

    async def _train(
        self, requests: AsyncIterator[Any], context: Context, headers: tuple[tuple[str, str], ...]
    ) -> msgs.Experiment:
        try:
            view = await self._trainings.train(current_user(), _chunks(requests))
        except DomainError as exc:
            exc.headers.update(headers)
            raise
        if headers:
            await context.send_initial_metadata(headers)
        return experiment_proto(view, self._published)

    async def Train(
        self, request_iterator: AsyncIterator[msgs.TrainRequest], context: Context
    ) -> msgs.Experiment:
        return await self._train(request_iterator, context, ())

    async def TrainDeprecated(
        self, request_iterator: AsyncIterator[msgs.TrainDeprecatedRequest], context: Context
    ) -> msgs.Experiment:
        return await self._train(
            request_iterator,
            context,
            (
                ("deprecation", "true"),
                ("sunset", "Wed, 01 Jan 2025 00:00:00 GMT"),
                ("link", f'<{NEW_TRAIN_PATH}>; rel="successor-version"'),
            ),
        )

    async def GetProgress(
        self, request: msgs.GetProgressRequest, context: Context
    ) -> msgs.GetProgressResponse:
        latest = await self._store.owned_latest(request.modelId, current_user())
        state: str | None = None
        if latest.status == COMPLETED and latest.model_prefix:
            state = self._published.publish(latest.model_id, latest.model_prefix)
        else:
            state = self._published.state(latest.model_id)
        inference = struct_pb2.Value()
        if state in (PENDING, RUNNING):
            inference.string_value = state
        else:
            inference.null_value = struct_pb2.NULL_VALUE
        return msgs.GetProgressResponse(
            percent=latest.percent, trainingStatus=latest.status_name, inferenceStatus=inference
        )

    async def GetReady(
        self, request: msgs.GetReadyRequest, context: Context
    ) -> msgs.GetReadyResponse:
        latest = await self._store.owned_latest(request.modelId, current_user())
        ready = self._published.ready(latest.model_id)
        return msgs.GetReadyResponse(ready=ready, http_body=json_body(ready))

    async def AssignClusters(
        self, request: msgs.AssignClustersRequest, context: Context
    ) -> msgs.AssignClustersResponse:
        latest = await self._store.owned_latest(request.modelId, current_user())
        texts = list(request.texts)
        limit = self._max_assign_texts
        if not texts or len(texts) > limit:
            raise InvalidArgument(
                f"texts: send 1 to {limit} texts, got {len(texts)}",
                violations=[FieldViolation("texts", f"1 to {limit} texts")],
            )
        found = await self._published.assign(latest.model_id, texts)
        return msgs.AssignClustersResponse(
            assignments=[
                msgs.Assignment(
                    text=text,
                    clusterId=int(a.cluster_id),
                    label=str(a.label),
                    score=min(1.0, max(0.0, float(a.score))),
                )
                for text, a in zip(texts, found, strict=True)
            ]
        )

    async def ListClusters(
        self, request: msgs.ListClustersRequest, context: Context
    ) -> msgs.ListClustersResponse:
        await self._store.owned_latest(request.modelId, current_user())
        done = await self._store.latest(request.modelId, status=COMPLETED)
        if done is None or not done.model_prefix:
            raise FailedPrecondition(
                f"model {request.modelId!r} has no completed training yet; follow GET "
                f"{BASE}/{request.modelId}/progress",
                reason="MODEL_NOT_TRAINED",
            )
        clusters = await self._published.clusters(done.model_id, done.model_prefix)
        return msgs.ListClustersResponse(
            clusters=[
                msgs.Cluster(
                    clusterId=int(c.cluster_id),
                    label=str(c.label),
                    size=int(c.size),
                    keywords=[str(k) for k in c.keywords],
                    representatives=[str(r) for r in c.representatives],
                    intent=str(c.intent or ""),
                )
                for c in sorted(clusters, key=lambda c: int(c.cluster_id))
            ]
        )

    async def ReportTrainingStatus(
        self, request: msgs.ReportTrainingStatusRequest, context: Context
    ) -> msgs.ReportTrainingStatusResponse:
        await self._trainings.report(
            _job_experiment(),
            request.status,
            request.percent,
            [{"name": m.name, "value": m.value} for m in request.metrics],
            request.error,
        )
        return msgs.ReportTrainingStatusResponse()

    async def ReadTrainingData(
        self, request: msgs.ReadTrainingDataRequest, context: Context
    ) -> AsyncIterator[msgs.ReadTrainingDataResponse]:
        async for chunk in self._trainings.read_data(_job_experiment()):
            yield msgs.ReadTrainingDataResponse(chunk=chunk)

    async def UploadModel(
        self, request_iterator: AsyncIterator[msgs.UploadModelRequest], context: Context
    ) -> msgs.UploadModelResponse:
        experiment_id = _job_experiment()

        async def parts() -> AsyncIterator[tuple[str, bytes]]:
            async for message in request_iterator:
                yield message.path, message.chunk

        files, size = await self._trainings.upload_model(experiment_id, parts())
        return msgs.UploadModelResponse(files=files, bytes=size)


def _job_experiment() -> str:
    """The experiment the caller's job token names (the workload's own training)."""
    ident = current_identity()
    if ident.kind != "job" or not ident.model_id:
        raise PermissionDenied("this job token names no training", reason="JOB_TOKEN_REQUIRED")
    return ident.model_id
