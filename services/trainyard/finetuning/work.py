"""Finetunings: validating a request, the workload that runs it (a job-runner job of
`python -m trainyard.trainers.finetuning`), its reports, the provider's view on reads, cancel
and delete, and the reconcile that keeps every accepted finetuning going.

The workload gets its config, secrets included (the connection URI with its password, the
provider key), from GetFinetuningWork with its job token: the job's stored spec carries only
the finetuning id and the callback. A workload that ends without ending its finetuning (killed,
lost, its node gone) is started again, up to `max_workload_attempts` in all; the library finds
the provider job it created before (metadata `trainyard_finetuning_id`), so a finetuning never
has two provider jobs.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import grpc
import openai
import structlog
from google.protobuf import duration_pb2, json_format, struct_pb2

from trainyard.api.finetuning.v1 import messages_pb2 as msgs
from trainyard.api.jobrunner.v1 import messages_pb2 as jr
from trainyard.api.jobrunner.v1 import service_pb2_grpc as jr_grpc
from trainyard.finetuning.connections import UriCipher
from trainyard.finetuning.settings import FinetuningSettings
from trainyard.finetuning.store import (
    STATUSES,
    FinetuningStore,
    FinetuningView,
)
from trainyard.runtime.auth import TokenAuthority
from trainyard.runtime.clients import ServiceClients, ServiceToken
from trainyard.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from trainyard.runtime.jobwatch import follow_job_events

log = structlog.get_logger("trainyard.finetuning.work")

CREATED_BY = ("created-by", "trainyard-finetuning")
FINETUNING_LABEL = "finetuning-id"
CURSOR = "jobrunner-events"
WORKLOAD_MODULE = "trainyard.trainers.finetuning"
#: The provider's fewest training examples.
MIN_TRAINING_RECORDS = 10
PROVIDERS = ("openai",)
#: gpt-3.5-turbo and gpt-4 families, with dated and suffixed variants (gpt-3.5-turbo-1106,
#: gpt-4o-mini-2024-07-18, gpt-4.1-nano, ...).
MODEL_NAME = re.compile(r"^(gpt-3\.5-turbo|gpt-4(o|\.1|\.5)?)(-[a-z0-9]+)*$")
PARAMETER_DEFAULTS = {"n_epochs": "3", "batch_size": "1", "learning_rate_multiplier": "auto"}
#: The provider's bounds (OpenAI's documented ranges).
INTEGER_BOUNDS = {"n_epochs": (1, 50), "batch_size": (1, 256)}
LEARNING_RATE_MAX = 10.0
MAX_ALIAS_CHARS = 255
MAX_METADATA_ENTRIES = 64
MAX_METADATA_CHARS = 1024
GONE_WORKLOAD = "the finetuning workload was lost (the job-runner no longer knows it)"


def workload_job_name(finetuning_id: str) -> str:
    return f"finetuning-{finetuning_id}"


def iso(value: datetime) -> str:
    """The document's created_at: ISO 8601 in UTC without a zone suffix."""
    return value.replace(tzinfo=None).isoformat(timespec="microseconds")


def _invalid(field: str, message: str, reason: str = "INVALID_FINETUNING") -> InvalidArgument:
    return InvalidArgument(message, reason=reason, violations=[FieldViolation(field, message)])


def check_metadata(values: Mapping[str, str], field: str = "metadata") -> dict[str, str] | None:
    if len(values) > MAX_METADATA_ENTRIES:
        raise _invalid(field, f"{field} has {len(values)} entries; at most {MAX_METADATA_ENTRIES}")
    for key, value in values.items():
        if len(key) > MAX_METADATA_CHARS or len(value) > MAX_METADATA_CHARS:
            raise _invalid(
                field, f"{field} keys and values are at most {MAX_METADATA_CHARS} characters"
            )
    return dict(values) if values else None


def _parameter_text(key: str, value: struct_pb2.Value) -> str:
    kind = value.WhichOneof("kind")
    if kind == "null_value":
        return PARAMETER_DEFAULTS[key]
    if kind == "number_value":
        number = value.number_value
        text = str(int(number)) if number.is_integer() else repr(number)
    elif kind == "string_value":
        text = value.string_value.strip()
    else:
        text = ""
    field = f"base_llm.model_parameters.{key}"
    if text == "auto":
        return text
    if key in INTEGER_BOUNDS:
        low, high = INTEGER_BOUNDS[key]
        if not re.fullmatch(r"\d{1,6}", text) or not low <= int(text) <= high:
            raise _invalid(field, f'{field} must be an integer from {low} to {high} or "auto"')
        return str(int(text))
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if not 0 < number <= LEARNING_RATE_MAX:
        raise _invalid(
            field, f'{field} must be a number above 0 and at most {LEARNING_RATE_MAX:g} or "auto"'
        )
    return text


