"""Kubernetes backend: each job is one batch/v1 Job in the runner's namespace.

The cluster schedules, retries (`backoffLimit`) and enforces the deadline
(`activeDeadlineSeconds`); this backend creates the Job, follows its pods' logs into the
sequenced job log (so logs outlive the pods), and reads the outcome from the Job's conditions
and the pods' container states, seen through watches.

Threads: the official client is synchronous. Short calls run in the default executor
(`asyncio.to_thread`); the long-lived ones (the Job watch, the pod watch and one pod-log
follow at a time per job) run in dedicated daemon threads that push into the job's asyncio
queue, so a hundred running jobs never starve the default executor.

Log resumption: every record written for a pod carries the kubelet's timestamp of the line
(`timestamps=true`) as its time. After a reconnect or a runner restart the pod's log is read
again and lines older than the last recorded timestamp, or equal to it and already counted,
are skipped: nothing is lost or doubled, even when many lines share one timestamp.
`k8s-state.json` next to the log maps attempts to pods.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from trainyard.jobrunner.backends.base import Backend, OnRunning, Outcome, Workload
from trainyard.jobrunner.logfile import STDOUT, LogWriter, records_backwards

if TYPE_CHECKING:
    from trainyard.jobrunner.settings import JobrunnerSettings

log = structlog.get_logger("trainyard.jobrunner.kubernetes")

T = TypeVar("T")
JSON = dict[str, Any]

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "trainyard"
JOB_ID_LABEL = "trainyard.dev/job-id"
LABELS_ANNOTATION = "trainyard.dev/labels"
CONTAINER = "main"
RUN_AS_USER = 10001
STATE_FILE = "k8s-state.json"
IMAGE_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
# Label keys Kubernetes sets on a Job's pods itself; a workload label must not shadow them.
RESERVED_LABEL_KEYS = frozenset({"job-name", "controller-uid", MANAGED_BY, JOB_ID_LABEL})

CALL_TIMEOUT = (10.0, 60.0)  # (connect, read) for ordinary requests
CONNECT_TIMEOUT = 10.0
POD_GONE_MARGIN = 15.0  # cancel waits grace + this for the pods to disappear
LOG_DRAIN_MARGIN = 30.0  # run() waits grace + this for the last lines after the Job ended
SINCE_MARGIN = 300  # seconds of extra log re-read on resume, for clock skew with the node

_LABEL_BAD = re.compile(r"[^A-Za-z0-9._-]")
_STAMP = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$"
)


# ---- manifest helpers ---------------------------------------------------------------------


def label_value(value: str) -> str:
    """A valid label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends (or "").
    Values that had to be shortened keep a hash of the original, so they stay distinct."""
    text = _LABEL_BAD.sub("_", value)
    if len(text) > 63:
        text = text[:54].rstrip("._-") + "-" + hashlib.sha256(value.encode()).hexdigest()[:8]
    return text.strip("._-")


def sanitize_labels(labels: dict[str, str]) -> dict[str, str]:
    """Workload labels as Kubernetes labels: keys become unprefixed names ("team/x" ->
    "team_x"), the ones Kubernetes or trainyard set themselves are left out; the originals go
    into the `trainyard.dev/labels` annotation."""
    out: dict[str, str] = {}
    for key, value in labels.items():
        name = label_value(key)
        if name and name not in RESERVED_LABEL_KEYS:
            out[name] = label_value(value)
    return out


def _literal(text: str) -> str:
    """Kubernetes expands $(VAR) in command, args and env values; `$$` is a literal `$`.
    Escape so workloads see exactly what they asked for (as with the local backend)."""
    return text.replace("$", "$$")


def _cpu(cores: float) -> str:
    milli = math.ceil(cores * 1000 - 1e-6)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def _parse_stamp(text: str) -> int | None:
    """An RFC 3339 timestamp (the kubelet's RFC3339Nano) as Unix nanoseconds."""
    match = _STAMP.match(text)
    if match is None:
        return None
    parts = [int(match.group(i)) for i in range(1, 7)]
    seconds = calendar.timegm((*parts, 0, 0, 0))
    zone = match.group(8)
    if zone != "Z":
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        seconds -= offset if zone[0] == "+" else -offset
    return seconds * 1_000_000_000 + int((match.group(7) or "").ljust(9, "0"))


# ---- object helpers ------------------------------------------------------------------------


def _meta(obj: JSON | None) -> JSON:
    return dict((obj or {}).get("metadata") or {})


def _labels(obj: JSON | None) -> dict[str, str]:
    return dict(_meta(obj).get("labels") or {})


def _terminal(job: JSON | None) -> tuple[str, str, str] | None:
    """(Complete|Failed, reason, message) once the Job has finished."""
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"]), str(cond.get("reason") or ""), str(cond.get("message") or "")
    return None


def _container(pod: JSON | None) -> JSON:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER:
            return dict(status)
    return dict(statuses[0]) if statuses else {}


def _started(pod: JSON | None) -> bool:
    """The pod's container has run (or is running): the pod is an attempt with output."""
    state = _container(pod).get("state") or {}
    return bool(state.get("running") or state.get("terminated"))


def _terminated(pod: JSON | None) -> JSON | None:
    state = _container(pod).get("state") or {}
    terminated = state.get("terminated")
    return dict(terminated) if terminated else None


def _pod_finished(pod: JSON | None) -> bool:
    phase = ((pod or {}).get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed") or _terminated(pod) is not None


def _load_json(response: Any) -> JSON:
    try:
        data: JSON = json.loads(response.data)
    finally:
        response.release_conn()
    return data


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (0, 429) or exc.status >= 500
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


def _shutdown(response: Any) -> None:
    """Unblock a thread reading `response` (urllib3 2.3+; else shut the socket down)."""
    try:
        response.shutdown()
        return
    except (AttributeError, ValueError, RuntimeError, OSError):
        pass
    connection = getattr(response, "connection", None) or getattr(response, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


# ---- the sequenced log ---------------------------------------------------------------------


def _log_tail(path: Path) -> tuple[int, int | None, int]:
    """(attempt of the last record, its time, how many trailing records of that attempt share
    that time); (0, None, 0) without records."""
    attempt, stamp, ties = 0, None, 0
    for rec in records_backwards(path):
        if stamp is None:
            attempt, stamp, ties = rec.attempt, rec.time_ns, 1
        elif rec.attempt == attempt and rec.time_ns == stamp:
            ties += 1
        else:
            break
    return attempt, stamp, ties


class _Cursor:
    """Where one attempt's log stands: what has been written, so that re-reading the pod's log
    (after a dropped connection or a runner restart) skips exactly that."""

    def __init__(self, path: Path, attempt: int, last_ts: int | None = None, ties: int = 0):
        self.path = path
        self.attempt = attempt
        self.last_ts = last_ts
        self.ties = ties  # records already written with time == last_ts
        self.seen = 0  # lines with time == last_ts seen on the current connection
        self.partial = b""
        self.writer: LogWriter | None = None
        self.lock = threading.Lock()  # held by the thread streaming into this cursor

    def connect(self) -> None:
        self.seen = 0
        self.partial = b""

    def feed(self, raw: bytes) -> None:
        """One complete line, `<RFC3339Nano> <text>`."""
        text = raw.decode("utf-8", "replace")
        stamp, sep, rest = text.partition(" ")
        moment = _parse_stamp(stamp) if sep else None
        if moment is None:  # not timestamped: write as is (cannot be deduplicated)
            self._write(self.last_ts or time.time_ns(), text)
            return
        if self.last_ts is not None:
            if moment < self.last_ts:
                return
            if moment == self.last_ts:
                if self.seen < self.ties:
                    self.seen += 1
                    return
                self._write(moment, rest)
                self.ties += 1
                self.seen += 1
                return
        self._write(moment, rest)
        self.last_ts, self.ties, self.seen = moment, 1, 1

    def flush_partial(self) -> None:
        """The stream ended for good: a last line without a newline is still a line."""
        if self.partial:
            data, self.partial = self.partial, b""
            self.feed(data)
        self.flush()

    def _write(self, moment: int, text: str) -> None:
        if self.writer is None:
            self.writer = LogWriter(self.path, self.attempt)
        self.writer.write(STDOUT, text, moment)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()


# ---- per-job state -------------------------------------------------------------------------


class _Control:
    """Stops a job's threads: a flag, plus closers that unblock reads in progress."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closers: set[Callable[[], None]] = set()
        self.stopped = False
        self.wake = threading.Event()

    def register(self, closer: Callable[[], None]) -> bool:
        with self._lock:
            if self.stopped:
                return False
            self._closers.add(closer)
            return True

    def unregister(self, closer: Callable[[], None]) -> None:
        with self._lock:
            self._closers.discard(closer)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            closers = list(self._closers)
        self.wake.set()
        for closer in closers:
            with contextlib.suppress(Exception):
                closer()


@dataclass
class _Pod:
    uid: str
    name: str
    attempt: int
    obj: JSON | None = None
    gone: bool = False


@dataclass
class _Resume:
    pods: list[tuple[str, str]] = field(default_factory=list)
    attempt: int = 1
    last_ts: int | None = None
    ties: int = 0


class _Run:
    def __init__(self, wl: Workload, namespace: str, name: str) -> None:
        self.wl = wl
        self.namespace = namespace
        self.name = name
        self.ctl = _Control()
        self.events: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()
        self.uid = ""
        self.job: JSON | None = None
        self.job_deleted = False
        self.pods: list[_Pod] = []
        self.by_uid: dict[str, _Pod] = {}
        self.reported = 0
        self.final = False
        self.tick = asyncio.Event()

    @property
    def handle(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "job_name": self.name, "uid": self.uid}

    @property
    def state_path(self) -> Path:
        return self.wl.log_path.parent / STATE_FILE

    def notify(self) -> None:
        tick, self.tick = self.tick, asyncio.Event()
        tick.set()


# ---- the backend ---------------------------------------------------------------------------


class KubernetesBackend(Backend):
    name = "kubernetes"
    runner_admission = False

    def __init__(
        self,
        api_client: Any = None,
        *,
        namespace: str = "trainyard-jobs",
        ttl_seconds_after_finished: int | None = 3600,
        grace_seconds: float = 5.0,
        watch_timeout_seconds: int = 240,
        log_read_timeout_seconds: float = 120.0,
    ) -> None:
        """`api_client`: a `kubernetes.client.ApiClient` (the backend owns and closes it)."""
        self.api = api_client if api_client is not None else client.ApiClient()
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.namespace = namespace
        self.ttl = ttl_seconds_after_finished
        self.grace = grace_seconds
        self.watch_timeout = max(1, int(watch_timeout_seconds))
        self.log_read_timeout = log_read_timeout_seconds
        self._cancelled: set[str] = set()
        self._runs: dict[str, _Run] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log_threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()

    @classmethod
    def from_settings(cls, own: JobrunnerSettings) -> KubernetesBackend:
        """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config."""
        configuration = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            # The client reads KUBECONFIG once, at import; read it now (a list of files works).
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None,
                client_configuration=configuration,
            )
        # Each running job holds up to three long-lived connections (two watches, one log).
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, 128)
        ttl = own.ttl_seconds_after_finished
        return cls(
            client.ApiClient(configuration),
            namespace=own.namespace,
            ttl_seconds_after_finished=ttl if ttl >= 0 else None,
            grace_seconds=own.kill_grace_seconds,
        )

    # ---- the Job -------------------------------------------------------------------------

    def job_manifest(self, wl: Workload) -> JSON:
        labels = {**sanitize_labels(wl.labels), MANAGED_BY: MANAGER, JOB_ID_LABEL: wl.job_id}
        annotations = {LABELS_ANNOTATION: json.dumps(wl.labels, sort_keys=True)}
        env = {
            "PYTHONUNBUFFERED": "1",
            "TRAINYARD_JOB_ID": wl.job_id,
            "TRAINYARD_JOB_NAME": wl.name,
            **wl.env,
        }
        container: JSON = {
            "name": CONTAINER,
            "image": wl.image,
            "env": [{"name": k, "value": _literal(v)} for k, v in env.items()],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_USER,
                "runAsGroup": RUN_AS_USER,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }
        if wl.command:
            container["command"] = [_literal(part) for part in wl.command]
        if wl.args:
            container["args"] = [_literal(part) for part in wl.args]
        amounts: dict[str, str] = {}
        if wl.cores > 0:
            amounts["cpu"] = _cpu(wl.cores)
        if wl.memory_mb > 0:
            amounts["memory"] = f"{wl.memory_mb}Mi"
        if amounts:
            container["resources"] = {"requests": dict(amounts), "limits": dict(amounts)}
        spec: JSON = {
            "backoffLimit": wl.retries,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": max(0, math.ceil(self.grace)),
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                },
            },
        }
        if wl.deadline_seconds:
            spec["activeDeadlineSeconds"] = max(1, math.ceil(wl.deadline_seconds))
        if self.ttl is not None:
            spec["ttlSecondsAfterFinished"] = self.ttl
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": wl.name, "labels": labels, "annotations": annotations},
            "spec": spec,
        }

    # ---- API calls -----------------------------------------------------------------------

    async def _call_json(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> JSON:
        """One request in the default executor, retried on transient failures."""
        kwargs.setdefault("_request_timeout", CALL_TIMEOUT)
        call = partial(fn, *args, _preload_content=False, **kwargs)
        delay = 0.25
        for attempt in range(4):
            try:
                return await asyncio.to_thread(lambda: _load_json(call()))
            except Exception as exc:
                if attempt == 3 or not _transient(exc):
                    raise
                log.warning("kubernetes.retry", call=getattr(fn, "__name__", "?"), error=str(exc))
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _read_job(self, namespace: str, name: str) -> JSON | None:
        try:
            return await self._call_json(self.batch.read_namespaced_job, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def _list_pods(self, namespace: str, job_id: str) -> list[JSON]:
        listing = await self._call_json(
            self.core.list_namespaced_pod, namespace, label_selector=f"{JOB_ID_LABEL}={job_id}"
        )
        return list(listing.get("items") or [])

    async def _delete_job(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete with background propagation (the pods go too); False if there was none."""
        body = client.V1DeleteOptions(
            propagation_policy="Background",
            preconditions=client.V1Preconditions(uid=uid) if uid else None,
        )
        try:
            await self._call_json(self.batch.delete_namespaced_job, name, namespace, body=body)
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status == 409:  # the precondition failed: that Job is not ours
                log.warning("job.delete_skipped", namespace=namespace, job=name, uid=uid)
                return False
            raise
        return True

    def _where(self, wl: Workload, handle: dict[str, Any] | None) -> tuple[str, str]:
        handle = handle or {}
        namespace = str(handle.get("namespace") or self.namespace)
        return namespace, str(handle.get("job_name") or wl.name)

    # ---- threads -------------------------------------------------------------------------

    async def _in_thread(self, name: str, fn: Callable[[], T]) -> T:
        """Run a long blocking call in its own daemon thread (never the default executor)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def deliver(ok: bool, value: Any) -> None:
            if not future.done():
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

        def target() -> None:
            ok: bool = True
            value: Any = None
            try:
                value = fn()
            except BaseException as exc:
                ok, value = False, exc
            finally:
                with self._threads_lock:
                    self._log_threads.discard(threading.current_thread())
            with contextlib.suppress(RuntimeError):  # the loop is gone
                loop.call_soon_threadsafe(deliver, ok, value)

        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._threads_lock:
            self._log_threads.add(thread)
        thread.start()
        return await future

    def _start_watch(
        self,
        run: _Run,
        kind: str,
        list_fn: Callable[..., Any],
        label_selector: str,
        field_selector: str | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()

        def emit(type_: str, obj: Any) -> None:
            if not run.ctl.stopped:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(run.events.put_nowait, (kind, type_, obj))

        selectors: JSON = {"label_selector": label_selector}
        if field_selector:
            selectors["field_selector"] = field_selector
        threading.Thread(
            target=self._watch_loop,
            args=(run, list_fn, selectors, emit),
            name=f"k8s-watch-{kind}-{run.name}",
            daemon=True,
        ).start()

    def _watch_loop(
        self,
        run: _Run,
        list_fn: Callable[..., Any],
        selectors: JSON,
        emit: Callable[[str, Any], None],
    ) -> None:
        """List, then watch from the list's resourceVersion; re-watch when the server ends the
        stream, re-list on 410 Gone (history compacted); back off on errors."""
        ctl = run.ctl
        version: str | None = None
        backoff = 0.2
        while not ctl.stopped:
            try:
                if version is None:
                    listing = _load_json(
                        list_fn(
                            run.namespace,
                            _preload_content=False,
                            _request_timeout=CALL_TIMEOUT,
                            **selectors,
                        )
                    )
                    version = str(_meta(listing).get("resourceVersion") or "") or None
                    emit("SYNC", list(listing.get("items") or []))
                stream = watch.Watch()
                if not ctl.register(stream.stop):
                    return
                try:
                    for event in stream.stream(
                        list_fn,
                        run.namespace,
                        resource_version=version,
                        timeout_seconds=self.watch_timeout,
                        allow_watch_bookmarks=True,
                        _request_timeout=(CONNECT_TIMEOUT, self.watch_timeout + 30),
                        **selectors,
                    ):
                        if ctl.stopped:
                            return
                        obj = event.get("raw_object") or {}
                        version = str(_meta(obj).get("resourceVersion") or "") or version
                        if event.get("type") != "BOOKMARK":
                            emit(str(event.get("type")), obj)
                finally:
                    ctl.unregister(stream.stop)
                backoff = 0.2
            except ApiException as exc:
                if exc.status == 410:
                    log.info("kubernetes.watch_expired", job=run.name)
                    version = None
                    continue
                if ctl.stopped:
                    return
                log.warning("kubernetes.watch_failed", job=run.name, status=exc.status)
                ctl.wake.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:
                if ctl.stopped:
                    return
                log.warning("kubernetes.watch_failed", job=run.name, error=repr(exc))
                ctl.wake.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    # ---- run -----------------------------------------------------------------------------

    async def run(
        self, workload: Workload, handle: dict[str, Any] | None, on_running: OnRunning
    ) -> Outcome:
        wl = workload
        run = _Run(wl, *self._where(wl, handle))
        self._runs[wl.job_id] = run
        follower: asyncio.Task[None] | None = None
        pump: asyncio.Task[None] | None = None
        try:
            problem = await self._attach(run, handle)
            if problem is not None:
                return problem
            resume = await asyncio.to_thread(_load_resume, wl.log_path, run.uid)
            for uid, pod_name in resume.pods:
                pod = _Pod(uid, pod_name, len(run.pods) + 1)
                run.pods.append(pod)
                run.by_uid[uid] = pod
            selector = f"{JOB_ID_LABEL}={wl.job_id}"
            self._start_watch(
                run, "job", self.batch.list_namespaced_job, selector, f"metadata.name={run.name}"
            )
            self._start_watch(run, "pods", self.core.list_namespaced_pod, selector)
            cursor = _Cursor(wl.log_path, resume.attempt, resume.last_ts, resume.ties)
            pump = self._task(self._pump(run), f"k8s-events-{wl.job_id}")
            follower = self._task(self._follow(run, cursor), f"k8s-logs-{wl.job_id}")
            outcome = await self._supervise(run, on_running)
            run.final = True
            run.notify()
            try:
                await asyncio.wait_for(
                    asyncio.shield(follower), timeout=self.grace + LOG_DRAIN_MARGIN
                )
            except TimeoutError:
                log.warning("job.logs_incomplete", job_id=wl.job_id)
            except Exception:
                log.exception("job.logs_failed", job_id=wl.job_id)
            return dataclasses.replace(outcome, attempts=max(outcome.attempts, len(run.pods)))
        finally:
            run.ctl.stop()
            for task in (follower, pump):
                if task is not None and not task.done():
                    task.cancel()
            self._runs.pop(wl.job_id, None)

    async def _attach(self, run: _Run, handle: dict[str, Any] | None) -> Outcome | None:
        """Create the Job (or adopt ours if it already exists), or find it again with a
        handle. Returns an outcome when there is nothing to follow."""
        wl = run.wl
        run.wl.log_path.parent.mkdir(parents=True, exist_ok=True)
        if handle:
            job = await self._read_job(run.namespace, run.name)
            if job is None:
                return Outcome(
                    "FAILED",
                    "LOST",
                    f"the Kubernetes Job {run.namespace}/{run.name} disappeared while the "
                    "job-runner was down",
                    attempts=0,
                )
            uid = str(_meta(job).get("uid") or "")
            if handle.get("uid") and handle["uid"] != uid:
                return Outcome(
                    "FAILED",
                    "LOST",
                    f"the Kubernetes Job {run.namespace}/{run.name} was replaced by another "
                    "object while the job-runner was down",
                    attempts=0,
                )
        else:
            if wl.job_id in self._cancelled:
                return Outcome("CANCELLED", "CANCELLED", "cancelled before it started", attempts=0)
            try:
                job = await self._call_json(
                    self.batch.create_namespaced_job, run.namespace, self.job_manifest(wl)
                )
                log.info("job.created", job_id=wl.job_id, namespace=run.namespace, job=run.name)
            except ApiException as exc:
                if exc.status != 409:
                    if 400 <= exc.status < 500:
                        return Outcome(
                            "FAILED",
                            "",
                            f"Kubernetes refused the Job: {_status_message(exc)}",
                            attempts=0,
                        )
                    raise
                existing = await self._read_job(run.namespace, run.name)
                if existing is None or _labels(existing).get(JOB_ID_LABEL) != wl.job_id:
                    return Outcome(
                        "FAILED",
                        "",
                        f"a Kubernetes Job named {run.name!r} already exists in namespace "
                        f"{run.namespace!r} and does not belong to this job",
                        attempts=0,
                    )
                job = existing  # ours, created before a runner restart: adopt it
                log.info("job.adopted", job_id=wl.job_id, job=run.name)
            uid = str(_meta(job).get("uid") or "")
            if wl.job_id in self._cancelled:  # cancelled while we were creating it
                await self._delete_job(run.namespace, run.name, uid)
                return Outcome("CANCELLED", "CANCELLED", "cancelled", attempts=0)
        run.uid = uid
        run.job = job
        return None

    def _task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pump(self, run: _Run) -> None:
        """Apply the watches' events to the job's view, for as long as the job is followed
        (the log follower keeps needing pod states after the outcome is known)."""
        while True:
            items = [await run.events.get()]
            while not run.events.empty():
                items.append(run.events.get_nowait())
            for item in items:
                try:
                    self._apply(run, *item)
                except Exception:  # a malformed object must not stop the job's bookkeeping
                    log.exception("job.event_ignored", job_id=run.wl.job_id, kind=item[0])
            run.notify()

    async def _supervise(self, run: _Run, on_running: OnRunning) -> Outcome:
        while True:
            tick = run.tick
            await self._report_running(run, on_running)
            outcome = await self._evaluate(run)
            if outcome is not None:
                # The pods may have been re-listed: a pod the watch never showed running
                # still ran (a short one), and the runner must know it did.
                await self._report_running(run, on_running)
                return outcome
            await tick.wait()

    def _apply(self, run: _Run, kind: str, type_: str, obj: Any) -> None:
        if kind == "job":
            if type_ == "SYNC":
                mine = [j for j in obj if _meta(j).get("uid") == run.uid]
                if mine:
                    run.job = mine[0]
                else:
                    run.job_deleted = True
            elif _meta(obj).get("uid") == run.uid:
                run.job = obj
                if type_ == "DELETED":
                    run.job_deleted = True
            return
        if type_ == "SYNC":
            self._sync_pods(run, obj)
        elif type_ in ("ADDED", "MODIFIED", "DELETED"):
            self._track_pods(run, [obj], gone=type_ == "DELETED")

    def _owned(self, run: _Run, pod: JSON) -> bool:
        labels = _labels(pod)
        owner = labels.get("batch.kubernetes.io/controller-uid") or labels.get("controller-uid")
        return owner is None or owner == run.uid

    def _sync_pods(self, run: _Run, items: list[JSON]) -> None:
        present = {str(_meta(p).get("uid")) for p in items}
        for pod in run.pods:
            if pod.uid not in present:
                pod.gone = True
        self._track_pods(run, items, gone=False)

    def _track_pods(self, run: _Run, items: Iterable[JSON], gone: bool) -> None:
        fresh: list[JSON] = []
        for obj in items:
            if not self._owned(run, obj):
                continue
            uid = str(_meta(obj).get("uid"))
            pod = run.by_uid.get(uid)
            if pod is None:
                fresh.append(obj)
                continue
            pod.obj = obj
            pod.gone = pod.gone or gone
        if not fresh:
            return
        # Watch events arrive in creation order; a listing is ordered by name.
        fresh.sort(key=lambda p: (str(_meta(p).get("creationTimestamp") or ""), _start_of(p)))
        for obj in fresh:
            meta = _meta(obj)
            pod = _Pod(str(meta["uid"]), str(meta["name"]), len(run.pods) + 1, obj, gone)
            run.pods.append(pod)
            run.by_uid[pod.uid] = pod
            log.info("job.pod", job_id=run.wl.job_id, pod=pod.name, attempt=pod.attempt)
        _save_state(run)

    async def _report_running(self, run: _Run, on_running: OnRunning) -> None:
        started = [pod.attempt for pod in run.pods if _started(pod.obj)]
        if started and max(started) > run.reported:
            run.reported = max(started)
            await on_running(run.handle, run.reported)

    async def _evaluate(self, run: _Run) -> Outcome | None:
        wl = run.wl
        terminal = _terminal(run.job)
        if terminal is not None:
            await self._resync_pods(run)
            return self._outcome(run, terminal)
        if run.job_deleted:
            if wl.job_id in self._cancelled:
                return Outcome("CANCELLED", "CANCELLED", "cancelled")
            return Outcome(
                "FAILED",
                "LOST",
                f"the Kubernetes Job {run.namespace}/{run.name} was deleted before it finished",
            )
        for pod in run.pods:
            if pod.gone:
                continue
            waiting = (_container(pod.obj).get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in IMAGE_ERRORS:
                await self._delete_job(run.namespace, run.name, run.uid)
                detail = str(waiting.get("message") or waiting.get("reason"))
                return Outcome(
                    "FAILED",
                    "IMAGE_NOT_FOUND",
                    f"the image {wl.image!r} cannot be pulled ({waiting['reason']}: {detail})",
                    details={"image": wl.image},
                )
        return None

    async def _resync_pods(self, run: _Run) -> None:
        """The Job has finished: make sure every pod it created is known (the pod watch may
        lag behind the Job watch), so that the last attempt's log is followed too."""
        try:
            items = await self._list_pods(run.namespace, run.wl.job_id)
        except Exception as exc:
            log.warning("job.pod_list_failed", job_id=run.wl.job_id, error=repr(exc))
            return
        self._sync_pods(run, items)
        run.notify()

    def _outcome(self, run: _Run, terminal: tuple[str, str, str]) -> Outcome:
        wl = run.wl
        type_, reason, message = terminal
        status = (run.job or {}).get("status") or {}
        attempts = max(
            len(run.pods), int(status.get("failed") or 0) + int(status.get("succeeded") or 0)
        )
        last = next((p for p in reversed(run.pods) if _terminated(p.obj)), None)
        ended = _terminated(last.obj) if last else None
        code = int(ended["exitCode"]) if ended and ended.get("exitCode") is not None else None
        details = {"namespace": run.namespace, "job_name": run.name, "job_reason": reason}
        if type_ == "Complete":
            return Outcome("SUCCEEDED", "", "exited 0", 0, attempts, details)
        if reason == "DeadlineExceeded":
            limit = wl.deadline_seconds or float(
                (run.job or {}).get("spec", {}).get("activeDeadlineSeconds") or 0
            )
            return Outcome(
                "FAILED",
                "DEADLINE_EXCEEDED",
                f"ran past its deadline of {limit:g}s",
                code,
                attempts,
                details,
            )
        if ended is not None and ended.get("reason") == "OOMKilled":
            text = (
                f"exceeded its memory limit of {wl.memory_mb} MiB"
                if wl.memory_mb
                else "was killed for running out of memory"
            )
            return Outcome("FAILED", "OOM_KILLED", text, code, attempts, details)
        if code is not None and ended is not None:
            text = f"exited with code {code}"
            if ended.get("reason") not in (None, "Error", "Completed") and ended.get("message"):
                text += f" ({ended['reason']}: {str(ended['message']).strip()[:500]})"
            return Outcome("FAILED", "EXIT_CODE", text, code, attempts, details)
        return Outcome(
            "FAILED",
            "EXIT_CODE",
            f"the Kubernetes Job failed: {reason}: {message}",
            None,
            attempts,
            details,
        )

    # ---- logs ------------------------------------------------------------------------------

    async def _follow(self, run: _Run, resume: _Cursor) -> None:
        """Follow the pods' logs one at a time, in attempt order, into the job log."""
        attempt = resume.attempt
        while True:
            pod = await self._wait_for_pod(run, attempt)
            if pod is None:
                return
            cursor = resume if attempt == resume.attempt else _Cursor(run.wl.log_path, attempt)
            try:
                await self._follow_pod(run, pod, cursor)
            finally:
                if cursor.lock.acquire(blocking=False):  # else its thread closes it
                    try:
                        if not run.ctl.stopped:
                            await asyncio.to_thread(cursor.close)
                        else:
                            cursor.close()
                    finally:
                        cursor.lock.release()
            attempt += 1

    async def _wait_for_pod(self, run: _Run, attempt: int) -> _Pod | None:
        while True:
            tick = run.tick
            if len(run.pods) >= attempt:
                return run.pods[attempt - 1]
            if run.final or run.ctl.stopped:
                return None
            await tick.wait()

    async def _follow_pod(self, run: _Run, pod: _Pod, cursor: _Cursor) -> None:
        backoff = 0.05
        while not run.ctl.stopped:
            tick = run.tick
            if not _started(pod.obj):
                if pod.gone or run.final or _pod_finished(pod.obj):
                    return  # it never ran: no output
                await tick.wait()
                continue
            result = await self._in_thread(
                f"k8s-log-{pod.name}", partial(self._stream_log, run, pod.name, cursor)
            )
            if result == "stopped":
                return
            if result == "gone":
                await asyncio.to_thread(cursor.flush_partial)
                return
            if result == "eof" and await self._container_done(run, pod):
                await asyncio.to_thread(cursor.flush_partial)
                return
            # Not started yet, a broken connection, or a stream that ended while the container
            # still runs: read on (what was written is skipped).
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _container_done(self, run: _Run, pod: _Pod, timeout: float = 2.0) -> bool:
        """After a stream ended: does the pod show its container finished (or gone)?"""
        deadline = time.monotonic() + timeout
        while True:
            tick = run.tick
            if pod.gone or _pod_finished(pod.obj):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or run.ctl.stopped:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tick.wait(), remaining)

    def _stream_log(self, run: _Run, pod_name: str, cursor: _Cursor) -> str:
        """One follow connection (in its own thread): write new lines until the server ends
        the stream ("eof"), or "gone" (404), "waiting" (not started yet, 400), "error",
        "stopped"."""
        with cursor.lock:
            try:
                return self._stream_log_locked(run, pod_name, cursor)
            finally:
                if run.ctl.stopped:
                    cursor.close()
                else:
                    cursor.flush()

    def _stream_log_locked(self, run: _Run, pod_name: str, cursor: _Cursor) -> str:
        kwargs: JSON = {
            "container": CONTAINER,
            "follow": True,
            "timestamps": True,
            "_preload_content": False,
            "_request_timeout": (CONNECT_TIMEOUT, self.log_read_timeout),
        }
        if cursor.last_ts is not None:
            behind = time.time() - cursor.last_ts / 1e9
            kwargs["since_seconds"] = max(1, math.ceil(behind) + SINCE_MARGIN)
        if run.ctl.stopped:
            return "stopped"
        try:
            response = self.core.read_namespaced_pod_log(pod_name, run.namespace, **kwargs)
        except ApiException as exc:
            return {404: "gone", 400: "waiting"}.get(exc.status, "error")
        except (urllib3.exceptions.HTTPError, OSError):
            return "stopped" if run.ctl.stopped else "error"
        closer = partial(_shutdown, response)
        if not run.ctl.register(closer):
            response.release_conn()
            return "stopped"
        cursor.connect()
        try:
            for chunk in _chunks(response):
                if run.ctl.stopped:
                    return "stopped"
                lines = (cursor.partial + chunk).split(b"\n")
                cursor.partial = lines.pop()
                for raw in lines:
                    cursor.feed(raw)
                cursor.flush()
            return "stopped" if run.ctl.stopped else "eof"
        except (urllib3.exceptions.HTTPError, OSError, ValueError):
            return "stopped" if run.ctl.stopped else "error"
        finally:
            run.ctl.unregister(closer)
            with contextlib.suppress(Exception):
                response.release_conn()

    # ---- cancel, delete, orphans, close --------------------------------------------------

    async def cancel(self, workload: Workload, handle: dict[str, Any] | None) -> None:
        """Delete the Job with its pods (SIGTERM, SIGKILL after the grace period) and wait,
        bounded, until the pods are gone."""
        self._cancelled.add(workload.job_id)
        namespace, name = self._where(workload, handle)
        await self._delete_owned(workload, namespace, name, handle)
        deadline = time.monotonic() + self.grace + POD_GONE_MARGIN
        delay = 0.05
        while True:
            try:
                if not await self._list_pods(namespace, workload.job_id):
                    return
            except ApiException as exc:
                log.warning("job.cancel_list_failed", job_id=workload.job_id, status=exc.status)
            if time.monotonic() >= deadline:
                log.warning("job.cancel_pods_linger", job_id=workload.job_id)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def delete(self, workload: Workload, handle: dict[str, Any] | None) -> None:
        namespace, name = self._where(workload, handle)
        await self._delete_owned(workload, namespace, name, handle)

    async def _delete_owned(
        self, wl: Workload, namespace: str, name: str, handle: dict[str, Any] | None
    ) -> None:
        """Delete the job's Job, never a same-named Job that is not this job's."""
        uid = str((handle or {}).get("uid") or "")
        if not uid:
            job = await self._read_job(namespace, name)
            if job is None:
                return
            if _labels(job).get(JOB_ID_LABEL) != wl.job_id:
                log.warning("job.delete_skipped", job_id=wl.job_id, job=name)
                return
            uid = str(_meta(job).get("uid") or "")
        if await self._delete_job(namespace, name, uid or None):
            log.info("job.deleted", job_id=wl.job_id, namespace=namespace, job=name)

    async def orphans(self, known_job_ids: set[str]) -> list[str]:
        """Delete the Jobs this runner created (our managed-by label) that it has no record
        of, e.g. created just before a crash whose database insert was rolled back."""
        stopped: list[str] = []
        token: str | None = None
        while True:
            kwargs: JSON = {"label_selector": f"{MANAGED_BY}={MANAGER}", "limit": 500}
            if token:
                kwargs["_continue"] = token
            listing = await self._call_json(
                self.batch.list_namespaced_job, self.namespace, **kwargs
            )
            for item in listing.get("items") or []:
                meta = _meta(item)
                job_id = _labels(item).get(JOB_ID_LABEL, "")
                if job_id in known_job_ids:
                    continue
                await self._delete_job(self.namespace, str(meta["name"]), str(meta.get("uid")))
                stopped.append(job_id or str(meta["name"]))
            token = _meta(listing).get("continue") or None
            if not token:
                return stopped

    def forget(self, job_id: str) -> None:
        self._cancelled.discard(job_id)

    async def close(self) -> None:
        """Stop watching and following (the Jobs keep running); waits for the log threads,
        so that a next runner can resume the logs from a complete file."""
        for run in list(self._runs.values()):
            run.ctl.stop()
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        deadline = time.monotonic() + 10.0
        with self._threads_lock:
            threads = list(self._log_threads)
        for thread in threads:
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
        await asyncio.to_thread(self.api.close)


def _chunks(response: Any) -> Iterator[bytes]:
    if getattr(response, "chunked", False):
        yield from response.stream(None, decode_content=False)
        return
    while True:
        data = response.read1(1 << 16)
        if not data:
            return
        yield data


def _start_of(pod: JSON) -> str:
    state = _container(pod).get("state") or {}
    detail = state.get("running") or state.get("terminated") or {}
    return str(detail.get("startedAt") or "")


def _status_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def _save_state(run: _Run) -> None:
    """Which pod is which attempt, for a runner that re-attaches later."""
    state = {
        "uid": run.uid,
        "namespace": run.namespace,
        "job_name": run.name,
        "pods": [{"uid": p.uid, "name": p.name} for p in run.pods],
    }
    path = run.state_path
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)
    except OSError as exc:  # e.g. the job's directory was removed: only re-attach suffers
        log.warning("job.state_not_saved", job_id=run.wl.job_id, error=str(exc))


def _load_resume(log_path: Path, job_uid: str) -> _Resume:
    try:
        state = json.loads((log_path.parent / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        state = {}
    pods: list[tuple[str, str]] = []
    if isinstance(state, dict) and state.get("uid") == job_uid:
        pods = [(str(p["uid"]), str(p["name"])) for p in state.get("pods") or []]
    attempt, stamp, ties = _log_tail(log_path)
    if attempt == 0:
        return _Resume(pods)
    return _Resume(pods, attempt, stamp, ties)
