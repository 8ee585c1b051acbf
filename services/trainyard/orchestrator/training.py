"""Trainings: a train request becomes a model in the registry and a trainer workload in the
job-runner; the workload's end (reported or not) becomes the model's final status.

The request's files are resolved here, for the caller only: an upload they own (through the
upload service), a path under a configured local root, or an S3 key or prefix. The trainer gets
the resolved URIs in its config, never another user's data. A model is created before its
workload is submitted and the submission is idempotent (keyed by the model id), so a crash in
between loses nothing: `reconcile()` (run on start and periodically) submits what was not, and
ends the models whose workloads ended while nobody was watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf import duration_pb2, json_format
from google.protobuf.message import Message

from trainyard.api.jobrunner.v1 import messages_pb2 as jr
from trainyard.api.orchestrator.v1 import messages_pb2 as msgs
from trainyard.blobs import BlobStorage
from trainyard.orchestrator.feedback import CollectedFeedback, FeedbackStore
from trainyard.orchestrator.peers import Peers
from trainyard.orchestrator.registry import ModelRegistry, ModelView
from trainyard.orchestrator.settings import OrchestratorSettings
from trainyard.orchestrator.token_feedback import TokenFeedbackStore
from trainyard.orchestrator.workload_data import INPUTS, UPLOAD_SOURCES, S3Inputs, WorkloadData
from trainyard.runtime.auth import TokenAuthority
from trainyard.runtime.errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from trainyard.workload import ArtifactCorrupt, ArtifactNotFound, Artifacts

log = structlog.get_logger("trainyard.orchestrator.training")

#: Labels of every training workload (the watch filters on the first).
CREATED_BY = ("created-by", "trainyard-orchestrator")
MODEL_LABEL = "model-id"
#: Trainer module of each model type; types without one run the `unsupported` trainer, which
#: fails with a clear message (their trainers come with a later version).
TRAINERS = {"nlp-text": "nlp_text", "nlp-token": "nlp_token", "ndb": "ndb"}
#: Endpoints whose workload is another trainer than their model type's: datagen generates the
#: data, then trains the type's model with that type's trainer code in the same workload.
KIND_TRAINERS = {"nlp-datagen": "datagen", "nlp-token-retrain": "datagen"}
#: The artifact datagen keeps its generated data in (GetGeneratedData).
GENERATED_ARTIFACT = "generated-data"
#: Where a retraining's exported feedback lies, under the new model's folder (the workload
#: reads it as one of its own model's blobs).
FEEDBACK_KEY = "inputs/feedback.csv"
CURSOR = "jobrunner-events"
#: The artifact a trainer writes its model to (models/<model_id>/model); see inference.py.
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class Plan:
    """What a train request asks for, as the registry and the trainer need it."""

    kind: str  # the endpoint: ndb, ndb-retrain, nlp-token, nlp-text, nlp-datagen, ...
    type: str  # the model's type
    name: str
    base_model_id: str | None
    files: dict[str, list[msgs.FileInfo]]  # config key -> the request's files
    options: dict[str, Any]  # trainer options besides the files
    cores: int
    memory_mb: int


def _dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def plan_of(kind: str, request: Any, settings: OrchestratorSettings) -> Plan:
    """The plan of a validated train request."""
    has_base = request.HasField("base_model_id") if kind not in _RETRAIN else True
    base = request.base_model_id if has_base and request.base_model_id else None
    cores = settings.default_allocation_cores
    memory = settings.default_allocation_memory_mb
    if request.HasField("job_options"):
        if request.job_options.HasField("allocation_cores"):
            cores = request.job_options.allocation_cores
        if request.job_options.HasField("allocation_memory"):
            memory = request.job_options.allocation_memory
    files: dict[str, list[msgs.FileInfo]] = {}
    options: dict[str, Any] = {}
    if hasattr(request, "train_options"):
        options["train_options"] = _dict(request.train_options)
    if kind == "ndb":
        files = {
            "unsupervised_files": list(request.data.unsupervised_files),
            "supervised_files": list(request.data.supervised_files),
        }
        options["model_options"] = _dict(request.model_options)
        options["deletions"] = list(request.data.deletions)
        type_ = "ndb"
    elif kind in ("nlp-token", "nlp-text"):
        files = {
            "supervised_files": list(request.data.supervised_files),
            "test_files": list(request.data.test_files),
        }
        options["model_options"] = _dict(request.model_options)
        if kind == "nlp-text":
            options["doc_classification"] = request.doc_classification
        type_ = kind
    elif kind == "nlp-datagen":
        options.update(
            {
                k: v
                for k, v in _dict(request).items()
                if k not in ("model_name", "base_model_id", "job_options", "train_options")
            }
        )
        type_ = "nlp-token" if request.HasField("token_options") else "nlp-text"
    else:  # the retrain endpoints: the type is the base model's, checked against it
        options.update(
            {
                k: v
                for k, v in _dict(request).items()
                if k not in ("model_name", "base_model_id", "job_options", "train_options")
            }
        )
        type_ = _RETRAIN[kind]
        if kind == "ndb-retrain":
            # The base model's index plus its feedback (added by Trainings.start): no files.
            files = {"unsupervised_files": [], "supervised_files": []}
            options["deletions"] = []
    return Plan(kind, type_, request.model_name, base, files, options, cores, memory)


_RETRAIN = {"ndb-retrain": "ndb", "nlp-token-retrain": "nlp-token"}


def fit_feedback(collected: CollectedFeedback, budget: int) -> tuple[dict[str, Any], int]:
    """The trainer's `feedback` config of `collected`, keeping the newest entries of each kind
    whose JSON fits `budget` bytes in all; how many were left out."""
    config = collected.to_config()
    sizes = {key: [len(json.dumps(item)) + 2 for item in items] for key, items in config.items()}
    held = {key: sum(values) for key, values in sizes.items()}
    first = dict.fromkeys(config, 0)  # per kind: the oldest entry kept
    total = sum(held.values())
    while total > budget and any(held.values()):
        # Drop the oldest entry of the kind that holds the most bytes.
        key = max(held, key=lambda k: held[k])
        size = sizes[key][first[key]]
        first[key] += 1
        held[key] -= size
        total -= size
    left_out = sum(first.values())
    return {key: items[first[key] :] for key, items in config.items()}, left_out


class Trainings:
    def __init__(
        self,
        registry: ModelRegistry,
        peers: Peers,
        artifacts: BlobStorage,
        authority: TokenAuthority,
        settings: OrchestratorSettings,
        orchestrator_address: str = "",
        *,
        feedback: FeedbackStore,
        token_feedback: TokenFeedbackStore | None = None,
    ) -> None:
        self._registry = registry
        self._feedback = feedback
        self._token_feedback = token_feedback
        self._peers = peers
        self._artifacts = artifacts
        self._authority = authority
        self._settings = settings
        #: Where trainers call back; set once the server listens (see app.py).
        self.address = orchestrator_address
        self._roots = [Path(os.path.realpath(root)) for root in settings.local_roots]
        self._s3_inputs = S3Inputs(settings.s3_input_locations, settings.storage_settings())
        #: Inputs and blobs of the workloads, relayed for their job tokens.
        self.data = WorkloadData(
            registry, peers, artifacts, self._s3_inputs, self._roots, settings.max_model_bytes
        )

    # ---- starting --------------------------------------------------------------------------

    async def start(self, kind: str, request: Any, user: str) -> str:
        """Create the model and start its trainer; the new model's id."""
        plan = plan_of(kind, request, self._settings)
        base: ModelView | None = None
        if plan.base_model_id:
            base = await self._check_base(plan, user)
        feedback: dict[str, Any] | None = None
        left_out = 0
        if kind == "ndb-retrain" and base is not None:
            feedback, left_out = await self._ndb_feedback(base, user)
        sources: dict[str, list[str]] = {}
        entries = {
            key: [
                (info, await self._resolve(info, f"data.{key}[{i}]", user, sources))
                for i, info in enumerate(infos)
            ]
            for key, infos in plan.files.items()
        }
        resolved = {key: [u for _, uris in found for u in uris] for key, found in entries.items()}
        model_id = str(uuid.uuid4())
        folder = f"models/{model_id}/"
        config: dict[str, Any] = {"model_id": model_id, **resolved, **plan.options}
        if plan.kind == "nlp-token-retrain":
            config.update(await self._export_feedback(plan, model_id))
        if plan.type == "ndb":
            # NDB reads each file entry's options (CSV columns, metadata, doc_id) with its files.
            config["file_entries"] = {
                key: [_entry_config(info, uris) for info, uris in found]
                for key, found in entries.items()
            }
        config["artifacts_uri"] = _folder_uri(self._artifacts, "")
        config["base_model"] = (
            {"model_id": plan.base_model_id, "artifacts_uri": config["artifacts_uri"]}
            if plan.base_model_id
            else None
        )
        if feedback is not None:
            config["feedback"] = feedback
        train_config = {
            "kind": plan.kind,
            "trainer": KIND_TRAINERS.get(plan.kind) or TRAINERS.get(plan.type),
            "cores": plan.cores,
            "memory_mb": plan.memory_mb,
            "config": config,
            INPUTS: sorted({uri for uris in resolved.values() for uri in uris}),
            UPLOAD_SOURCES: sources,
        }
        try:
            model = await self._registry.create(
                owner=user,
                name=plan.name,
                type=plan.type,
                base_model_id=plan.base_model_id,
                train_config=train_config,
                artifact_uri=_folder_uri(self._artifacts, folder),
                model_id=model_id,
            )
        except BaseException:
            if plan.kind == "nlp-token-retrain":  # the exported feedback has no model now
                await self._artifacts.delete_prefix(folder)
            raise
        if left_out:
            await self._registry.add_message(
                model_id,
                "warning",
                f"ndb-retrain used the newest feedback only: {left_out} older entries did not "
                f"fit in the trainer's config ({self._settings.ndb_retrain_feedback_bytes} bytes)",
            )
        try:
            await self._submit(model)
        except Unavailable:
            # Accepted: the model waits as not_started and reconcile() submits it later.
            log.warning("training.submit_deferred", model_id=model_id)
        return model_id

    async def _ndb_feedback(self, base: ModelView, user: str) -> tuple[dict[str, Any], int]:
        """The feedback an ndb-retrain of `base` by `user` trains on, as the trainer's config
        (the newest that fits the configured budget), and how many entries were left out. The
        owner retrains with every user's feedback; another reader (of a public model) with the
        owner's and their own, so no one's queries reach a model someone else owns."""
        users = None if base.owner == user else (base.owner, user)
        collected = await self._feedback.collected(base.id, users)
        if not len(collected):
            raise FailedPrecondition(
                "unable to start ndb training, found the following errors: base model "
                f"{base.id!r} has no feedback to retrain on: send upvote, associate or "
                "implicit-feedback requests to it first",
                reason="NO_FEEDBACK",
                http_status=422,
            )
        return fit_feedback(collected, self._settings.ndb_retrain_feedback_bytes)

    async def _check_base(self, plan: Plan, user: str) -> ModelView:
        base = await self._registry.readable(str(plan.base_model_id), user)
        problems = []
        if base.type != plan.type:
            problems.append(
                f"base model {base.id!r} is a {base.type} model, not a {plan.type} model"
            )
        if base.status != "complete":
            problems.append(f"base model {base.id!r} is not complete (status {base.status})")
        if problems:
            raise FailedPrecondition(
                f"unable to start {plan.type} training, found the following errors: "
                + "; ".join(problems),
                reason="BASE_MODEL_UNUSABLE",
                http_status=422,
            )
        return base

    async def _resolve(
        self, info: msgs.FileInfo, where: str, user: str, sources: dict[str, list[str]]
    ) -> list[str]:
        """The URIs a file entry names, for this user only; an upload's files are recorded in
        `sources` (uri -> [upload_id, name]), which is how the workload's reads find them."""
        if info.location == "upload":
            upload = await self._peers.resolve_upload(info.path, user, where)
            sources.update({f.uri: [upload.upload_id, f.name] for f in upload.files})
            return [f.uri for f in upload.files]
        if info.location in ("local", "nfs"):
            return [self._local_uri(info.path, where)]
        # s3://bucket/key-or-prefix/ (its form checked by the validator): only where allowed.
        await self._s3_inputs.check_exists(info.path, where)
        return [info.path]

    def _local_uri(self, path: str, where: str) -> str:
        if not self._roots:
            raise PermissionDenied(
                f"{where}: local files are not enabled on this server; upload the file and use "
                '{"location": "upload"}',
                reason="LOCAL_FILES_DISABLED",
            )
        raw = Path(path)
        if not raw.is_absolute():
            raise PermissionDenied(
                f"{where}: a local path must be absolute", reason="LOCAL_PATH_DENIED"
            )
        real = Path(os.path.realpath(raw))
        if not any(real == root or real.is_relative_to(root) for root in self._roots):
            raise PermissionDenied(
                f"{where}: {path!r} is outside the allowed local folders",
                reason="LOCAL_PATH_DENIED",
            )
        if not real.exists():
            raise NotFound(f"{where}: {path!r} does not exist", reason="LOCAL_FILE_NOT_FOUND")
        uri = real.as_uri()
        return uri + "/" if real.is_dir() else uri

    async def _submit(self, model: ModelView) -> None:
        """Submit the model's trainer (idempotent: keyed by the model id)."""
        plan = model.train_config
        config = dict(plan["config"])
        config["platform"] = {
            # Inputs and artifacts go through the orchestrator (workload_data.py): the
            # workload holds no storage access of its own.
            "relay": "orchestrator",
            "orchestrator_address": self.address,
            "job_token": self._authority.mint_job(
                model.owner,
                model_id=model.id,
                job=f"train-{model.id}",
                ttl=self._settings.training_deadline_seconds + 3600,
            ),
        }
        if plan.get("trainer") == "datagen":
            # The provider's key travels in the platform's part only: not in the model's
            # record (train_config), and never from the request.
            config["platform"]["llm"] = self._settings.llm_platform()
        module = plan.get("trainer")
        args = ["--kind", str(plan["kind"])] if module is None else []
        spec = jr.JobSpec(
            image=self._settings.trainer_image,
            command=[
                self._settings.trainer_python,
                "-m",
                f"trainyard.trainers.{module or 'unsupported'}",
            ],
            args=args,
            resources=jr.Resources(cores=float(plan["cores"]), memory_mb=int(plan["memory_mb"])),
            deadline=duration_pb2.Duration(seconds=self._settings.training_deadline_seconds),
            labels={
                CREATED_BY[0]: CREATED_BY[1],
                MODEL_LABEL: model.id,
                "model-type": model.type,
            },
            name=f"train-{model.id}",
            config_json=json.dumps(config),
        )
        job = await self._peers.submit(spec, idempotency_key=f"model:{model.id}")
        await self._registry.set_job(model.id, job.job_id)
        log.info("training.submitted", model_id=model.id, job_id=job.job_id, type=model.type)

    async def _export_feedback(self, plan: Plan, model_id: str) -> dict[str, Any]:
        """nlp-token-retrain: the base model's feedback, written as a CSV under the new model's
        folder for its workload; 422 when there is none."""
        base = str(plan.base_model_id)
        sentences = await self._token_feedback.sentences(base) if self._token_feedback else []
        if not sentences:
            raise FailedPrecondition(
                f"unable to start {plan.type} training, found the following errors: base model "
                f"{base!r} has no feedback; give corrected tags with POST "
                f"/api/v2/model/{base}/feedback first",
                reason="NO_FEEDBACK",
                http_status=422,
            )
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(("tokens", "tags"))
        for sentence in sentences:
            writer.writerow((" ".join(sentence.tokens), " ".join(sentence.tags)))
        key = f"models/{model_id}/{FEEDBACK_KEY}"
        await self._artifacts.put_bytes(key, out.getvalue().encode())
        return {
            "feedback_key": FEEDBACK_KEY,
            "feedback_weight": self._settings.token_feedback_weight,
            "generate_sentences": self._settings.retrain_generated_sentences,
        }

    # ---- stopping and deleting -------------------------------------------------------------

    async def stop(self, model_id: str, user: str) -> None:
        model = await self._registry.owned(model_id, user)
        if model.final:
            raise FailedPrecondition(
                f"the training of model {model_id!r} has already ended ({model.status})",
                reason="TRAINING_ENDED",
                http_status=422,
            )
        if model.job_id:
            await self._peers.cancel_job(model.job_id, f"stopped by {user}")
        await self._registry.finish(model_id, "stopped")

    async def delete(self, model_id: str, user: str) -> None:
        model = await self._registry.owned(model_id, user)
        if model.job_id:
            # Not only stopped: its config (with a job token still valid) and logs go too.
            await self._peers.delete_job(model.job_id)
        await self._artifacts.delete_prefix(f"models/{model_id}/")
        await self._registry.delete(model_id)

    # ---- logs ------------------------------------------------------------------------------

    async def logs(self, model_id: str, user: str) -> list[dict[str, str]]:
        """One {stdout, stderr} per workload attempt, the recent tail of each."""
        model = await self._registry.readable(model_id, user)
        if not model.job_id:
            return []
        tail = self._settings.log_tail_lines
        attempts: dict[int, dict[str, list[str]]] = {}
        async for message in self._peers.log_lines(model.job_id):
            lines = list(message.lines) or ([message.line] if message.HasField("line") else [])
            for line in lines:
                streams = attempts.setdefault(max(line.attempt, 1), {"o": [], "e": []})
                key = "e" if line.stream == jr.LOG_STREAM_STDERR else "o"
                bucket = streams[key]
                bucket.append(line.text)
                if len(bucket) > tail:
                    del bucket[: len(bucket) - tail]
        return [
            {"stdout": "\n".join(s["o"]), "stderr": "\n".join(s["e"])}
            for _, s in sorted(attempts.items())
        ]

    async def follow(
        self, model_id: str, user: str, from_sequence: int
    ) -> AsyncIterator[msgs.FollowTrainLogsResponse]:
        model = await self._registry.readable(model_id, user)
        if model.job_id:
            async for message in self._peers.log_lines(
                model.job_id, follow=True, from_sequence=from_sequence
            ):
                if message.HasField("line"):
                    line = message.line
                    yield msgs.FollowTrainLogsResponse(
                        sequence=line.sequence,
                        stream="stderr" if line.stream == jr.LOG_STREAM_STDERR else "stdout",
                        text=line.text,
                    )
                if message.done:
                    break
        await self._settle(model_id)
        final = await self._registry.get(model_id)
        yield msgs.FollowTrainLogsResponse(done=True, status=final.status)

    # ---- following the workloads -----------------------------------------------------------

    async def on_job(self, job: jr.Job) -> None:
        """A job event: end the model when its workload ended without saying so."""
        model_id = dict(job.spec.labels).get(MODEL_LABEL) or ""
        if not model_id:
            return
        if job.state not in (jr.JOB_STATE_SUCCEEDED, jr.JOB_STATE_FAILED, jr.JOB_STATE_CANCELLED):
            return
        try:
            model = await self._registry.get(model_id)
        except NotFound:
            return
        if model.final:
            return
        status, error = _outcome(job, model)
        if job.state == jr.JOB_STATE_SUCCEEDED and await self._has_model_artifact(model_id):
            # It wrote its model and exited 0, but its last report never arrived (the
            # orchestrator was away, say): the training is complete all the same.
            status, error = "complete", None
        if await self._registry.finish(model_id, status, error, job_id=None):
            log.info("training.ended", model_id=model_id, status=status, error=error)

    async def _has_model_artifact(self, model_id: str) -> bool:
        try:
            await Artifacts(self._artifacts, f"models/{model_id}/").manifest(MODEL_ARTIFACT)
        except (ArtifactNotFound, ArtifactCorrupt, ValueError):
            return False
        return True

    async def _settle(self, model_id: str) -> None:
        """Apply the workload's end now, if it ended (a follower waits for nothing)."""
        model = await self._registry.get(model_id)
        if model.final or not model.job_id:
            return
        with contextlib.suppress(Unavailable):
            job = await self._peers.get_job(model.job_id)
            if job is not None:
                await self.on_job(job)

    async def reconcile(self) -> None:
        """Submit what was accepted but not submitted; end what ended unseen."""
        for model in await self._registry.unfinished():
            try:
                if model.job_id is None:
                    if model.status == "not_started" and model.train_config:
                        await self._submit(model)
                    continue
                job = await self._peers.get_job(model.job_id)
                if job is None:
                    await self._registry.finish(
                        model.id,
                        "failed",
                        "the training workload was lost (the job-runner no longer knows it)",
                    )
                else:
                    await self.on_job(job)
            except Unavailable:
                return  # the job-runner is away: next round

    async def follow_jobs(self, interval: float = 30.0) -> None:
        """Watch the job-runner's events from the last revision applied (kept in the
        database, so a restarted orchestrator replays what it missed), reconciling on
        (re)connection and every `interval` seconds as a safety net. Runs until the watch is
        lost, then raises WatchLost: it is run under `Background.supervise`, which reconnects
        with backoff."""
        since: int | None = await self._registry.cursors.get(CURSOR) or None
        call = self._peers.watch({CREATED_BY[0]: CREATED_BY[1]}, since)
        try:
            await self.reconcile()
            last = asyncio.get_running_loop().time()
            async for response in _with_ticks(call, interval):
                if response is None or asyncio.get_running_loop().time() - last > interval:
                    await self.reconcile()
                    last = asyncio.get_running_loop().time()
                if response is not None:
                    try:
                        await self.on_job(response.event.job)
                    except Unavailable:
                        pass  # the next reconcile sees the job again
                    except Exception:  # never let one bad event stop the following
                        log.exception("training.event_failed", job_id=response.event.job.job_id)
                    if response.event.revision > (since or 0):
                        since = response.event.revision
                        await self._registry.cursors.save(CURSOR, since)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and since:
                # A revision this job-runner never issued (its database was replaced): start
                # over from now; reconcile() covers what that skips.
                log.warning("training.watch_cursor_reset", since=since)
                await self._registry.cursors.save(CURSOR, 0, reset=True)
            raise WatchLost(f"the job-runner's watch ended: {exc.code().name}") from exc
        finally:
            call.cancel()
        raise WatchLost("the job-runner closed the watch")