def check_base_llm(base: msgs.BaseLLM | None) -> dict[str, Any]:
    """The base_llm as answered: provider, model and the parameters (strings, defaults in)."""
    if base is None or not base.model_name.strip():
        raise _invalid("base_llm.model_name", "base_llm.model_name is required")
    provider = base.model_provider.strip() or "openai"
    if provider not in PROVIDERS:
        raise _invalid(
            "base_llm.model_provider",
            f"model provider {provider[:60]!r} is not supported; the only provider is openai",
            reason="PROVIDER_NOT_SUPPORTED",
        )
    name = base.model_name.strip()
    if not MODEL_NAME.fullmatch(name):
        raise _invalid(
            "base_llm.model_name", f"Model {name[:100]} not supported", "MODEL_NOT_SUPPORTED"
        )
    given = dict(base.model_parameters.fields)
    unknown = sorted(set(given) - set(PARAMETER_DEFAULTS))
    if unknown:
        raise _invalid(
            "base_llm.model_parameters",
            f"unknown model parameter {unknown[0][:60]!r}; the parameters are "
            + ", ".join(PARAMETER_DEFAULTS),
        )
    parameters = {
        key: _parameter_text(key, given[key]) if key in given else default
        for key, default in PARAMETER_DEFAULTS.items()
    }
    return {"model_provider": provider, "model_name": name, "model_parameters": parameters}


def workload_parameters(parameters: Mapping[str, str]) -> dict[str, Any]:
    """The stored (string) parameters as the provider takes them."""
    typed: dict[str, Any] = {}
    for key, text in parameters.items():
        if text == "auto":
            typed[key] = "auto"
        elif key in INTEGER_BOUNDS:
            typed[key] = int(text)
        else:
            number = float(text)
            typed[key] = int(number) if number.is_integer() else number
    return typed


def held_out_count(total: int, settings: FinetuningSettings) -> int:
    """How many of `total` records the evaluation keeps out of training (0: none)."""
    if settings.eval_share <= 0:
        return 0
    count = max(settings.eval_min_records, round(total * settings.eval_share))
    return count if total - count >= MIN_TRAINING_RECORDS else 0


def finetuning_json(view: FinetuningView) -> dict[str, Any]:
    """The documented finetuning object: every key, null where unset."""
    return {
        "id": view.id,
        "alias": view.alias,
        "db_connection_id": view.db_connection_id,
        "status": view.status,
        "error": view.error,
        "base_llm": view.base_llm,
        "finetuning_file_id": view.provider_file_id,
        "finetuning_job_id": view.provider_job_id,
        "model_id": view.model_id,
        "created_at": iso(view.created_at),
        "golden_records": view.golden_records,
        "metadata": view.meta,
    }


def finetuning_message(view: FinetuningView) -> msgs.Finetuning:
    base = msgs.BaseLLM(
        model_provider=view.base_llm["model_provider"], model_name=view.base_llm["model_name"]
    )
    base.model_parameters.update(view.base_llm.get("model_parameters") or {})
    message = msgs.Finetuning(
        id=view.id,
        db_connection_id=view.db_connection_id,
        alias=view.alias or "",
        status=view.status,
        base_llm=base,
        created_at=iso(view.created_at),
        golden_records=view.golden_records,
        metadata=view.meta or {},
    )
    for field, value in (
        ("error", view.error),
        ("finetuning_file_id", view.provider_file_id),
        ("finetuning_job_id", view.provider_job_id),
        ("model_id", view.model_id),
    ):
        if value is not None:
            setattr(message, field, value)
    return message


def evaluation_message(view: FinetuningView) -> msgs.FinetuningEvaluation:
    data = dict(view.evaluation or {})
    message = msgs.FinetuningEvaluation(finetuning_id=view.id, held_out=view.held_out)
    status = data.get("status") or "pending"
    message.status = status
    message.error = str(data.get("error") or "")
    if status == "done":
        message.total = int(data.get("total", 0))
        message.execution_accuracy = float(data.get("execution_accuracy", 0.0))
        message.exact_match = float(data.get("exact_match", 0.0))
        for failure in data.get("failures") or []:
            message.failures.add(
                question=str(failure.get("question", "")),
                golden_sql=str(failure.get("golden_sql", "")),
                generated_sql=str(failure.get("generated_sql") or ""),
                error=str(failure.get("error") or ""),
            )
    elif status == "pending" and view.final and view.status != "succeeded":
        message.status = "failed"
        message.error = f"the finetuning ended {view.status}: no model to evaluate"
    return message


