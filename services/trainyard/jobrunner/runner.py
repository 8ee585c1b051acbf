"""The job runner: job state, admission, events, logs and reconcile. Execution is the backend's;
nothing here knows about gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

import structlog
from sqlalchemy import Select, and_, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trainyard.blobs import BlobNotFound, BlobStorage
from trainyard.jobrunner.backends.base import Backend, Outcome, Workload
from trainyard.jobrunner.domain import TERMINAL, JobReason, JobSpec, JobState
from trainyard.jobrunner.logfile import LogReader, Record
from trainyard.jobrunner.models import EventCounter, Job, JobLabel
from trainyard.jobrunner.workload_config import config_violations
from trainyard.jobrunner.workload_env import env_violations
from trainyard.runtime.clock import as_utc, utcnow
from trainyard.runtime.db import reader_of
from trainyard.runtime.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from trainyard.runtime.files import atomic_write
from trainyard.runtime.pagination import checked_page_size, decode_page_token, encode_page_token
from trainyard.runtime.readcache import ReadCache

log = structlog.get_logger("trainyard.jobrunner")

DNS1123 = "abcdefghijklmnopqrstuvwxyz0123456789-"


@dataclass(frozen=True)
class JobView:
    """A snapshot of a job."""

    id: str
    name: str
    owner: str
    spec: JobSpec
    state: JobState
    reason: JobReason
    message: str
    exit_code: int | None
    attempts: int
    backend: str
    labels: dict[str, str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: The event revision of the job's last state change (see JobRunner.watch).
    revision: int = 0

    @property
    def done(self) -> bool:
        return self.state.terminal

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls(
            id=job.id,
            name=job.name,
            owner=job.owner,
            spec=job.spec,
            state=job.state,
            reason=job.reason,
            message=job.message,
            exit_code=job.exit_code,
            attempts=job.attempts,
            backend=job.backend,
            labels={lbl.key: lbl.value for lbl in job.labels},
            created_at=as_utc(job.created_at),
            started_at=as_utc(job.started_at),
            finished_at=as_utc(job.finished_at),
            revision=job.updated_seq,
        )


@dataclass(frozen=True)
class JobSummary:
    """What a list shows of a job: its state, labels and times, without the spec (which may be
    large) or the backend's handle."""

    id: str
    name: str
    owner: str
    state: JobState
    reason: JobReason
    labels: dict[str, str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


#: The columns a summary reads; never the spec or handle JSON.
SUMMARY_COLUMNS = (
    Job.id,
    Job.name,
    Job.owner,
    Job.state,
    Job.reason,
    Job.created_at,
    Job.started_at,
    Job.finished_at,
)


@dataclass(frozen=True)
class JobEvent:
    job: JobView
    #: "" for the first event of a job (its submission), as JobReason.NONE is "", and for a
    #: replayed one (the watcher may not have seen the state before).
    previous_state: JobState | Literal[""]
    time: datetime

    @property
    def revision(self) -> int:
        return self.job.revision


@dataclass
class _Subscriber:
    labels: dict[str, str]
    queue: asyncio.Queue[JobEvent | None] = field(
        default_factory=lambda: asyncio.Queue(WATCH_BUFFER)
    )
    overflowed: bool = False


WATCH_BUFFER = 10_000


class JobWatch:
    """One watch of JobRunner: subscribed when made (nothing between `watch()` returning and
    the first read is missed), unsubscribed by `aclose` (or leaving `async with`)."""

    def __init__(
        self,
        subscribers: list[_Subscriber],
        sub: _Subscriber,
        events: AsyncGenerator[JobEvent, None],
    ) -> None:
        self._subscribers = subscribers
        self._sub = sub
        self._events = events

    def __aiter__(self) -> JobWatch:
        return self

    async def __anext__(self) -> JobEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()
        if self._sub in self._subscribers:
            self._subscribers.remove(self._sub)

    async def __aenter__(self) -> JobWatch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def validate_spec(spec: JobSpec, backend: str) -> None:
    """Every problem with a spec, at once."""
    problems: list[FieldViolation] = []
    name = spec.name
    if name and (
        len(name) > 63 or not set(name) <= set(DNS1123) or name[0] == "-" or name[-1] == "-"
    ):
        problems.append(
            FieldViolation(
                "spec.name",
                "must be a DNS-1123 label (a-z, 0-9, '-', "
                "at most 63 characters, alphanumeric at both ends)",
            )
        )
    if backend == "local" and not (spec.command or spec.args):
        problems.append(FieldViolation("spec.command", "the local backend needs a command"))
    if backend == "kubernetes" and not spec.image:
        problems.append(FieldViolation("spec.image", "the kubernetes backend needs an image"))
    if spec.resources.cores < 0:
        problems.append(FieldViolation("spec.resources.cores", "must not be negative"))
    if spec.resources.memory_mb < 0:
        problems.append(FieldViolation("spec.resources.memory_mb", "must not be negative"))
    if spec.retries < 0:
        problems.append(FieldViolation("spec.retries", "must not be negative"))
    problems.extend(env_violations(dict(spec.env), lambda key: f"spec.env[{key!r}]", "spec.env"))
    problems.extend(config_violations(spec.config_json, spec.config_uri, backend))
    if problems:
        raise InvalidArgument(
            "invalid job spec: " + "; ".join(f"{p.field} {p.description}" for p in problems),
            violations=problems,
        )


class JobRunner:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        backend: Backend,
        log_root: Path,
        max_concurrent: int,
        archive: BlobStorage | None = None,
    ) -> None:
        self._sessions = sessions
        self._reader = reader_of(sessions)
        self.backend = backend
        self.log_root = log_root
        #: Where finished jobs' logs are kept beyond this machine's disk (S3 in production).
        self.archive = archive
        self.max_concurrent = max(1, max_concurrent)
        self._monitors: dict[str, asyncio.Task[None]] = {}
        self._subscribers: list[_Subscriber] = []
        #: `wait` callers by job id: each hears only its job's events, so a thousand waiters
        #: cost one dictionary lookup per event, not a thousand queue puts and wakeups.
        self._waiters: dict[str, list[_Subscriber]] = {}
        self._schedule_lock = asyncio.Lock()
        self._closing = False
        #: Recent summary lists, dropped by every write of this runner (see `summaries`).
        self._summary_cache = ReadCache()

    def _write(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        """A transaction that changes what `_summary_cache` caches (see ReadCache.writing)."""
        return self._summary_cache.writing(self._sessions)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Reconcile with the backend: re-attach running jobs, fail lost ones, stop orphans,
        then admit pending jobs."""
        self.log_root.mkdir(parents=True, exist_ok=True)
        async with self._sessions() as session:
            jobs = (await session.scalars(select(Job).where(Job.state.not_in(TERMINAL)))).all()
            known = set((await session.scalars(select(Job.id))).all())
        for job in jobs:
            if job.state.terminal:
                continue  # a stored state this version does not know reads as ended (models)
            if job.state == JobState.RUNNING or job.handle:
                self._spawn_monitor(JobView.of(job), job.handle)
            elif job.cancel_requested:
                await self._finish(
                    job.id, Outcome(JobState.CANCELLED, JobReason.CANCELLED, "cancelled")
                )
        stopped = await self.backend.orphans(known)
        if stopped:
            log.warning("jobs.orphans_stopped", job_ids=stopped)
        log.info("jobs.reconciled", reattached=len(self._monitors), orphans=len(stopped))
        await self._schedule()

    async def close(self) -> None:
        """Stop watching; workloads keep running and are re-attached by the next runner."""
        self._closing = True
        for task in list(self._monitors.values()):
            task.cancel()
        for task in list(self._monitors.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.backend.close()

    # ---- API -------------------------------------------------------------------------------

    async def submit(self, spec: JobSpec, owner: str, idempotency_key: str = "") -> JobView:
        validate_spec(spec, self.backend.name)
        canonical = json.dumps(spec.to_json(), sort_keys=True, separators=(",", ":"))
        spec_hash = hashlib.sha256(canonical.encode()).hexdigest()
        if idempotency_key:
            existing = await self._by_key(idempotency_key)
            if existing is not None:
                return self._same_spec(existing, spec_hash, idempotency_key)
        job_id = str(uuid.uuid4())
        name = spec.name or f"job-{job_id}"
        labels = dict(spec.labels)
        job = Job(
            id=job_id,
            name=name,
            owner=owner,
            idempotency_key=idempotency_key or None,
            spec_hash=spec_hash,
            spec=spec,
            state=JobState.PENDING,
            reason=JobReason.NONE,
            message="queued",
            attempts=0,
            backend=self.backend.name,
            cancel_requested=False,
            created_at=utcnow(),
            labels=[JobLabel(key=k, value=v) for k, v in labels.items()],
        )
        try:
            async with self._write() as session:
                job.updated_seq = await _next_revision(session)
                session.add(job)
        except IntegrityError as exc:
            if idempotency_key:
                existing = await self._by_key(idempotency_key)
                if existing is not None:
                    return self._same_spec(existing, spec_hash, idempotency_key)
            raise AlreadyExists(
                f"a job named {name!r} already exists", reason="JOB_NAME_TAKEN"
            ) from exc
        view = await self.get(job_id)
        self._publish(view, "")
        if self.backend.runner_admission:
            await self._schedule()  # a slot may be free: start the oldest pending jobs
            return await self.get(job_id)
        # A backend that admits jobs itself (the cluster queues them) starts this one now. A
        # scan of every pending job per submission made a burst of N submissions O(N^2).
        if not self._closing and job_id not in self._monitors:
            self._spawn_monitor(view, None)
        return view

    def _same_spec(self, existing: Job, spec_hash: str, key: str) -> JobView:
        if existing.spec_hash != spec_hash:
            raise AlreadyExists(
                f"idempotency key {key!r} was used for a different job spec",
                reason="IDEMPOTENCY_KEY_REUSED",
                metadata={"job_id": existing.id},
            )
        return JobView.of(existing)

    async def _by_key(self, key: str) -> Job | None:
        async with self._sessions() as session:
            found: Job | None = await session.scalar(select(Job).where(Job.idempotency_key == key))
            return found

    async def get(self, job_id: str) -> JobView:
        async with self._sessions() as session:
            job = await session.get(Job, job_id)
            if job is None:
                raise NotFound(f"job {job_id!r} does not exist", reason="JOB_NOT_FOUND")
            return JobView.of(job)

    async def get_by_name(self, name: str) -> JobView:
        async with self._sessions() as session:
            job = await session.scalar(select(Job).where(Job.name == name))
            if job is None:
                raise NotFound(f"job {name!r} does not exist", reason="JOB_NOT_FOUND")
            return JobView.of(job)

    async def summaries(
        self,
        labels: Mapping[str, str] | None = None,
        page_size: int = 0,
        page_token: str = "",
        name_prefix: str = "",
        owner: str | None = None,
    ) -> tuple[list[JobSummary], str]:
        """As `list` (below), but summaries: one query reads the page's summary columns with
        their labels joined, as plain rows (no ORM objects, never the spec), so a list costs the
        same whatever the size of the jobs' specs. The statement is built once per shape (see
        `_summary_statement`) and every value travels as a bound parameter. Results are kept in
        a ReadCache until this runner's next write (1 s at most): treat them as read-only."""
        page_size = checked_page_size(page_size)
        labels = dict(labels or {})
        cache_key = (tuple(sorted(labels.items())), page_size, page_token, name_prefix, owner)
        cached = self._summary_cache.get(cache_key)
        if cached is not None:
            return list(cached[0]), cached[1]
        generation = self._summary_cache.generation
        params: dict[str, Any] = {}
        for i, (key, value) in enumerate(labels.items()):
            params[f"label_key_{i}"], params[f"label_value_{i}"] = key, value
        if name_prefix:
            params["name_pattern"] = _like_prefix(name_prefix)
        if owner is not None:
            params["owner"] = owner
        if page_token:
            params["cursor_created"], params["cursor_id"] = decode_page_token(page_token)
        if page_size > 0:
            params["limit"] = page_size + 1
        stmt = _summary_statement(
            len(labels), bool(name_prefix), owner is not None, bool(page_token), page_size > 0
        )
        async with self._reader.connect() as conn:
            rows = (await conn.execute(stmt, params)).all()
        out: list[JobSummary] = []
        for row in rows:
            if not out or out[-1].id != row.id:
                out.append(
                    JobSummary(
                        id=row.id,
                        name=row.name,
                        owner=row.owner,
                        state=row.state,
                        reason=row.reason,
                        labels={},
                        created_at=as_utc(row.created_at),
                        started_at=as_utc(row.started_at),
                        finished_at=as_utc(row.finished_at),
                    )
                )
            if row.key is not None:
                out[-1].labels[row.key] = row.value
        token = ""
        if page_size > 0 and len(out) > page_size:
            out = out[:page_size]
            token = encode_page_token(out[-1].created_at, out[-1].id)
        self._summary_cache.put(cache_key, generation, (tuple(out), token))
        return out, token

    async def list(
        self,
        labels: Mapping[str, str] | None = None,
        page_size: int = 0,
        page_token: str = "",
        name_prefix: str = "",
        owner: str | None = None,
    ) -> tuple[list[JobView], str]:
        """Jobs carrying every label, newest first; (page, next_page_token). page_size 0 means
        everything; a negative one is INVALID_ARGUMENT. Whole jobs, specs included: `summaries`
        is the cheap list."""
        page_size = checked_page_size(page_size)
        stmt = select(Job)
        for key, value in (labels or {}).items():
            stmt = stmt.where(
                Job.id.in_(
                    select(JobLabel.job_id).where(JobLabel.key == key, JobLabel.value == value)
                )
            )
        if name_prefix:
            stmt = stmt.where(Job.name.startswith(name_prefix, autoescape=True))
        if owner is not None:
            stmt = stmt.where(Job.owner == owner)
        if page_token:
            created, job_id = decode_page_token(page_token)
            stmt = stmt.where(
                or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
            )
        stmt = stmt.order_by(Job.created_at.desc(), Job.id.desc())
        if page_size > 0:
            stmt = stmt.limit(page_size + 1)
        async with self._sessions() as session:
            rows = list((await session.scalars(stmt)).all())
        token = ""
        if page_size > 0 and len(rows) > page_size:
            rows = rows[:page_size]
            last = rows[-1]
            token = encode_page_token(last.created_at, last.id)
        return [JobView.of(r) for r in rows], token

    async def cancel(self, job_id: str, reason: str = "") -> JobView:
        view = await self.get(job_id)
        if view.done:
            return view
        async with self._write() as session:
            job = await session.get(Job, job_id)
            assert job is not None
            job.cancel_requested = True
            handle = job.handle
        task = self._monitors.get(job_id)
        if task is None and not handle:
            await self._finish(
                job_id,
                Outcome(
                    JobState.CANCELLED,
                    JobReason.CANCELLED,
                    reason or "cancelled before it started",
                ),
            )
            return await self.get(job_id)
        await self.backend.cancel(self._workload(view), handle)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout=60)
        return await self.get(job_id)

    async def delete(self, job_id: str) -> None:
        view = await self.cancel(job_id, "deleted")
        async with self._write() as session:
            job = await session.get(Job, job_id)
            handle = job.handle if job else None
        await self.backend.delete(self._workload(view), handle)
        async with self._write() as session:
            job = await session.get(Job, job_id)
            if job is not None:
                await session.delete(job)
        shutil.rmtree(self.log_root / job_id, ignore_errors=True)
        if self.archive is not None:
            await self.archive.delete(f"{job_id}/log")
        self.backend.forget(job_id)

    def log_path(self, job_id: str) -> Path:
        return self.log_root / job_id / "log"

    async def logs(
        self, job_id: str, *, follow: bool = False, from_seq: int = 1
    ) -> AsyncIterator[Record | JobView]:
        """The job's log records from `from_seq`; with follow, until the job ends. The last
        item is always the job's JobView."""
        async for item in self.log_batches(job_id, follow=follow, from_seq=from_seq):
            if isinstance(item, JobView):
                yield item
            else:
                for rec in item:
                    yield rec

    async def log_batches(
        self, job_id: str, *, follow: bool = False, from_seq: int = 1, max_batch: int = 5000
    ) -> AsyncIterator[Sequence[Record] | JobView]:
        """As `logs`, but the records come in lists of up to `max_batch`: whatever is in the
        file is read at once, so bulk readers pay per batch, not per line."""
        view = await self.get(job_id)
        if view.done and not self.log_path(job_id).exists():
            await self._restore_log(job_id)
        reader = LogReader(self.log_path(job_id), from_seq)
        delay = 0.002
        while True:
            batch = reader.read(max_batch)
            if batch:
                yield batch
                delay = 0.002
                continue
            if not follow:
                break
            if job_id not in self._monitors:
                view = await self.get(job_id)
                if view.done:
                    tail = reader.read(max_batch)
                    if not tail:
                        break
                    yield tail
                    continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        yield await self.get(job_id)

    async def revision(self) -> int:
        """The latest event revision issued: a list read after this call shows every change up
        to it, so watching since it (see `watch`) misses nothing that came after the list."""
        async with self._sessions() as session:
            value = await session.scalar(select(EventCounter.value).where(EventCounter.id == 1))
        return int(value or 0)

    def watch(
        self, labels: Mapping[str, str] | None = None, since_revision: int | None = None
    ) -> JobWatch:
        """Every state transition of jobs carrying `labels`, from the moment this returns
        (subscribed already). With `since_revision`, first one event per matching job changed
        after that revision (its current state, oldest change first), then live events newer
        than what was replayed: at least once, in revision order per job. A watcher that falls
        WATCH_BUFFER events behind is ended with UNAVAILABLE rather than silently skipping
        events: it should watch again since the last revision it saw. Use it with `async
        with` (or `aclose()` it) so the subscription ends with the reader."""
        labels = dict(labels or {})
        # Subscribed before the replay is read, so a change committed in between is in one
        # or the other (or both: `seen` drops the repeat).
        sub = _Subscriber(labels)
        self._subscribers.append(sub)
        return JobWatch(self._subscribers, sub, self._events(sub, labels, since_revision))

    async def _events(
        self, sub: _Subscriber, labels: dict[str, str], since_revision: int | None
    ) -> AsyncGenerator[JobEvent, None]:
        if since_revision is not None:
            await self._check_revision(since_revision)
        seen: dict[str, int] = {}
        floor = since_revision if since_revision is not None else -1
        if since_revision is not None:
            for view in await self._changed_since(since_revision, labels):
                seen[view.id] = view.revision
                yield JobEvent(view, "", utcnow())
        while True:
            event = await sub.queue.get()
            if event is None:
                raise Unavailable(
                    f"this watch fell more than {WATCH_BUFFER} events behind and was "
                    "ended; watch again since the last revision it delivered",
                    reason="WATCH_OVERFLOW",
                )
            if event.revision <= max(floor, seen.get(event.job.id, -1)):
                continue  # replayed already, or older than the resume point
            seen[event.job.id] = event.revision
            yield event

    async def _check_revision(self, since: int) -> None:
        latest = await self.revision()
        if since < 0 or since > latest:
            problem = (
                "must not be negative"
                if since < 0
                else f"is ahead of the latest revision, {latest}: pass a revision this "
                "job-runner returned (ListJobs, GetJob or a watch event)"
            )
            raise InvalidArgument(
                f"since_revision {since} {problem}",
                reason="INVALID_REVISION",
                violations=[FieldViolation("since_revision", problem)],
            )

    async def _changed_since(self, since: int, labels: Mapping[str, str]) -> Sequence[JobView]:
        """Jobs carrying `labels` whose last state change is after revision `since`, oldest
        change first."""
        stmt = select(Job).where(Job.updated_seq > since)
        for key, value in labels.items():
            stmt = stmt.where(
                Job.id.in_(
                    select(JobLabel.job_id).where(JobLabel.key == key, JobLabel.value == value)
                )
            )
        async with self._sessions() as session:
            rows = (await session.scalars(stmt.order_by(Job.updated_seq))).all()
        return [JobView.of(job) for job in rows]

    async def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        """Wait until the job ends (for callers and tests); returns its final view."""
        # Subscribe before looking, so an end that happens in between is not missed.
        sub = _Subscriber({})
        self._waiters.setdefault(job_id, []).append(sub)

        async def until_done() -> JobView:
            view = await self.get(job_id)
            while not view.done:
                event = await sub.queue.get()
                if event is None:  # fell behind: look again
                    sub.overflowed = False
                    view = await self.get(job_id)
                else:
                    view = event.job
            return view

        try:
            return await asyncio.wait_for(until_done(), timeout)
        finally:
            waiters = self._waiters.get(job_id, [])
            waiters.remove(sub)
            if not waiters:
                self._waiters.pop(job_id, None)

    # ---- internals -------------------------------------------------------------------------

    def _publish(self, view: JobView, previous: JobState | Literal[""]) -> None:
        event = JobEvent(view, previous, utcnow())
        for sub in [*self._subscribers, *self._waiters.get(view.id, ())]:
            if sub.overflowed or any(view.labels.get(k) != v for k, v in sub.labels.items()):
                continue
            if sub.queue.qsize() >= WATCH_BUFFER - 1:
                sub.overflowed = True
                sub.queue.put_nowait(None)  # the one slot kept for the end marker
            else:
                sub.queue.put_nowait(event)

    def _workload(self, view: JobView) -> Workload:
        spec = view.spec
        return Workload(
            job_id=view.id,
            name=view.name,
            image=spec.image,
            command=list(spec.command),
            args=list(spec.args),
            env=dict(spec.env),
            cores=spec.resources.cores,
            memory_mb=spec.resources.memory_mb,
            deadline_seconds=spec.deadline_seconds,
            retries=spec.retries,
            labels=view.labels,
            log_path=self.log_path(view.id),
            started_at=view.started_at,
            config_json=spec.config_json,
            config_uri=spec.config_uri,
        )

    async def _schedule(self) -> None:
        if self._closing:
            return
        async with self._schedule_lock:
            stmt = select(Job).where(
                Job.state == JobState.PENDING,
                Job.handle.is_(None),
                Job.cancel_requested.is_(False),
            )
            if self.backend.runner_admission:
                free = self.max_concurrent - len(self._monitors)
                if free <= 0:
                    return
                stmt = stmt.order_by(Job.created_at, Job.id).limit(free)
            async with self._sessions() as session:
                jobs = (await session.scalars(stmt)).all()
            for job in jobs:
                if job.id not in self._monitors:
                    self._spawn_monitor(JobView.of(job), None)

    def _spawn_monitor(self, view: JobView, handle: dict[str, Any] | None) -> None:
        task = asyncio.create_task(self._monitor(view, handle), name=f"job-{view.id}")
        self._monitors[view.id] = task

    async def _monitor(self, view: JobView, handle: dict[str, Any] | None) -> None:
        job_id = view.id

        async def on_running(new_handle: dict[str, Any], attempt: int) -> None:
            async with self._write() as session:
                job = await session.get(Job, job_id)
                if job is None:
                    return
                previous = job.state
                job.handle = new_handle
                job.attempts = attempt
                job.started_at = job.started_at or utcnow()
                if not job.cancel_requested:
                    job.state, job.reason = JobState.RUNNING, JobReason.NONE
                    job.message = f"attempt {attempt}"
                    if previous != JobState.RUNNING:
                        job.updated_seq = await _next_revision(session)
            if previous != JobState.RUNNING:
                self._publish(await self.get(job_id), previous)

        try:
            outcome = await self.backend.run(self._workload(view), handle, on_running)
        except asyncio.CancelledError:
            raise  # runner shutdown: the next runner re-attaches
        except Exception:  # a backend failure fails the job, not the runner
            # The exception's text (server paths, an API server's response headers) is for the
            # operators' log, never for the job's owner: they get a reference to it.
            reference = uuid.uuid4().hex[:12]
            log.exception("job.backend_error", job_id=job_id, correlation_id=reference)
            outcome = Outcome(
                JobState.FAILED,
                JobReason.LOST,
                f"the {self.backend.name} backend failed to run the job (correlation id "
                f"{reference}; the operators can find it in the job-runner log)",
            )
        self._monitors.pop(job_id, None)
        await self._finish(job_id, outcome)
        if self.backend.runner_admission:
            await self._schedule()  # its slot is free

    async def _finish(self, job_id: str, outcome: Outcome) -> None:
        async with self._write() as session:
            job = await session.get(Job, job_id)
            if job is None or job.state.terminal:
                return
            previous = job.state
            if job.cancel_requested and outcome.state != JobState.SUCCEEDED:
                outcome = Outcome(
                    JobState.CANCELLED,
                    JobReason.CANCELLED,
                    "cancelled",
                    outcome.exit_code,
                    outcome.attempts,
                )
            job.state, job.reason, job.message = outcome.state, outcome.reason, outcome.message
            job.exit_code = outcome.exit_code
            job.attempts = max(job.attempts, outcome.attempts if job.handle else 0)
            job.finished_at = utcnow()
            job.updated_seq = await _next_revision(session)
        await self._archive_log(job_id)
        view = await self.get(job_id)
        log.info("job.finished", job_id=job_id, state=view.state, reason=view.reason)
        self._publish(view, previous)

    async def _archive_log(self, job_id: str) -> None:
        """Copy a finished job's log to the archive, so it outlives this machine's disk."""
        path = self.log_path(job_id)
        if self.archive is None or not path.exists():
            return
        writer = await self.archive.open_writer(f"{job_id}/log")
        try:
            with open(path, "rb") as fh:  # noqa: ASYNC230 - local file, read in 1 MiB steps
                while chunk := fh.read(1 << 20):
                    await writer.write(chunk)
            await writer.commit()
        except Exception:
            await writer.abort()
            log.exception("job.log_archive_failed", job_id=job_id)

    async def _restore_log(self, job_id: str) -> None:
        """Bring an archived log back to the local disk (e.g. on a new job-runner pod)."""
        if self.archive is None:
            return
        path = self.log_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(BlobNotFound), atomic_write(path) as fh:
            async for chunk in self.archive.read(f"{job_id}/log"):
                fh.write(chunk)


