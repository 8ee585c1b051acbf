"""The provider's files and fine-tuning API on the one OpenAI test server (openai_server.py).

    with OpenAIServer() as server:
        provider = FineTuningProvider(server, step_seconds=0.05)   # or .register(server, ...)
        ...                                  # the real SDK: files.create, fine_tuning.jobs.*
        provider.fail_next_job("The job failed due to an invalid training file.")
        assert provider.jobs_created == 1

Files validate their JSONL like the provider (≥ 10 examples, each a JSON object with `messages`
of system/user/assistant roles and non-empty string contents, an assistant message, size
limits) and go `uploaded` → `processed` (or `error` with `status_details`) on the server's own
clock. Jobs go validating_files → queued → running → succeeded, one `step_seconds` each, computed
from the time they were created (so no thread drives them); a job told to fail ends `failed` with
`error {code, message, param}` after running. Chat completions whose model is a job's
`fine_tuned_model` answer from that job's training file: the SQL of the exact question, else of
the closest one; other models get the server's `chat` reply.
"""

from __future__ import annotations

import difflib
import email.parser
import email.policy
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.openai_server import JSON, ApiError, OpenAIServer, Request

MIN_EXAMPLES = 10
MAX_FILE_BYTES = 512 * 1024 * 1024
# Per-example limit, counted as whitespace-separated words (the test server has no tokenizer).
MAX_EXAMPLE_WORDS = 65_536
ROLES = {"system", "user", "assistant"}
MODELS = ("gpt-3.5-turbo", "gpt-4o-mini", "gpt-4o", "gpt-4", "gpt-4.1", "babbage-002", "davinci")
JOB_STEPS = ("validating_files", "queued", "running")
ORGANIZATION = "org-trainyard-test"


def validate_jsonl(content: bytes) -> str | None:
    """The provider's check of a fine-tuning file: None when valid, else its status_details."""
    if len(content) > MAX_FILE_BYTES:
        return f"File size exceeds the limit of {MAX_FILE_BYTES} bytes."
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return "Invalid file format. The file must be UTF-8 encoded JSONL."
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < MIN_EXAMPLES:
        return (
            f"Invalid file format. Training file has {len(lines)} example(s), but must have at "
            f"least {MIN_EXAMPLES} examples."
        )
    for number, line in enumerate(lines, start=1):
        try:
            example = json.loads(line)
        except ValueError:
            return f"Invalid file format. Line {number} is not valid JSON."
        if not isinstance(example, dict) or not isinstance(example.get("messages"), list):
            return f'Invalid file format. Line {number}, key "messages": missing or not a list.'
        messages = example["messages"]
        if not messages:
            return f"Invalid file format. Line {number}: no messages."
        words = 0
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                return (
                    f"Invalid file format. Line {number}, message {index}: role must be one of "
                    "system, user, assistant."
                )
            content_ = message.get("content")
            if not isinstance(content_, str) or not content_.strip():
                return (
                    f"Invalid file format. Line {number}, message {index}: content must be a "
                    "non-empty string."
                )
            words += len(content_.split())
        if not any(message["role"] == "assistant" for message in messages):
            return f"Invalid file format. Line {number}: no assistant message."
        if words > MAX_EXAMPLE_WORDS:
            return f"Line {number} exceeds the maximum of {MAX_EXAMPLE_WORDS} tokens per example."
    return None


