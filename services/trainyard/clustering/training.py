"""Training requests: the form becomes an Experiment, its files stored and normalised, and a
clustering workload in the job-runner; the workload's reports (and its end, reported or not)
move the Experiment through its statuses.

Rules (issue 13): one training at a time per modelId (a second request answers 202 and
changes nothing); a modelId belongs to the user who first trained it (403 for others); with
forceTrain false and the same fingerprint (SHA-256 of the files' bytes and the parameters) as
the last completed training, the existing model is redeployed: a new Experiment that goes
straight to Completed and serves the same artifact, no workload.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog
from google.protobuf import duration_pb2

from trainyard.api.jobrunner.v1 import messages_pb2 as jr
from trainyard.api.jobrunner.v1 import service_pb2_grpc as jr_grpc
from trainyard.blobs import BlobStorage
from trainyard.clustering.form import RawForm, TrainParams, check_form, read_form
from trainyard.clustering.inference import Published
from trainyard.clustering.settings import ClusteringSettings
from trainyard.clustering.store import (
    COMPLETED,
    FAILED,
    STATUS,
    WORKLOAD_STATUSES,
    ExperimentStore,
    ExperimentView,
)
from trainyard.runtime.auth import TokenAuthority
from trainyard.runtime.clients import ServiceClients, ServiceToken
from trainyard.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from trainyard.runtime.jobwatch import follow_job_events
from trainyard.trainers.clustering.data import (
    NORMALISED_NAME,
    DataError,
    Record,
    records_of,
    to_jsonl,
)
from trainyard.workload import ArtifactCorrupt, ArtifactNotFound, Artifacts

log = structlog.get_logger("trainyard.clustering.training")

CREATED_BY = ("created-by", "trainyard-clustering")
EXPERIMENT_LABEL = "experiment-id"
CURSOR = "jobrunner-events"
MODEL_ARTIFACT = "model"
TRAINER_MODULE = "trainyard.trainers.clustering"
IN_PROGRESS_MESSAGE = "The training is still in progress for the same model ID: {}"


def owner_space(owner: str) -> str:
    """The blob folder of one user's datasets (a hash: user names are not keys)."""
    return f"owners/{hashlib.sha256(owner.encode()).hexdigest()[:32]}/"


