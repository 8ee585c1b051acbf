"""Experiments in the database: who owns a modelId, each training's status (forward only, with
its history), metrics, datasets and the artifact it serves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trainyard.clustering.models import ClusteringModel, Cursor, Experiment, StatusChange
from trainyard.runtime.clock import as_utc, utcnow
from trainyard.runtime.db import Cursors
from trainyard.runtime.errors import NotFound, PermissionDenied

#: The training statuses; an experiment's `status` is the index in this list.
STATUSES = (
    "Initialized",
    "PendingTraining",
    "DatasetUploading",
    "DataProcessing",
    "TrainingStarted",
    "Training",
    "Trained",
    "ModelUploading",
    "Completed",
    "Failed",
)
STATUS = {name: index for index, name in enumerate(STATUSES)}
COMPLETED = STATUS["Completed"]
FAILED = STATUS["Failed"]
FINAL = (COMPLETED, FAILED)
#: What the workload reports (the service sets the statuses before these).
WORKLOAD_STATUSES = STATUSES[STATUS["DataProcessing"] :]


@dataclass(frozen=True)
class ExperimentView:
    id: str
    model_id: str
    owner: str
    product_name: str
    status: int
    percent: int
    error: str | None
    params: dict[str, Any]
    fingerprint: str
    metrics: list[dict[str, Any]]
    datasets: list[dict[str, Any]]
    model_prefix: str | None
    job_id: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def status_name(self) -> str:
        return STATUSES[self.status]


def _view(row: Experiment) -> ExperimentView:
    return ExperimentView(
        id=row.id,
        model_id=row.model_id,
        owner=row.owner,
        product_name=row.product_name,
        status=row.status,
        percent=row.percent,
        error=row.error,
        params=dict(row.params),
        fingerprint=row.fingerprint,
        metrics=list(row.metrics or []),
        datasets=list(row.datasets or []),
        model_prefix=row.model_prefix,
        job_id=row.job_id,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


class ExperimentStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        #: The job-runner watch cursor.
        self.cursors = Cursors(sessions, Cursor)

    async def claim(self, model_id: str, user: str) -> None:
        """Make `user` the owner of a new modelId; PERMISSION_DENIED when it is another's."""
        async with self._sessions() as session:
            found = await session.get(ClusteringModel, model_id)
            if found is None:
                session.add(ClusteringModel(model_id=model_id, owner=user))
                try:
                    await session.commit()
                    return
                except IntegrityError:
                    await session.rollback()
                    found = await session.get(ClusteringModel, model_id)
            if found is not None and found.owner != user:
                raise _not_yours(model_id)

    async def owned_latest(self, model_id: str, user: str) -> ExperimentView:
        """The latest experiment of the user's model; NOT_FOUND / PERMISSION_DENIED."""
        async with self._sessions() as session:
            model = await session.get(ClusteringModel, model_id)
            if model is None:
                raise NotFound(
                    f"no clustering model {model_id[:80]!r}; train it first",
                    reason="MODEL_NOT_FOUND",
                )
            if model.owner != user:
                raise _not_yours(model_id)
        latest = await self.latest(model_id)
        if latest is None:
            raise NotFound(f"model {model_id!r} has no training", reason="MODEL_NOT_FOUND")
        return latest

    async def latest(self, model_id: str, *, status: int | None = None) -> ExperimentView | None:
        query = select(Experiment).where(Experiment.model_id == model_id)
        if status is not None:
            query = query.where(Experiment.status == status)
        query = query.order_by(Experiment.created_at.desc(), Experiment.id.desc()).limit(1)
        async with self._sessions() as session:
            row = (await session.execute(query)).scalar_one_or_none()
            return _view(row) if row is not None else None

    async def get(self, experiment_id: str) -> ExperimentView:
        async with self._sessions() as session:
            row = await session.get(Experiment, experiment_id)
            if row is None:
                raise NotFound(f"no experiment {experiment_id!r}", reason="EXPERIMENT_NOT_FOUND")
            return _view(row)

    async def create(
        self,
        *,
        experiment_id: str,
        model_id: str,
        owner: str,
        product_name: str,
        params: dict[str, Any],
        fingerprint: str,
    ) -> ExperimentView:
        async with self._sessions() as session:
            row = Experiment(
                id=experiment_id,
                model_id=model_id,
                owner=owner,
                product_name=product_name,
                status=0,
                percent=0,
                params=params,
                fingerprint=fingerprint,
                metrics=[],
                datasets=[],
            )
            session.add(row)
            session.add(StatusChange(experiment_id=experiment_id, status=0, percent=0))
            await session.commit()
            return _view(row)

    async def update(
        self,
        experiment_id: str,
        *,
        status: int | None = None,
        percent: int | None = None,
        error: str | None = None,
        metrics: list[dict[str, Any]] | None = None,
        datasets: list[dict[str, Any]] | None = None,
        model_prefix: str | None = None,
        job_id: str | None = None,
    ) -> ExperimentView:
        """Apply a change; a status only moves forward (Failed from anywhere), and a final
        experiment does not change: FailedPrecondition-free, the unchanged view comes back."""
        async with self._sessions() as session:
            row = await session.get(Experiment, experiment_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no experiment {experiment_id!r}", reason="EXPERIMENT_NOT_FOUND")
            if row.status in FINAL:
                return _view(row)
            if status is not None and (status > row.status or status == FAILED):
                row.status = status
                if status == COMPLETED:
                    row.percent = 100
                elif percent is not None:
                    row.percent = max(0, min(100, percent))
                session.add(
                    StatusChange(experiment_id=experiment_id, status=status, percent=row.percent)
                )
            elif (status is None or status == row.status) and percent is not None:
                row.percent = max(row.percent, max(0, min(100, percent)))
            if error is not None:
                row.error = error[:2000]
            if metrics is not None:
                row.metrics = metrics
            if datasets is not None:
                row.datasets = datasets
            if model_prefix is not None:
                row.model_prefix = model_prefix
            if job_id is not None:
                row.job_id = job_id
            row.updated_at = utcnow()
            await session.commit()
            return _view(row)

    async def history(self, experiment_id: str) -> list[int]:
        """The statuses the experiment went through, in order."""
        query = (
            select(StatusChange.status)
            .where(StatusChange.experiment_id == experiment_id)
            .order_by(StatusChange.id)
        )
        async with self._sessions() as session:
            return list((await session.execute(query)).scalars())

    async def unfinished(self) -> list[ExperimentView]:
        query = select(Experiment).where(Experiment.status.not_in(FINAL))
        async with self._sessions() as session:
            return [_view(r) for r in (await session.execute(query)).scalars()]


def _not_yours(model_id: str) -> PermissionDenied:
    return PermissionDenied(
        f"modelId {model_id!r} belongs to another user; choose another modelId",
        reason="MODEL_OF_ANOTHER_USER",
    )
