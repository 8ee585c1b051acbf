"""The provider's files and fine-tuning API on the one OpenAI-compatible test server.

    with OpenAIServer() as server:
        provider = FineTuningProvider(server, step_seconds=0.2)

Registers what the `openai` SDK calls for a fine-tuning: files (create as multipart, retrieve),
fine_tuning.jobs (create, retrieve, list with `metadata[key]=value` filters, cancel, list_events),
and answers chat completions with a fine-tuned model from that job's training file (the exact
question's SQL, else the SQL of the question sharing the most words), so an evaluation has real
SQL to run. Uploaded JSONL is validated as the provider does (at least 10 lines, each a JSON
object whose `messages` have system/user/assistant roles with string contents, an assistant
message last). Jobs advance validating_files -> queued -> running -> succeeded on the server's own
clock, one state per `step_seconds`; `fail(job_id, message)` makes one fail, `fail_next` the next
created. `jobs_created` counts creations (a resumed workload must not add one).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP

from tests.support.openai_server import JSON, ApiError, OpenAIServer, Request

_STEPS = ("validating_files", "queued", "running", "succeeded")
MIN_LINES = 10


@dataclass
class _File:
    id: str
    filename: str
    body: bytes
    created: float
    error: str | None = None

    def status(self, now: float, step: float) -> str:
        if now - self.created < step:
            return "uploaded"
        return "error" if self.error else "processed"

    def to_json(self, now: float, step: float) -> JSON:
        status = self.status(now, step)
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.body),
            "created_at": int(self.created),
            "filename": self.filename,
            "purpose": "fine-tune",
            "status": status,
            "status_details": self.error if status == "error" else None,
        }


@dataclass
class _Job:
    id: str
    model: str
    training_file: str
    hyperparameters: JSON
    suffix: str | None
    metadata: dict[str, str] | None
    created: float
    examples: list[tuple[str, str]]
    fail_message: str | None = None
    cancelled_at: float | None = None
    events: list[JSON] = field(default_factory=list)

    def status(self, now: float, step: float) -> str:
        if self.cancelled_at is not None:
            return "cancelled"
        index = min(int((now - self.created) / step), len(_STEPS) - 1)
        if self.fail_message is not None and index >= 2:
            return "failed"
        return _STEPS[index]

    def fine_tuned_model(self) -> str:
        return f"ft:{self.model}:trainyard-test:{self.suffix or 'model'}:{self.id[-6:]}"

    def to_json(self, now: float, step: float) -> JSON:
        status = self.status(now, step)
        hyper = {
            "n_epochs": self.hyperparameters.get("n_epochs", 3),
            "batch_size": self.hyperparameters.get("batch_size", 1),
            "learning_rate_multiplier": self.hyperparameters.get("learning_rate_multiplier", 2),
        }
        return {
            "id": self.id,
            "object": "fine_tuning.job",
            "created_at": int(self.created),
            "finished_at": int(now) if status in ("succeeded", "failed", "cancelled") else None,
            "model": self.model,
            "fine_tuned_model": self.fine_tuned_model() if status == "succeeded" else None,
            "organization_id": "org-trainyard-test",
            "status": status,
            "hyperparameters": hyper,
            "training_file": self.training_file,
            "validation_file": None,
            "result_files": [],
            "trained_tokens": sum(len(q.split()) + len(a.split()) for q, a in self.examples)
            if status == "succeeded"
            else None,
            "error": {"code": "job_failed", "message": self.fail_message, "param": None}
            if status == "failed"
            else None,
            "metadata": self.metadata,
            "seed": 0,
            "suffix": self.suffix,
            "estimated_finish": None,
            "integrations": [],
        }


def _validate_jsonl(body: bytes) -> tuple[list[tuple[str, str]], str | None]:
    """The (question, answer) pairs of a training file, or the provider's complaint."""
    try:
        lines = [line for line in body.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        return [], "the file is not UTF-8"
    if len(lines) < MIN_LINES:
        return [], f"Training file has {len(lines)} example(s), but must have at least {MIN_LINES}"
    pairs = []
    for number, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
        except ValueError:
            return [], f"Invalid file format. Line {number} is not valid JSON"
        messages = item.get("messages") if isinstance(item, dict) else None
        if not isinstance(messages, list) or not messages:
            return [], f"Invalid file format. Line {number}: 'messages' is missing"
        roles = []
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                return [], f"Invalid file format. Line {number}: each message needs a content"
            if message.get("role") not in ("system", "user", "assistant"):
                return [], f"Invalid file format. Line {number}: unknown role"
            roles.append(message["role"])
        if roles[-1] != "assistant":
            return [], f"Invalid file format. Line {number}: the last message must be assistant's"
        question = next(m["content"] for m in messages if m["role"] == "user")
        pairs.append((question, messages[-1]["content"]))
    return pairs, None


class FineTuningProvider:
    def __init__(self, server: OpenAIServer, step_seconds: float = 0.2) -> None:
        self.server = server
        self.step = step_seconds
        self.files: dict[str, _File] = {}
        self.jobs: dict[str, _Job] = {}
        self.jobs_created = 0
        self._fail_next: str | None = None
        self._lock = threading.Lock()
        server.route("POST", "/v1/files", self._create_file)
        server.route("GET", "/v1/files/{file_id}", self._get_file)
        server.route("POST", "/v1/fine_tuning/jobs", self._create_job)
        server.route("GET", "/v1/fine_tuning/jobs", self._list_jobs)
        server.route("GET", "/v1/fine_tuning/jobs/{job_id}", self._get_job)
        server.route("POST", "/v1/fine_tuning/jobs/{job_id}/cancel", self._cancel_job)
        server.route("GET", "/v1/fine_tuning/jobs/{job_id}/events", self._events)
        self._chat = server.chat
        server.chat = self._answer

    # -- test controls ---------------------------------------------------------------------
    def fail(self, job_id: str, message: str) -> None:
        with self._lock:
            self.jobs[job_id].fail_message = message

    def fail_next(self, message: str) -> None:
        self._fail_next = message

    # -- files -----------------------------------------------------------------------------
    def _create_file(self, request: Request) -> tuple[int, JSON]:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError(400, "files must be uploaded as multipart/form-data")
        raw = f"Content-Type: {content_type}\r\n\r\n".encode() + request.body
        message = BytesParser(policy=HTTP).parsebytes(raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = (part.get_filename(), payload)
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if purpose != "fine-tune":
            raise ApiError(400, f"unsupported purpose {purpose!r}")
        if "file" not in fields:
            raise ApiError(400, "'file' is required")
        filename, body = fields["file"]
        _pairs, problem = _validate_jsonl(body)
        item = _File(self.server.new_id("file"), filename or "upload.jsonl", body, time.time())
        item.error = problem
        with self._lock:
            self.files[item.id] = item
        return 200, item.to_json(time.time(), self.step)

    def _get_file(self, request: Request) -> tuple[int, JSON]:
        item = self.files.get(request.params["file_id"])
        if item is None:
            raise ApiError(404, f"No such File object: {request.params['file_id']}")
        return 200, item.to_json(time.time(), self.step)

    # -- jobs ------------------------------------------------------------------------------
    def _job(self, job_id: str) -> _Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"Could not find fine tune job: {job_id}")
        return job

    def _create_job(self, request: Request) -> tuple[int, JSON]:
        body = request.json()
        model, file_id = body.get("model"), body.get("training_file")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "'model' is required")
        item = self.files.get(str(file_id))
        if item is None:
            raise ApiError(400, f"invalid training_file: {file_id}")
        now = time.time()
        status = item.status(now, self.step)
        if status == "uploaded":
            raise ApiError(
                400, f"File '{item.id}' is still being processed and is not ready to be used"
            )
        if status == "error":
            raise ApiError(400, f"File '{item.id}' is not valid: {item.error}")
        pairs, _problem = _validate_jsonl(item.body)
        metadata = body.get("metadata")
        job = _Job(
            id=self.server.new_id("ftjob"),
            model=model,
            training_file=item.id,
            hyperparameters=dict(body.get("hyperparameters") or {}),
            suffix=body.get("suffix"),
            metadata=dict(metadata) if isinstance(metadata, dict) else None,
            created=now,
            examples=pairs,
            fail_message=self._fail_next,
        )
        self._fail_next = None
        with self._lock:
            self.jobs[job.id] = job
            self.jobs_created += 1
        return 200, job.to_json(now, self.step)

    def _list_jobs(self, request: Request) -> tuple[int, JSON]:
        wanted = {
            key[len("metadata[") : -1]: value
            for key, value in request.query.items()
            if key.startswith("metadata[") and key.endswith("]")
        }
        now = time.time()
        jobs = sorted(self.jobs.values(), key=lambda j: j.created, reverse=True)
        found = [
            j.to_json(now, self.step)
            for j in jobs
            if all((j.metadata or {}).get(k) == v for k, v in wanted.items())
        ]
        limit = int(request.query.get("limit", "20"))
        return 200, {"object": "list", "data": found[:limit], "has_more": len(found) > limit}

    def _get_job(self, request: Request) -> tuple[int, JSON]:
        return 200, self._job(request.params["job_id"]).to_json(time.time(), self.step)

    def _cancel_job(self, request: Request) -> tuple[int, JSON]:
        job = self._job(request.params["job_id"])
        now = time.time()
        if job.status(now, self.step) in ("succeeded", "failed", "cancelled"):
            raise ApiError(400, "Job has already completed")
        job.cancelled_at = now
        return 200, job.to_json(now, self.step)

    def _events(self, request: Request) -> tuple[int, JSON]:
        job = self._job(request.params["job_id"])
        now = time.time()
        status = job.status(now, self.step)
        reached = _STEPS[: _STEPS.index(status) + 1] if status in _STEPS else [*_STEPS[:3], status]
        data = [
            {
                "id": f"{job.id}-event-{n}",
                "object": "fine_tuning.job.event",
                "created_at": int(job.created + n * self.step),
                "level": "error" if state == "failed" else "info",
                "message": job.fail_message if state == "failed" else f"Job is {state}",
                "type": "message",
            }
            for n, state in enumerate(reached)
        ]
        data.reverse()
        return 200, {"object": "list", "data": data, "has_more": False}

    # -- chat with a fine-tuned model ------------------------------------------------------
    def _answer(self, request: JSON) -> str:
        model = str(request.get("model", ""))
        job = next((j for j in self.jobs.values() if j.fine_tuned_model() == model), None)
        if job is None:
            return self._chat(request)
        question = next(
            (m.get("content", "") for m in request.get("messages", []) if m.get("role") == "user"),
            "",
        )
        exact = [answer for q, answer in job.examples if q == question]
        if exact:
            return exact[0]
        words = set(str(question).lower().split())
        best = max(job.examples, key=lambda pair: len(words & set(pair[0].lower().split())))
        return best[1]