def _multipart(request: Request) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """The form fields and the uploaded file (name, content) of a multipart body."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "the body must be multipart/form-data")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.body)
    fields: dict[str, str] = {}
    upload: tuple[str, bytes] | None = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            upload = (filename, data)
        elif isinstance(name, str):
            fields[name] = data.decode("utf-8", "replace")
    return fields, upload


@dataclass
class _File:
    id: str
    filename: str
    content: bytes
    purpose: str
    created: float
    created_at: int
    problem: str | None


@dataclass
class _Job:
    id: str
    model: str
    training_file: str
    hyperparameters: JSON
    suffix: str | None
    metadata: dict[str, str] | None
    created: float
    created_at: int
    failure: JSON | None = None
    cancelled_at: float | None = None
    cancelled_in: str | None = None  # the status it was cancelled in
    pairs: dict[str, str] = field(default_factory=dict)


@dataclass
class FineTuningProvider:
    server: OpenAIServer
    step_seconds: float = 0.05
    file_processing_seconds: float = 0.05
    files: dict[str, _File] = field(default_factory=dict)
    jobs: dict[str, _Job] = field(default_factory=dict)
    _next_failure: JSON | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        server = self.server
        server.route("POST", "/v1/files", self._create_file)
        server.route("GET", "/v1/files/{file_id}", self._get_file)
        server.route("POST", "/v1/fine_tuning/jobs", self._create_job)
        server.route("GET", "/v1/fine_tuning/jobs", self._list_jobs)
        server.route("GET", "/v1/fine_tuning/jobs/{job_id}", self._get_job)
        server.route("POST", "/v1/fine_tuning/jobs/{job_id}/cancel", self._cancel_job)
        server.route("GET", "/v1/fine_tuning/jobs/{job_id}/events", self._job_events)
        fallback = server.chat
        server.chat = lambda body: self.answer(body) or fallback(body)

    @classmethod
    def register(
        cls,
        server: OpenAIServer,
        *,
        step_seconds: float = 0.05,
        file_processing_seconds: float = 0.05,
    ) -> FineTuningProvider:
        """The provider's routes on `server` (constructing one does the same)."""
        return cls(
            server, step_seconds=step_seconds, file_processing_seconds=file_processing_seconds
        )

    # -- hooks ---------------------------------------------------------------------------------
    @property
    def jobs_created(self) -> int:
        return len(self.jobs)

    def fail_next_job(
        self, message: str, code: str = "invalid_training_file", param: str | None = "training_file"
    ) -> None:
        """The next job created fails (after running) with this error."""
        self._next_failure = {"code": code, "message": message, "param": param}

    def fail_job(
        self, job_id: str, message: str, code: str = "server_error", param: str | None = None
    ) -> None:
        self.jobs[job_id].failure = {"code": code, "message": message, "param": param}

    # The names main's first version of this module used (tests written against it still run).
    def fail(self, job_id: str, message: str) -> None:
        self.fail_job(job_id, message)

    def fail_next(self, message: str) -> None:
        self.fail_next_job(message)

    # -- files ---------------------------------------------------------------------------------
    def _file_status(self, file: _File) -> tuple[str, str | None]:
        if time.monotonic() - file.created < self.file_processing_seconds:
            return "uploaded", None
        if file.problem is not None:
            return "error", file.problem
        return "processed", None

    def _file_json(self, file: _File) -> JSON:
        status, details = self._file_status(file)
        return {
            "id": file.id,
            "object": "file",
            "bytes": len(file.content),
            "created_at": file.created_at,
            "filename": file.filename,
            "purpose": file.purpose,
            "status": status,
            "status_details": details,
            "expires_at": None,
        }

    def _create_file(self, request: Request) -> tuple[int, JSON]:
        fields, upload = _multipart(request)
        purpose = fields.get("purpose")
        if purpose != "fine-tune":
            raise ApiError(400, f"'{purpose}' is not one of ['fine-tune', ...] - 'purpose'")
        if upload is None:
            raise ApiError(400, "'file' is a required property")
        name, content = upload
        file = _File(
            id=self.server.new_id("file"),
            filename=name,
            content=content,
            purpose=purpose,
            created=time.monotonic(),
            created_at=int(time.time()),
            problem=validate_jsonl(content),
        )
        with self._lock:
            self.files[file.id] = file
        return 200, self._file_json(file)

    def _get_file(self, request: Request) -> tuple[int, JSON]:
        file = self.files.get(request.params["file_id"])
        if file is None:
            raise ApiError(404, f"No such File object: {request.params['file_id']}")
        return 200, self._file_json(file)

    # -- jobs ----------------------------------------------------------------------------------
    def _status(self, job: _Job) -> str:
        elapsed = time.monotonic() - job.created
        step = int(elapsed / self.step_seconds) if self.step_seconds > 0 else len(JOB_STEPS)
        if job.cancelled_at is not None:
            return "cancelled"
        if step < len(JOB_STEPS):
            return JOB_STEPS[step]
        return "failed" if job.failure is not None else "succeeded"

    def _fine_tuned_model(self, job: _Job) -> str:
        return f"ft:{job.model}:{ORGANIZATION}:{job.suffix or ''}:{job.id.split('-')[-1]}"

    def _job_json(self, job: _Job) -> JSON:
        status = self._status(job)
        done = status in {"succeeded", "failed", "cancelled"}
        return {
            "id": job.id,
            "object": "fine_tuning.job",
            "created_at": job.created_at,
            "error": job.failure if status == "failed" else None,
            "fine_tuned_model": self._fine_tuned_model(job) if status == "succeeded" else None,
            "finished_at": int(time.time()) if done else None,
            "hyperparameters": job.hyperparameters,
            "model": job.model,
            "organization_id": ORGANIZATION,
            "result_files": [],
            "seed": 42,
            "status": status,
            "trained_tokens": sum(len(s.split()) for s in job.pairs.values())
            if status == "succeeded"
            else None,
            "training_file": job.training_file,
            "validation_file": None,
            "metadata": job.metadata,
            "estimated_finish": None,
            "integrations": [],
            "suffix": job.suffix,
        }

    def _job(self, request: Request) -> _Job:
        job = self.jobs.get(request.params["job_id"])
        if job is None:
            raise ApiError(404, f"Could not find fine-tune: {request.params['job_id']}")
        return job

    def _create_job(self, request: Request) -> tuple[int, JSON]:
        body = request.json()
        model = body.get("model")
        if not isinstance(model, str) or not model.startswith(MODELS):
            raise ApiError(
                400, f"Model {model} is not available for fine-tuning or does not exist."
            )
        file = self.files.get(str(body.get("training_file")))
        if file is None:
            raise ApiError(400, f"invalid training_file: {body.get('training_file')}")
        status, _ = self._file_status(file)
        if status != "processed":
            raise ApiError(400, f"File {file.id} is not ready: its status is {status}.")
        given = body.get("hyperparameters") or {}
        if not isinstance(given, dict):
            raise ApiError(400, "'hyperparameters' must be an object")
        hyper: JSON = {}
        for key, kind, default in (
            ("n_epochs", int, 3),
            ("batch_size", int, 1),
            ("learning_rate_multiplier", (int, float), 1.8),
        ):
            value = given.get(key, "auto")
            if value == "auto":
                value = default
            elif isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
                raise ApiError(400, f"invalid hyperparameters.{key}: {value!r}")
            hyper[key] = value
        suffix = body.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or len(suffix) > 64):
            raise ApiError(400, "suffix must be a string of at most 64 characters")
        metadata = body.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            raise ApiError(400, "metadata must map strings to strings")
        pairs: dict[str, str] = {}
        for line in file.content.decode().splitlines():
            if line.strip():
                messages = json.loads(line)["messages"]
                question = next((m["content"] for m in messages if m["role"] == "user"), None)
                answer = next((m["content"] for m in messages if m["role"] == "assistant"), None)
                if question is not None and answer is not None:
                    pairs[question] = answer
        job = _Job(
            id=self.server.new_id("ftjob"),
            model=model,
            training_file=file.id,
            hyperparameters=hyper,
            suffix=suffix,
            metadata=metadata,
            created=time.monotonic(),
            created_at=int(time.time()),
            pairs=pairs,
        )
        with self._lock:
            job.failure, self._next_failure = self._next_failure, None
            self.jobs[job.id] = job
        return 200, self._job_json(job)

    def _get_job(self, request: Request) -> tuple[int, JSON]:
        return 200, self._job_json(self._job(request))

    def _list_jobs(self, request: Request) -> tuple[int, JSON]:
        wanted = {
            key[len("metadata[") : -1]: value
            for key, value in request.query.items()
            if key.startswith("metadata[") and key.endswith("]")
        }
        jobs = sorted(self.jobs.values(), key=lambda j: j.id, reverse=True)
        jobs = [
            job for job in jobs if all((job.metadata or {}).get(k) == v for k, v in wanted.items())
        ]
        after = request.query.get("after")
        if after:
            jobs = [job for job in jobs if job.id < after]
        limit = int(request.query.get("limit") or 20)
        page = jobs[:limit]
        return 200, {
            "object": "list",
            "data": [self._job_json(job) for job in page],
            "has_more": len(jobs) > limit,
        }

    def _cancel_job(self, request: Request) -> tuple[int, JSON]:
        job = self._job(request)
        status = self._status(job)
        if status in {"succeeded", "failed", "cancelled"}:
            raise ApiError(400, f"Job {job.id} has already completed: its status is {status}.")
        job.cancelled_in, job.cancelled_at = status, time.monotonic()
        return 200, self._job_json(job)

    def _job_events(self, request: Request) -> tuple[int, JSON]:
        job = self._job(request)
        status = self._status(job)
        if status in JOB_STEPS:
            reached = list(JOB_STEPS[: JOB_STEPS.index(status) + 1])
        elif status == "cancelled":
            before = job.cancelled_in or JOB_STEPS[0]
            reached = [*JOB_STEPS[: JOB_STEPS.index(before) + 1], status]
        else:
            reached = [*JOB_STEPS, status]
        texts = {
            "validating_files": "Validating training file: " + job.training_file,
            "queued": "Fine-tuning job queued",
            "running": "Fine-tuning job started",
            "succeeded": "The job has successfully completed",
            "failed": (job.failure or {}).get("message", "The job failed"),
            "cancelled": "The job was cancelled",
        }
        events = [
            {
                "id": f"ftevent-{job.id.split('-')[-1]}-{index}",
                "object": "fine_tuning.job.event",
                "created_at": job.created_at + index,
                "level": "error" if step == "failed" else "info",
                "message": texts[step],
                "type": "message",
                "data": {},
            }
            for index, step in enumerate(reached)
        ]
        events.reverse()  # newest first, as the provider lists them
        after = request.query.get("after")
        if after:
            ids = [event["id"] for event in events]
            events = events[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit") or 20)
        return 200, {"object": "list", "data": events[:limit], "has_more": len(events) > limit}

    # -- chat ----------------------------------------------------------------------------------
    def answer(self, body: JSON) -> str | None:
        """The SQL a fine-tuned model answers, or None for a model that is no fine-tuned one."""
        model = body.get("model")
        job = next(
            (
                job
                for job in self.jobs.values()
                if self._status(job) == "succeeded" and self._fine_tuned_model(job) == model
            ),
            None,
        )
        if job is None:
            return None
        messages: list[Any] = body.get("messages") or []
        question = next(
            (
                str(m.get("content"))
                for m in reversed(messages)
                if isinstance(m, dict) and m.get("role") == "user"
            ),
            "",
        )
        if question in job.pairs:
            return job.pairs[question]
        closest = difflib.get_close_matches(question, list(job.pairs), n=1, cutoff=0.0)
        return job.pairs[closest[0]] if closest else "SELECT 1"