async def _next_revision(session: AsyncSession) -> int:
    """The next event revision, taken in the caller's transaction: the counter row stays locked
    until it commits, so revisions are committed in the order they are issued."""
    value = await session.scalar(
        update(EventCounter)
        .where(EventCounter.id == 1)
        .values(value=EventCounter.value + 1)
        .returning(EventCounter.value)
        .execution_options(synchronize_session=False)
    )
    if value is None:  # the row migration 0004 inserts is gone: the table was tampered with
        raise RuntimeError("jobrunner_event_counter has no row 1; run the migrations")
    return int(value)


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching names that start with `prefix` (escape character '/')."""
    escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return escaped + "%"


@cache
def _summary_statement(
    label_count: int, by_prefix: bool, by_owner: bool, after_cursor: bool, limited: bool
) -> Select[Any]:
    """The summary list's statement for one shape of request, built once: constructing a
    SELECT and its cache key costs more CPU than running it on a small table. The page of jobs
    (newest first, one more row than a page) is a subquery, so its LIMIT counts jobs, not
    labels; the labels are joined to it. Bound parameters: label_key_<i>/label_value_<i>,
    name_pattern, owner, cursor_created/cursor_id and limit, as the shape has them."""
    page = select(*SUMMARY_COLUMNS)
    for i in range(label_count):
        page = page.where(
            Job.id.in_(
                select(JobLabel.job_id).where(
                    JobLabel.key == bindparam(f"label_key_{i}"),
                    JobLabel.value == bindparam(f"label_value_{i}"),
                )
            )
        )
    if by_prefix:
        page = page.where(Job.name.like(bindparam("name_pattern"), escape="/"))
    if by_owner:
        page = page.where(Job.owner == bindparam("owner"))
    if after_cursor:
        created = bindparam("cursor_created", type_=Job.created_at.type)
        last_id = bindparam("cursor_id", type_=Job.id.type)
        page = page.where(
            or_(Job.created_at < created, and_(Job.created_at == created, Job.id < last_id))
        )
    page = page.order_by(Job.created_at.desc(), Job.id.desc())
    if limited:
        page = page.limit(bindparam("limit", type_=Job.attempts.type))
    rows = page.subquery("page")
    return (
        select(rows, JobLabel.key, JobLabel.value)
        .outerjoin(JobLabel, JobLabel.job_id == rows.c.id)
        .order_by(rows.c.created_at.desc(), rows.c.id.desc())
    )