def _evaluation_summary(evaluation: Mapping[str, Any]) -> dict[str, str]:
    if evaluation.get("status") != "done":
        return {"evaluation_status": str(evaluation.get("status") or "failed")}
    return {
        "evaluation_status": "done",
        "evaluation_execution_accuracy": f"{float(evaluation.get('execution_accuracy', 0)):.4f}",
        "evaluation_exact_match": f"{float(evaluation.get('exact_match', 0)):.4f}",
        "evaluation_total": str(int(evaluation.get("total", 0))),
    }


class Finetunings:
    def __init__(
        self,
        store: FinetuningStore,
        cipher: UriCipher,
        authority: TokenAuthority,
        settings: FinetuningSettings,
        jobrunner_address: str,
        *,
        deadline: float = 15.0,
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._authority = authority
        self._settings = settings
        self._clients = ServiceClients(
            {"jobrunner": jobrunner_address},
            ServiceToken(authority, "finetuning"),
            deadline=deadline,
        )
        self._provider: openai.AsyncOpenAI | None = None
        #: Where the workload calls back; set once the server listens (app.py).
        self.address = ""

    @property
    def _jobs(self) -> Any:
        return self._clients.stub("jobrunner", jr_grpc.JobRunnerServiceStub)

    def provider(self) -> openai.AsyncOpenAI | None:
        """The provider's client for reads and cancels; None without a key."""
        key = self._settings.api_key()
        if not key:
            return None
        if self._provider is None:
            self._provider = openai.AsyncOpenAI(
                api_key=key,
                base_url=self._settings.provider_base_url or None,
                max_retries=1,
                timeout=self._settings.provider_timeout_seconds,
            )
        return self._provider

    async def close(self) -> None:
        if self._provider is not None:
            await self._provider.close()
        await self._clients.close()

    # ---- creating one ----------------------------------------------------------------------

    async def create(self, user: str, request: msgs.CreateFinetuningRequest) -> FinetuningView:
        connection_id = request.db_connection_id.strip()
        if not connection_id:
            raise _invalid("db_connection_id", "db_connection_id is required")
        if len(request.alias) > MAX_ALIAS_CHARS:
            raise _invalid("alias", f"alias is at most {MAX_ALIAS_CHARS} characters")
        connection = await self._store.connection(user, connection_id)
        base_llm = check_base_llm(request.base_llm if request.HasField("base_llm") else None)
        meta = check_metadata(request.metadata)
        if request.golden_records:
            ids = list(dict.fromkeys(request.golden_records))
            found = await self._store.golden_records(user, connection_id=connection.id, ids=ids)
            known = {record.id for record in found}
            missing = [record_id for record_id in ids if record_id not in known]
            if missing:
                raise NotFound(
                    "Golden record not found",
                    reason="GOLDEN_RECORD_NOT_FOUND",
                    metadata={"golden_record_id": missing[0][:100]},
                )
            by_id = {record.id: record for record in found}
            records = [by_id[record_id] for record_id in ids]
        else:
            records = await self._store.golden_records(user, connection_id=connection.id)
            if not records:
                raise NotFound("No golden records found", reason="NO_GOLDEN_RECORDS")
        if len(records) < MIN_TRAINING_RECORDS:
            raise _invalid(
                "golden_records",
                f"at least {MIN_TRAINING_RECORDS} golden records are required to finetune an "
                f"openai model; the finetuning would have {len(records)}",
                reason="TOO_FEW_GOLDEN_RECORDS",
            )
        finetuning_id = str(uuid.uuid4())
        count = held_out_count(len(records), self._settings)
        chosen = random.Random(finetuning_id).sample(range(len(records)), count)
        held_out = [records[index].id for index in sorted(chosen)]
        if count:
            evaluation: dict[str, Any] = {"status": "pending"}
        else:
            needed = MIN_TRAINING_RECORDS + self._settings.eval_min_records
            evaluation = {
                "status": "skipped",
                "error": f"no golden records were held out: evaluating needs at least {needed} "
                f"(the provider trains on {MIN_TRAINING_RECORDS} or more)",
            }
        view = await self._store.create_finetuning(
            finetuning_id=finetuning_id,
            owner=user,
            db_connection_id=connection.id,
            alias=request.alias.strip() or None,
            base_llm=base_llm,
            golden_records=[record.id for record in records],
            held_out=held_out,
            records=[
                {"id": r.id, "question": r.question, "sql_query": r.sql_query} for r in records
            ],
            meta=meta,
            evaluation=evaluation,
        )
        log.info("finetuning.created", finetuning=view.id, records=len(records), held_out=count)
        try:
            view = await self._submit(view)
        except Unavailable:
            log.warning("finetuning.submit_deferred", finetuning=view.id)
        return view

    # ---- the workload ----------------------------------------------------------------------

    async def _submit(self, view: FinetuningView) -> FinetuningView:
        s = self._settings
        attempt = view.attempts + 1
        config = {
            "finetuning_id": view.id,
            "platform": {
                "callback_address": self.address,
                "job_token": self._authority.mint_job(
                    view.owner,
                    model_id=view.id,
                    job=workload_job_name(view.id),
                    ttl=s.training_deadline_seconds + 3600,
                ),
            },
        }
        spec = jr.JobSpec(
            image=s.trainer_image,
            command=[s.trainer_python, "-m", WORKLOAD_MODULE],
            resources=jr.Resources(cores=s.trainer_cores, memory_mb=s.trainer_memory_mb),
            deadline=duration_pb2.Duration(seconds=s.training_deadline_seconds),
            labels={CREATED_BY[0]: CREATED_BY[1], FINETUNING_LABEL: view.id},
            name=f"{workload_job_name(view.id)}-{attempt}",
            config_json=json.dumps(config),
        )
        try:
            response = await self._jobs.SubmitJob(
                jr.SubmitJobRequest(spec=spec, idempotency_key=f"finetuning:{view.id}:{attempt}")
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return await self._store.update(
                    view.id, status="failed", error=f"the workload was refused: {exc.details()}"
                )
            raise Unavailable(
                "the job-runner is not reachable right now; the finetuning starts when it is",
                reason="JOBRUNNER_UNAVAILABLE",
            ) from exc
        log.info("finetuning.submitted", finetuning=view.id, job_id=response.job.job_id)
        return await self._store.update(view.id, job_id=response.job.job_id, attempts=attempt)

    async def work(self, finetuning_id: str, job: str | None) -> dict[str, Any]:
        """The workload's config (GetFinetuningWork)."""
        view = await self._workload_finetuning(finetuning_id, job)
        if view.final and not _evaluation_pending(view):
            raise FailedPrecondition(
                f"the finetuning {view.id} has already ended ({view.status})",
                reason="FINETUNING_ENDED",
            )
        connection = await self._store.connection_by_id(view.db_connection_id)
        if connection is None:
            raise FailedPrecondition(
                "the finetuning's database connection was deleted", reason="CONNECTION_DELETED"
            )
        held = set(view.held_out)
        base = view.base_llm
        return {
            "finetuning_id": view.id,
            "connection_uri": self._cipher.decrypt(connection.uri_encrypted),
            "schemas": connection.schemas or None,
            "train_records": [r for r in view.records if r["id"] not in held],
            "eval_records": [r for r in view.records if r["id"] in held],
            "base_llm": {
                "model_provider": base["model_provider"],
                "model_name": base["model_name"],
                "model_parameters": workload_parameters(base.get("model_parameters") or {}),
            },
            "provider": {
                "base_url": self._settings.provider_base_url or "",
                "api_key": self._settings.api_key(),
            },
            "poll_interval_seconds": self._settings.poll_interval_seconds,
            "eval": {
                "row_limit": self._settings.eval_row_limit,
                "timeout_seconds": self._settings.eval_timeout_seconds,
            },
        }

    async def _workload_finetuning(self, finetuning_id: str, job: str | None) -> FinetuningView:
        view = await self._store.finetuning_by_id(finetuning_id)
        if view is None or job != workload_job_name(finetuning_id):
            raise NotFound("this job token names no finetuning", reason="FINETUNING_NOT_FOUND")
        return view

    async def report(
        self, finetuning_id: str, job: str | None, request: msgs.ReportFinetuningProgressRequest
    ) -> None:
        """A workload's ReportFinetuningProgress."""
        if request.HasField("status") and request.status not in STATUSES:
            raise _invalid(
                "status", f"status {request.status[:40]!r} is not one of " + ", ".join(STATUSES)
            )
        try:
            view = await self._workload_finetuning(finetuning_id, job)
        except NotFound:
            if request.HasField("provider_job_id") and job == workload_job_name(finetuning_id):
                await self._cancel_at_provider(request.provider_job_id)  # deleted meanwhile
            raise
        present = {descriptor.name: value for descriptor, value in request.ListFields()}
        changes: dict[str, Any] = {
            field: present[field] or None
            for field in ("provider_file_id", "provider_job_id", "model_id", "error", "status")
            if field in present
        }
        if changes.get("status") == "failed" and not changes.get("error") and not view.error:
            changes["error"] = "the provider's fine-tuning job failed"
        if request.HasField("evaluation"):
            evaluation = json_format.MessageToDict(
                request.evaluation, preserving_proto_field_name=True
            )
            evaluation.setdefault("status", "done")
            evaluation.pop("finetuning_id", None)
            evaluation.pop("held_out", None)
            changes["evaluation"] = evaluation
            changes["meta"] = {**(view.meta or {}), **_evaluation_summary(evaluation)}
        if view.status == "cancelled" and changes.get("provider_job_id"):
            # Cancelled while the workload was creating the provider's job.
            await self._cancel_at_provider(changes["provider_job_id"])
        await self._store.update(view.id, **changes)

    # ---- reads refresh from the provider ---------------------------------------------------

    async def refreshed(self, view: FinetuningView) -> FinetuningView:
        """The finetuning with the provider's current view of its job (stored); the stored one
        when the provider cannot be asked."""
        client = self.provider()
        if view.final or not view.provider_job_id or client is None:
            return view
        try:
            job = await client.fine_tuning.jobs.retrieve(view.provider_job_id)
        except (openai.APIError, ValueError) as exc:
            log.info("finetuning.refresh_failed", finetuning=view.id, error=str(exc)[:200])
            return view
        changes: dict[str, Any] = {}
        if job.status in STATUSES and job.status != view.status:
            changes["status"] = job.status
        if job.fine_tuned_model and job.fine_tuned_model != view.model_id:
            changes["model_id"] = job.fine_tuned_model
        if job.status == "failed":
            changes["error"] = (job.error.message if job.error else None) or (
                "the provider's fine-tuning job failed"
            )
        if job.training_file and not view.provider_file_id:
            changes["provider_file_id"] = job.training_file
        if not changes:
            return view
        return await self._store.update(view.id, **changes)

    async def get(self, user: str, finetuning_id: str) -> FinetuningView:
        return await self.refreshed(await self._store.finetuning(user, finetuning_id))

    # ---- cancel and delete -----------------------------------------------------------------

    async def _cancel_at_provider(self, provider_job_id: str) -> str | None:
        """Cancel the provider's job; its status after that (None: it could not be asked)."""
        client = self.provider()
        if client is None:
            return None
        try:
            job = await client.fine_tuning.jobs.cancel(provider_job_id)
            return job.status
        except openai.APIStatusError as exc:
            if exc.status_code in (400, 404, 409):
                try:
                    return (await client.fine_tuning.jobs.retrieve(provider_job_id)).status
                except openai.APIError:
                    return None
            raise Unavailable(
                f"the provider could not cancel its job ({exc.status_code}); try again",
                reason="PROVIDER_UNAVAILABLE",
            ) from exc
        except openai.APIError as exc:
            raise Unavailable(
                "the provider could not be reached to cancel its job; try again",
                reason="PROVIDER_UNAVAILABLE",
            ) from exc

    async def cancel(self, user: str, finetuning_id: str) -> FinetuningView:
        view = await self.get(user, finetuning_id)
        if view.final:
            raise FailedPrecondition(
                f"the finetuning has already ended ({view.status}); only a queued or running "
                "finetuning can be cancelled",
                reason="FINETUNING_ENDED",
            )
        if view.provider_job_id:
            status = await self._cancel_at_provider(view.provider_job_id)
            if status == "succeeded":
                view = await self.refreshed(view)
                raise FailedPrecondition(
                    "the finetuning has already ended (succeeded); it cannot be cancelled",
                    reason="FINETUNING_ENDED",
                )
        view = await self._store.update(view.id, force=True, status="cancelled", error=None)
        await self._stop_workload(view)
        log.info("finetuning.cancelled", finetuning=view.id)
        return view

    async def delete(self, user: str, finetuning_id: str) -> None:
        view = await self._store.finetuning(user, finetuning_id)
        if not view.final:
            if view.provider_job_id:
                await self._cancel_at_provider(view.provider_job_id)
            await self._store.update(view.id, force=True, status="cancelled")
            await self._stop_workload(view)
        await self._store.delete_finetuning(user, finetuning_id)
        log.info("finetuning.deleted", finetuning=finetuning_id)

    async def _stop_workload(self, view: FinetuningView) -> None:
        if not view.job_id:
            return
        try:
            await self._jobs.CancelJob(jr.CancelJobRequest(job_id=view.job_id))
        except grpc.aio.AioRpcError as exc:
            # Ended already, or the job-runner is away: the workload then finds its finetuning
            # cancelled (GetFinetuningWork, its next report) and stops.
            log.info("finetuning.workload_cancel_failed", job_id=view.job_id, code=exc.code().name)

    # ---- following the workloads -----------------------------------------------------------

    async def on_job(self, job: jr.Job) -> None:
        finetuning_id = dict(job.spec.labels).get(FINETUNING_LABEL) or ""
        if not finetuning_id or job.state not in (
            jr.JOB_STATE_SUCCEEDED,
            jr.JOB_STATE_FAILED,
            jr.JOB_STATE_CANCELLED,
        ):
            return
        view = await self._store.finetuning_by_id(finetuning_id)
        if view is None or view.job_id != job.job_id:
            return
        if view.final:
            if _evaluation_pending(view):
                await self._evaluation_ended(view, job)
            return
        view = await self.refreshed(view)
        if view.final:
            return
        await self._workload_ended(view, _outcome(job))

    async def _workload_ended(self, view: FinetuningView, outcome: str) -> None:
        """The workload ended while its finetuning goes on: start another (it resumes the same
        provider job), or fail the finetuning once the attempts are spent."""
        if view.attempts >= self._settings.max_workload_attempts:
            await self._store.update(
                view.id,
                status="failed",
                error=f"{outcome} ({view.attempts} attempts); start a new finetuning",
            )
            log.warning("finetuning.workload_gave_up", finetuning=view.id, outcome=outcome)
            return
        log.info("finetuning.workload_restarted", finetuning=view.id, outcome=outcome)
        await self._submit(view)

    async def _evaluation_ended(self, view: FinetuningView, job: jr.Job) -> None:
        """The workload of a succeeded finetuning ended before reporting its evaluation."""
        if job.state != jr.JOB_STATE_SUCCEEDED and (
            view.attempts < self._settings.max_workload_attempts
        ):
            await self._submit(view)
            return
        evaluation = {"status": "failed", "error": f"{_outcome(job)} without an evaluation"}
        await self._store.update(
            view.id,
            evaluation=evaluation,
            meta={**(view.meta or {}), **_evaluation_summary(evaluation)},
        )

    async def reconcile(self) -> None:
        """Submit what was accepted but not submitted; act on workloads that ended unseen."""
        for view in await self._store.unfinished():
            try:
                if view.job_id is None:
                    await self._submit(view)
                    continue
                try:
                    response = await self._jobs.GetJob(jr.GetJobRequest(job_id=view.job_id))
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:
                        await self._workload_ended(view, GONE_WORKLOAD)
                        continue
                    return
                await self.on_job(response.job)
            except Unavailable:
                return

    async def follow_jobs(self) -> None:
        await follow_job_events(
            self._jobs,
            {CREATED_BY[0]: CREATED_BY[1]},
            cursors=self._store.cursors,
            cursor=CURSOR,
            on_job=self.on_job,
            reconcile=self.reconcile,
        )


def _evaluation_pending(view: FinetuningView) -> bool:
    return view.status == "succeeded" and (view.evaluation or {}).get("status") == "pending"


def _outcome(job: jr.Job) -> str:
    if job.state == jr.JOB_STATE_CANCELLED:
        return "the finetuning workload was cancelled"
    if job.state == jr.JOB_STATE_SUCCEEDED:
        return "the finetuning workload exited before its provider job ended"
    reasons = {
        jr.JOB_REASON_OOM_KILLED: "the finetuning workload ran out of memory",
        jr.JOB_REASON_DEADLINE_EXCEEDED: "the finetuning ran past its deadline and was stopped",
        jr.JOB_REASON_LOST: GONE_WORKLOAD,
        jr.JOB_REASON_SIGNALED: f"the finetuning workload was killed ({job.message or 'a signal'})",
        jr.JOB_REASON_IMAGE_NOT_FOUND: "the workload image could not be pulled",
    }
    return reasons.get(job.reason, f"the finetuning workload exited with code {job.exit_code}")