class WatchLost(ConnectionError):
    """The job-runner's WatchJobs stream ended (it restarted or is away)."""


async def _with_ticks(call: Any, interval: float) -> AsyncIterator[Any]:
    """The stream's messages, with None whenever `interval` passes without one."""
    iterator = call.__aiter__()
    pending: asyncio.Task[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield None
                continue
            task, pending = pending, None
            try:
                yield task.result()
            except StopAsyncIteration:
                return
    finally:
        if pending is not None:
            pending.cancel()


def _outcome(job: jr.Job, model: ModelView) -> tuple[str, str | None]:
    """The final status and error of a model whose workload ended without reporting its end."""
    if job.state == jr.JOB_STATE_CANCELLED:
        return "stopped", None
    if job.state == jr.JOB_STATE_SUCCEEDED:
        return "failed", "the trainer exited without reporting the training complete"
    reason = job.reason
    memory = model.train_config.get("memory_mb")
    if reason == jr.JOB_REASON_OOM_KILLED:
        return "failed", f"the trainer ran out of memory (limit {memory} MB); ask for more "
        "with job_options.allocation_memory"
    if reason == jr.JOB_REASON_DEADLINE_EXCEEDED:
        return "failed", "the training ran past its deadline and was stopped"
    if reason == jr.JOB_REASON_LOST:
        return "failed", "the training workload was lost"
    if reason == jr.JOB_REASON_SIGNALED:
        return "failed", f"the trainer was killed ({job.message or 'by a signal'})"
    if reason == jr.JOB_REASON_IMAGE_NOT_FOUND:
        return "failed", "the trainer image could not be pulled"
    return "failed", f"the trainer exited with code {job.exit_code}"


def _entry_config(info: msgs.FileInfo, uris: list[str]) -> dict[str, Any]:
    """A file entry as the NDB trainer reads it: its URIs, `options` (id_column, text_columns,
    metadata_columns, field_weights) and `metadata` (options.metadata, then the entry's)."""
    options = _dict(info.options) if info.HasField("options") else {}
    metadata = options.pop("metadata", None)
    entry: dict[str, Any] = {"uris": uris, "options": options}
    if not isinstance(metadata, dict):
        metadata = {}
    if info.HasField("metadata"):
        metadata.update(_dict(info.metadata))
    if metadata:
        entry["metadata"] = metadata
    if info.HasField("doc_id") and info.doc_id:
        entry["doc_id"] = info.doc_id
    return entry


def _folder_uri(storage: BlobStorage, folder: str) -> str:
    """The URI of a folder of the storage (ending in '/')."""
    uri = storage.uri(folder + "_")
    return uri[:-1]