def fingerprint(params: TrainParams, files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    body = {k: v for k, v in params.as_json().items() if k not in ("forceTrain", "productName")}
    digest.update(json.dumps(body, sort_keys=True).encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def _records(params: TrainParams, form: RawForm) -> list[Record]:
    records: list[Record] = []
    problems: list[FieldViolation] = []
    pairs = [("dataFile", params.data_schema)]
    if params.secondary_data_schema:
        pairs.append(("secondaryDataFile", params.secondary_data_schema))
    for name, schema in pairs:
        try:
            records += records_of(schema, form.files[name].data, name)
        except DataError as exc:
            problems.append(FieldViolation(name, str(exc)))
    if not problems and params.num_clusters > len(records):
        problems.append(
            FieldViolation(
                "numClusters",
                f"numClusters {params.num_clusters} is more than the {len(records)} utterances in "
                "the data; "
                "ask for fewer clusters or 0 to let the model choose",
            )
        )
    if problems:
        raise InvalidArgument(
            "invalid training data: " + "; ".join(p.description for p in problems),
            violations=problems,
        )
    return records


class Trainings:
    def __init__(
        self,
        store: ExperimentStore,
        storage: BlobStorage,
        published: Published,
        authority: TokenAuthority,
        settings: ClusteringSettings,
        jobrunner_address: str,
        *,
        deadline: float = 15.0,
    ) -> None:
        self._store = store
        self._storage = storage
        self._published = published
        self._authority = authority
        self._settings = settings
        self._clients = ServiceClients(
            {"jobrunner": jobrunner_address},
            ServiceToken(authority, "clustering"),
            deadline=deadline,
        )
        self._locks: dict[str, asyncio.Lock] = {}
        #: Where the trainer calls back; set once the server listens (app.py).
        self.address = ""

    @property
    def _jobs(self) -> Any:
        return self._clients.stub("jobrunner", jr_grpc.JobRunnerServiceStub)

    async def close(self) -> None:
        await self._clients.close()

    # ---- a training request ----------------------------------------------------------------

    async def train(self, user: str, chunks: AsyncIterator[tuple[str, bytes]]) -> ExperimentView:
        form = await read_form(
            chunks,
            max_file_bytes=self._settings.max_file_bytes,
            max_field_bytes=self._settings.max_form_field_bytes,
        )
        params = check_form(form)
        await self._store.claim(params.model_id, user)
        lock = self._locks.setdefault(params.model_id, asyncio.Lock())
        if lock.locked():
            raise _in_progress(params.model_id)
        try:
            async with lock:
                return await self._train_locked(user, params, form)
        finally:
            if not lock.locked():
                self._locks.pop(params.model_id, None)

    async def _train_locked(self, user: str, params: TrainParams, form: RawForm) -> ExperimentView:
        latest = await self._store.latest(params.model_id)
        if latest is not None and not latest.final:
            raise _in_progress(params.model_id)
        records = await asyncio.to_thread(_records, params, form)
        files = {name: f.data for name, f in form.files.items()}
        print_ = fingerprint(params, files)
        experiment = await self._store.create(
            experiment_id=str(uuid.uuid4()),
            model_id=params.model_id,
            owner=user,
            product_name=params.product_name,
            params=params.as_json(),
            fingerprint=print_,
        )
        previous = await self._store.latest(params.model_id, status=COMPLETED)
        if (
            not params.force_train
            and previous is not None
            and previous.fingerprint == print_
            and previous.model_prefix
        ):
            return await self._redeploy(experiment, previous)
        return await self._start(experiment, params, form, records)

    async def _redeploy(
        self, experiment: ExperimentView, previous: ExperimentView
    ) -> ExperimentView:
        assert previous.model_prefix is not None
        done = await self._store.update(
            experiment.id,
            status=COMPLETED,
            metrics=previous.metrics,
            datasets=[{**d, "experimentId": experiment.id} for d in previous.datasets],
            model_prefix=previous.model_prefix,
        )
        self._published.publish(experiment.model_id, previous.model_prefix, again=True)
        log.info("clustering.redeployed", model_id=experiment.model_id, experiment=experiment.id)
        return done

    async def _start(
        self, experiment: ExperimentView, params: TrainParams, form: RawForm, records: list[Record]
    ) -> ExperimentView:
        await self._store.update(experiment.id, status=STATUS["PendingTraining"])
        await self._store.update(experiment.id, status=STATUS["DatasetUploading"])
        space = owner_space(experiment.owner)
        datasets = []
        for name, uploaded in form.files.items():
            dataset_id = str(uuid.uuid4())
            await self._storage.put_bytes(f"{space}datasets/{dataset_id}/data", uploaded.data)
            datasets.append(
                {"datasetId": dataset_id, "experimentId": experiment.id, "datasetColumn": name}
            )
        await self._storage.put_bytes(self._data_key(experiment), to_jsonl(records))
        current = await self._store.update(experiment.id, datasets=datasets)
        try:
            current = await self._submit(current)
        except Unavailable:
            log.warning("clustering.submit_deferred", experiment=experiment.id)
        return current

    def _data_key(self, experiment: ExperimentView) -> str:
        return f"{owner_space(experiment.owner)}experiments/{experiment.id}/{NORMALISED_NAME}"

    def _config(self, experiment: ExperimentView) -> dict[str, Any]:
        params = experiment.params
        llm: dict[str, str] | None = None
        if params.get("llm") == "openai":
            llm = {
                "provider": "openai",
                "base_url": self._settings.openai_base_url or "",
                "api_key": self._settings.openai_key(),
                "model": self._settings.openai_model,
            }
        root = self._storage.uri("_")[:-1]
        return {
            "experiment_id": experiment.id,
            "model_id": experiment.model_id,
            "language_code": params["languageCode"],
            "num_clusters": int(params["numClusters"]),
            "seed": 0,
            "llm": llm,
            "data_uri": self._storage.uri(self._data_key(experiment)),
            "artifacts_uri": root,
            "model_prefix": f"models/{experiment.id}/",
            "platform": {
                # Data and model go through this service (ReadTrainingData / UploadModel):
                # the workload needs no access to the clustering storage.
                "relay": "clustering",
                "callback_address": self.address,
                "job_token": self._authority.mint_job(
                    experiment.owner,
                    model_id=experiment.id,
                    job=f"clustering-{experiment.id}",
                    ttl=self._settings.training_deadline_seconds + 3600,
                ),
            },
        }

    async def _submit(self, experiment: ExperimentView) -> ExperimentView:
        s = self._settings
        spec = jr.JobSpec(
            image=s.trainer_image,
            command=[s.trainer_python, "-m", TRAINER_MODULE],
            resources=jr.Resources(cores=s.trainer_cores, memory_mb=s.trainer_memory_mb),
            deadline=duration_pb2.Duration(seconds=s.training_deadline_seconds),
            labels={CREATED_BY[0]: CREATED_BY[1], EXPERIMENT_LABEL: experiment.id},
            name=f"clustering-{experiment.id}",
            config_json=json.dumps(self._config(experiment)),
        )
        try:
            response = await self._jobs.SubmitJob(
                jr.SubmitJobRequest(spec=spec, idempotency_key=f"clustering:{experiment.id}")
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return await self._store.update(
                    experiment.id, status=FAILED, error=f"the workload was refused: {exc.details()}"
                )
            raise Unavailable(
                "the job-runner is not reachable right now; the training starts when it is",
                reason="JOBRUNNER_UNAVAILABLE",
            ) from exc
        log.info("clustering.submitted", experiment=experiment.id, job_id=response.job.job_id)
        return await self._store.update(experiment.id, job_id=response.job.job_id)

    # ---- the workload's reports ------------------------------------------------------------

    async def report(
        self,
        experiment_id: str,
        status: str,
        percent: int,
        metrics: list[dict[str, Any]],
        error: str,
    ) -> None:
        if status not in WORKLOAD_STATUSES:
            raise InvalidArgument(
                f"status {status[:40]!r} is not one a workload reports; one of "
                + ", ".join(WORKLOAD_STATUSES),
                violations=[FieldViolation("status", "unknown status")],
            )
        await self._running(experiment_id)
        code = STATUS[status]
        prefix = f"models/{experiment_id}/" if code == COMPLETED else None
        if code == COMPLETED and not await self._has_model(experiment_id):
            raise FailedPrecondition(
                "Completed reported before the model artifact was written",
                reason="MODEL_ARTIFACT_MISSING",
            )
        await self._store.update(
            experiment_id,
            status=code,
            percent=percent,
            metrics=metrics or None,
            error=(error or "the training failed") if code == FAILED else None,
            model_prefix=prefix,
        )

    # ---- the workload's data, relayed (it has no storage access of its own) ----------------

    async def _running(self, experiment_id: str) -> ExperimentView:
        current = await self._store.get(experiment_id)
        if current.final:
            raise FailedPrecondition(
                f"the training {experiment_id} has already ended ({current.status_name})",
                reason="TRAINING_ENDED",
            )
        return current

    async def read_data(self, experiment_id: str) -> AsyncIterator[bytes]:
        """The normalised training data of a running training, in chunks."""
        experiment = await self._running(experiment_id)
        key = self._data_key(experiment)
        if not await self._storage.exists(key):
            raise NotFound("the training's data is gone", reason="TRAINING_DATA_NOT_FOUND")
        async for chunk in self._storage.read(key):
            yield chunk

    async def upload_model(
        self, experiment_id: str, parts: AsyncIterator[tuple[str, bytes]]
    ) -> tuple[int, int]:
        """Store (path, chunk) parts as the training's `model` artifact, all or nothing: a part
        with a path starts a file, one without continues it. Returns (files, bytes)."""
        experiment = await self._running(experiment_id)
        limit, most = self._settings.max_model_bytes, self._settings.max_model_files
        iterator = aiter(parts)
        following = await anext(iterator, None)
        if following is None or not following[0]:
            raise InvalidArgument(
                "the first message must name a file (path)", reason="NO_MODEL_PATH"
            )
        total = files = 0
        artifacts = Artifacts(self._storage, f"models/{experiment.id}/")
        async with artifacts.writer(MODEL_ARTIFACT) as writer:
            while following is not None:
                path, head = following
                following = None
                files += 1
                if len(path) > 512 or any(len(part) > 200 for part in path.split("/")):
                    raise InvalidArgument(
                        "a model file path is at most 512 characters, 200 a segment",
                        reason="BAD_MODEL_PATH",
                        violations=[FieldViolation("path", "too long")],
                    )
                if files > most:
                    raise ResourceExhausted(
                        f"a model may have at most {most} files", reason="MODEL_TOO_MANY_FILES"
                    )

                async def file_chunks(head: bytes) -> AsyncIterator[bytes]:
                    # This file's bytes: up to the part that names the next file.
                    nonlocal total, following
                    chunk = head
                    while True:
                        total += len(chunk)
                        if total > limit:
                            raise ResourceExhausted(
                                f"a model may hold at most {limit} bytes", reason="MODEL_TOO_LARGE"
                            )
                        if chunk:
                            yield chunk
                        part = await anext(iterator, None)
                        if part is None:
                            return
                        if part[0]:
                            following = part
                            return
                        chunk = part[1]

                try:
                    await writer.add_chunks(path, file_chunks(head))
                except ValueError as exc:
                    raise InvalidArgument(
                        f"bad model file path {path[:200]!r}: {exc}",
                        reason="BAD_MODEL_PATH",
                        violations=[FieldViolation("path", str(exc))],
                    ) from exc
            await writer.commit({"kind": "clustering", "model_id": experiment.model_id})
        log.info("clustering.model_uploaded", experiment=experiment.id, files=files, bytes=total)
        return files, total

    async def _has_model(self, experiment_id: str) -> bool:
        try:
            await Artifacts(self._storage, f"models/{experiment_id}/").manifest(MODEL_ARTIFACT)
        except (ArtifactNotFound, ArtifactCorrupt, ValueError):
            return False
        return True

    # ---- following the workloads -----------------------------------------------------------

    async def on_job(self, job: jr.Job) -> None:
        experiment_id = dict(job.spec.labels).get(EXPERIMENT_LABEL) or ""
        if not experiment_id or job.state not in (
            jr.JOB_STATE_SUCCEEDED,
            jr.JOB_STATE_FAILED,
            jr.JOB_STATE_CANCELLED,
        ):
            return
        try:
            current = await self._store.get(experiment_id)
        except Exception:
            return
        if current.final:
            return
        if job.state == jr.JOB_STATE_SUCCEEDED and await self._has_model(experiment_id):
            await self._store.update(
                experiment_id, status=COMPLETED, model_prefix=f"models/{experiment_id}/"
            )
            return
        await self._store.update(experiment_id, status=FAILED, error=_outcome(job))
        log.info("clustering.workload_ended", experiment=experiment_id, state=job.state)

    async def reconcile(self) -> None:
        """Submit what was accepted but not submitted; end what ended unseen."""
        for experiment in await self._store.unfinished():
            try:
                if experiment.job_id is None:
                    if experiment.status == STATUS["DatasetUploading"] and experiment.datasets:
                        await self._submit(experiment)
                    continue
                try:
                    response = await self._jobs.GetJob(jr.GetJobRequest(job_id=experiment.job_id))
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:
                        await self._store.update(
                            experiment.id,
                            status=FAILED,
                            error="the training workload was lost (the job-runner no longer "
                            "knows it)",
                        )
                        continue
                    return
                await self.on_job(response.job)
            except Unavailable:
                return

    async def follow_jobs(self) -> None:
        """Apply the job-runner's events from the last revision seen (kept in the database);
        run under Background.supervise, which reconnects when the watch is lost."""
        await follow_job_events(
            self._jobs,
            {CREATED_BY[0]: CREATED_BY[1]},
            cursors=self._store.cursors,
            cursor=CURSOR,
            on_job=self.on_job,
            reconcile=self.reconcile,
        )


def _in_progress(model_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        IN_PROGRESS_MESSAGE.format(model_id), reason="TRAINING_IN_PROGRESS", http_status=202
    )


def _outcome(job: jr.Job) -> str:
    if job.state == jr.JOB_STATE_CANCELLED:
        return "the training workload was cancelled"
    if job.state == jr.JOB_STATE_SUCCEEDED:
        return "the trainer exited without writing the model"
    reasons = {
        jr.JOB_REASON_OOM_KILLED: "the trainer ran out of memory",
        jr.JOB_REASON_DEADLINE_EXCEEDED: "the training ran past its deadline and was stopped",
        jr.JOB_REASON_LOST: "the training workload was lost",
        jr.JOB_REASON_SIGNALED: f"the trainer was killed ({job.message or 'by a signal'})",
        jr.JOB_REASON_IMAGE_NOT_FOUND: "the trainer image could not be pulled",
    }
    return reasons.get(job.reason, f"the trainer exited with code {job.exit_code}")
