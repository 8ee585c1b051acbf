"""Kubernetes backend: each job is one batch/v1 Job in the runner's namespace.

The cluster schedules, retries (`backoffLimit`) and enforces the deadline
(`activeDeadlineSeconds`); this backend creates the Job, follows its pods' logs into the
sequenced job log (so logs outlive the pods), and reads the outcome from the Job's conditions
and the pods' container states, as the namespace's informer sees them.

Cost per job: a subscription to the informer and two asyncio tasks (the supervisor, which is
`run()` itself, and the log follower). A worker thread and a connection are held only while
one of its pods' logs is being streamed, from a shared pool of `max_log_streams` threads: a
pending job, or one whose logs are read, holds neither. The informer adds two threads and two
watch connections per namespace, whatever the number of jobs.

A workload's inline config (it holds the job's token) goes into a per-job Secret,
`<job>-config`, created before the Job and then owned by it; the container reads it as
TRAINYARD_CONFIG_JSON through a secretKeyRef, so the pod spec holds only the reference.

Pods go when the runner has read them: once a pod's container has finished and its log has
been read to the end, the runner deletes the pod. `ttlSecondsAfterFinished` is only a safety
net for a runner that is down (at least `SAFETY_TTL_SECONDS`); a shorter configured ttl (0
included) is applied by the runner itself, after the logs are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from tenacity import AsyncRetrying, retry_if_result, wait_exponential

from trainyard.jobrunner.backends.base import Backend, OnRunning, Outcome, Workload
from trainyard.jobrunner.backends.kubernetes.api import KubernetesApi, status_message
from trainyard.jobrunner.backends.kubernetes.informer import JOB, NamespaceInformer
from trainyard.jobrunner.backends.kubernetes.logs import (
    LogCursor,
    StreamControl,
    load_resume,
    save_attempts,
    stream_pod_log,
)
from trainyard.jobrunner.backends.kubernetes.manifests import (
    JOB_ID_LABEL,
    MANAGED_SELECTOR,
    config_secret_manifest,
    config_secret_name,
    job_manifest,
    owner_patch,
    owner_uids,
)
from trainyard.jobrunner.backends.kubernetes.status import (
    attempt_order,
    container_started,
    controlled_by,
    finished_pod_count,
    image_not_found,
    image_pull_failure,
    job_outcome,
    job_terminal,
    labels,
    meta,
    pod_finished,
)
from trainyard.jobrunner.domain import JobReason, JobState
from trainyard.runtime.background import Background

if TYPE_CHECKING:
    from trainyard.jobrunner.settings import JobrunnerSettings

log = structlog.get_logger("trainyard.jobrunner.kubernetes")

JSON = dict[str, Any]

SAFETY_TTL_SECONDS = 600  # ttlSecondsAfterFinished at least this: time to read the last logs
POD_GONE_MARGIN = 15.0  # cancel waits grace + this for the pods to disappear
LOG_DRAIN_MARGIN = 30.0  # run() waits grace + this for the last lines after the Job ended
POD_LAG_SECONDS = 5.0  # a finished Job waits this long for the pod watch, then lists the pods
MAX_LOG_STREAMS = 256  # pod logs streamed at once (a thread and a connection each)


@dataclass
class _Pod:
    uid: str
    name: str
    attempt: int
    obj: JSON | None = None
    gone: bool = False


class _Run:
    """What the backend knows of one job it follows: its Job, its pods in attempt order."""

    def __init__(self, wl: Workload, namespace: str, name: str) -> None:
        self.wl = wl
        self.namespace = namespace
        self.name = name
        self.ctl = StreamControl()
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

    def notify(self) -> None:
        tick, self.tick = self.tick, asyncio.Event()
        tick.set()


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
        max_log_streams: int = MAX_LOG_STREAMS,
        log_drain_seconds: float = LOG_DRAIN_MARGIN,
    ) -> None:
        """`api_client`: a `kubernetes.client.ApiClient` (the backend owns and closes it).
        `max_log_streams`: pod logs streamed at once; beyond that a pod's log is read when a
        stream frees up (nothing is lost: pods are deleted only once read). `log_drain_seconds`:
        how long (beyond the grace) the end of a job waits for its last lines; a job whose logs
        take longer is reported ended and its logs are read after."""
        self.kube = KubernetesApi(api_client if api_client is not None else client.ApiClient())
        self.namespace = namespace
        self.ttl = ttl_seconds_after_finished
        self.grace = grace_seconds
        self.watch_timeout = max(1, int(watch_timeout_seconds))
        self.log_read_timeout = log_read_timeout_seconds
        self._cancelled: set[str] = set()
        self._runs: dict[str, _Run] = {}
        #: Per-job helpers (log followers, absence checks, ttl timers), cancelled on close.
        self._background = Background("kubernetes", started=True)
        self._informers: dict[str, NamespaceInformer] = {}
        self.log_drain = log_drain_seconds
        self._log_streams = ThreadPoolExecutor(max(1, max_log_streams), "k8s-log")

    @classmethod
    def from_settings(cls, own: JobrunnerSettings) -> KubernetesBackend:
        """The configured kubeconfig; else in-cluster credentials when running in a pod,
        else KUBECONFIG / ~/.kube/config."""
        configuration = client.Configuration()
        if own.kubeconfig is not None:
            config.load_kube_config(
                config_file=str(own.kubeconfig), client_configuration=configuration
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            # The client reads KUBECONFIG once, at import; read it now (a list of files works).
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None,
                client_configuration=configuration,
            )
        # Long-lived connections: two watches per namespace, one per pod log being streamed.
        configuration.connection_pool_maxsize = max(
            configuration.connection_pool_maxsize, own.max_log_streams + 16
        )
        ttl = own.ttl_seconds_after_finished
        return cls(
            client.ApiClient(configuration),
            namespace=own.namespace,
            ttl_seconds_after_finished=ttl if ttl >= 0 else None,
            grace_seconds=own.kill_grace_seconds,
            max_log_streams=own.max_log_streams,
        )

    def job_manifest(self, wl: Workload) -> JSON:
        ttl = None if self.ttl is None else max(self.ttl, SAFETY_TTL_SECONDS)
        return job_manifest(wl, grace_seconds=self.grace, ttl_seconds=ttl)

    def _where(self, wl: Workload, handle: dict[str, Any] | None) -> tuple[str, str]:
        handle = handle or {}
        namespace = str(handle.get("namespace") or self.namespace)
        return namespace, str(handle.get("job_name") or wl.name)

    def _informer(self, namespace: str) -> NamespaceInformer:
        informer = self._informers.get(namespace)
        if informer is None:
            informer = NamespaceInformer(self.kube, namespace, self.watch_timeout)
            self._informers[namespace] = informer
        return informer

    def _task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return self._background.spawn(name, lambda: coro)

    # ---- run -----------------------------------------------------------------------------

    async def run(
        self, workload: Workload, handle: dict[str, Any] | None, on_running: OnRunning
    ) -> Outcome:
        wl = workload
        run = _Run(wl, *self._where(wl, handle))
        self._runs[wl.job_id] = run
        follower: asyncio.Task[None] | None = None
        unsubscribe = None
        late = False  # the job ended before its logs were read: the follower reads on

        def release() -> None:
            run.ctl.stop()
            if follower is not None and not follower.done():
                follower.cancel()
            if unsubscribe is not None:
                unsubscribe()
            if self._runs.get(wl.job_id) is run:
                self._runs.pop(wl.job_id, None)

        try:
            problem = await self._attach(run, handle)
            if problem is not None:
                return problem
            resume = await asyncio.to_thread(load_resume, wl.log_path, run.uid)
            for uid, pod_name in resume.pods:
                pod = _Pod(uid, pod_name, len(run.pods) + 1)
                run.pods.append(pod)
                run.by_uid[uid] = pod
            unsubscribe = self._informer(run.namespace).subscribe(
                wl.job_id, partial(self._on_event, run)
            )
            cursor = LogCursor(wl.log_path, resume.attempt, resume.last_ts, resume.ties)
            follower = self._task(self._follow(run, cursor), f"k8s-logs-{wl.job_id}")
            outcome = await self._supervise(run, on_running)
            run.final = True
            run.notify()
            try:
                await asyncio.wait_for(
                    asyncio.shield(follower), timeout=self.grace + self.log_drain
                )
            except TimeoutError:
                # A busy API server (or a pool of log streams all taken) is slow, not wrong:
                # the end is reported now and the follower reads the last lines into the job
                # log after it; the pods (and a short ttl's Job) go only once they are read.
                # Stopping it here lost those lines for good.
                log.warning("job.logs_late", job_id=wl.job_id)
                late = True
                self._task(self._finish_late(run, follower, release), f"k8s-late-{wl.job_id}")
            except Exception:
                log.exception("job.logs_failed", job_id=wl.job_id)
            if not late:
                await self._expire(run)
            return dataclasses.replace(outcome, attempts=max(outcome.attempts, len(run.pods)))
        finally:
            if not late:
                release()

    async def _finish_late(
        self, run: _Run, follower: asyncio.Task[None], release: Callable[[], None]
    ) -> None:
        """Let a late log follower finish (the runner's close cancels it), then expire."""
        try:
            with contextlib.suppress(Exception):
                await asyncio.shield(follower)
            await self._expire(run)
        finally:
            release()

    async def _attach(self, run: _Run, handle: dict[str, Any] | None) -> Outcome | None:
        """Create the Job (or adopt ours if it already exists), or find it again with a
        handle. Returns an outcome when there is nothing to follow."""
        wl = run.wl
        run.wl.log_path.parent.mkdir(parents=True, exist_ok=True)
        if handle:
            job = await self.kube.read_job(run.namespace, run.name)
            if job is None:
                return Outcome(
                    JobState.FAILED,
                    JobReason.LOST,
                    f"the Kubernetes Job {run.namespace}/{run.name} disappeared while the "
                    "job-runner was down",
                    attempts=0,
                )
            uid = str(meta(job).get("uid") or "")
            if handle.get("uid") and handle["uid"] != uid:
                return Outcome(
                    JobState.FAILED,
                    JobReason.LOST,
                    f"the Kubernetes Job {run.namespace}/{run.name} was replaced by another "
                    "object while the job-runner was down",
                    attempts=0,
                )
        else:
            if wl.job_id in self._cancelled:
                return Outcome(
                    JobState.CANCELLED,
                    JobReason.CANCELLED,
                    "cancelled before it started",
                    attempts=0,
                )
            # The config's Secret first, so the pod finds it; owned by the Job once that
            # exists (a crash in between leaves one with no owner: `orphans` deletes it).
            problem = await self._create_config_secret(run)
            if problem is not None:
                return problem
            try:
                job = await self.kube.create_job(run.namespace, self.job_manifest(wl))
                log.info("job.created", job_id=wl.job_id, namespace=run.namespace, job=run.name)
            except ApiException as exc:
                if exc.status != 409:
                    await self._delete_config_secret(wl, run.namespace, run.name)
                    if 400 <= exc.status < 500:
                        return Outcome(
                            JobState.FAILED,
                            JobReason.NONE,
                            f"Kubernetes refused the Job: {status_message(exc)}",
                            attempts=0,
                        )
                    raise
                existing = await self.kube.read_job(run.namespace, run.name)
                if existing is None or labels(existing).get(JOB_ID_LABEL) != wl.job_id:
                    await self._delete_config_secret(wl, run.namespace, run.name)
                    return Outcome(
                        JobState.FAILED,
                        JobReason.NONE,
                        f"a Kubernetes Job named {run.name!r} already exists in namespace "
                        f"{run.namespace!r} and does not belong to this job",
                        attempts=0,
                    )
                job = existing  # ours, created before a runner restart: adopt it
                log.info("job.adopted", job_id=wl.job_id, job=run.name)
            uid = str(meta(job).get("uid") or "")
            if wl.config_json:
                secret = config_secret_name(run.name)
                if await self.kube.patch_secret(run.namespace, secret, owner_patch(job)) is None:
                    log.warning("job.config_missing", job_id=wl.job_id, secret=secret)
            if wl.job_id in self._cancelled:  # cancelled while we were creating it
                await self._delete_config_secret(wl, run.namespace, run.name)
                await self.kube.delete_job(run.namespace, run.name, uid)
                return Outcome(JobState.CANCELLED, JobReason.CANCELLED, "cancelled", attempts=0)
        run.uid = uid
        run.job = job
        return None

    async def _create_config_secret(self, run: _Run) -> Outcome | None:
        """Create the Secret with the workload's inline config (if it has one), or adopt
        ours from before a runner restart. Returns an outcome when it cannot be had."""
        manifest = config_secret_manifest(run.wl)
        if manifest is None:
            return None
        name = str(manifest["metadata"]["name"])
        try:
            await self.kube.create_secret(run.namespace, manifest)
            return None
        except ApiException as exc:
            if exc.status != 409:
                if 400 <= exc.status < 500:
                    return Outcome(
                        JobState.FAILED,
                        JobReason.NONE,
                        f"Kubernetes refused the job's config Secret: {status_message(exc)}",
                        attempts=0,
                    )
                raise
        existing = await self.kube.read_secret(run.namespace, name)
        if existing is None or labels(existing).get(JOB_ID_LABEL) != run.wl.job_id:
            return Outcome(
                JobState.FAILED,
                JobReason.NONE,
                f"a Kubernetes Secret named {name!r} already exists in namespace "
                f"{run.namespace!r} and does not belong to this job",
                attempts=0,
            )
        # Ours, written before a restart: the same job, so the same config (and immutable).
        return None

    async def _delete_config_secret(self, wl: Workload, namespace: str, job_name: str) -> None:
        """Delete the job's config Secret, never a same-named one that is not this job's."""
        if not wl.config_json:
            return
        name = config_secret_name(job_name)
        secret = await self.kube.read_secret(namespace, name)
        if secret is None or labels(secret).get(JOB_ID_LABEL) != wl.job_id:
            return
        if await self.kube.delete_secret(namespace, name, str(meta(secret).get("uid") or "")):
            log.info("job.config_deleted", job_id=wl.job_id, namespace=namespace, secret=name)

    # ---- what the informer says --------------------------------------------------------------

    def _on_event(self, run: _Run, kind: str, type_: str, obj: JSON | None) -> None:
        if kind == JOB:
            if type_ == "ABSENT":
                self._task(self._confirm_absent(run), f"k8s-absent-{run.wl.job_id}")
            elif obj is not None and meta(obj).get("uid") == run.uid:
                run.job = obj
                if type_ == "DELETED":
                    run.job_deleted = True
        elif obj is not None:
            self._track_pods(run, [obj], gone=type_ == "DELETED")
        run.notify()

    async def _confirm_absent(self, run: _Run) -> None:
        """A re-list did not show the Job: it was deleted, or is too new for that list."""
        try:
            job = await self.kube.read_job(run.namespace, run.name)
        except ApiException as exc:
            log.warning("job.read_failed", job_id=run.wl.job_id, status=exc.status)
            return
        if job is None or meta(job).get("uid") != run.uid:
            run.job_deleted = True
            run.notify()

    def _track_pods(self, run: _Run, items: Iterable[JSON], gone: bool) -> None:
        fresh: list[JSON] = []
        for obj in items:
            if not controlled_by(obj, run.uid):
                continue
            uid = str(meta(obj).get("uid"))
            pod = run.by_uid.get(uid)
            if pod is None:
                fresh.append(obj)
                continue
            pod.obj = obj
            pod.gone = pod.gone or gone
        if not fresh:
            return
        fresh.sort(key=attempt_order)
        for obj in fresh:
            pod_meta = meta(obj)
            pod = _Pod(str(pod_meta["uid"]), str(pod_meta["name"]), len(run.pods) + 1, obj, gone)
            run.pods.append(pod)
            run.by_uid[pod.uid] = pod
            log.info("job.pod", job_id=run.wl.job_id, pod=pod.name, attempt=pod.attempt)
        save_attempts(
            run.wl.log_path,
            run.wl.job_id,
            run.uid,
            run.namespace,
            run.name,
            [(p.uid, p.name) for p in run.pods],
        )

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

    async def _report_running(self, run: _Run, on_running: OnRunning) -> None:
        started = [pod.attempt for pod in run.pods if container_started(pod.obj)]
        if started and max(started) > run.reported:
            run.reported = max(started)
            await on_running(run.handle, run.reported)

    async def _evaluate(self, run: _Run) -> Outcome | None:
        wl = run.wl
        if run.job is not None and job_terminal(run.job) is not None:
            await self._await_pods(run)
            return job_outcome(
                run.job,
                [pod.obj for pod in run.pods],
                namespace=run.namespace,
                name=run.name,
                deadline_seconds=wl.deadline_seconds,
                memory_mb=wl.memory_mb,
            )
        if run.job_deleted:
            if wl.job_id in self._cancelled:
                return Outcome(JobState.CANCELLED, JobReason.CANCELLED, "cancelled")
            return Outcome(
                JobState.FAILED,
                JobReason.LOST,
                f"the Kubernetes Job {run.namespace}/{run.name} was deleted before it finished",
            )
        for pod in run.pods:
            failure = None if pod.gone else image_pull_failure(pod.obj)
            if failure is not None:
                await self.kube.delete_job(run.namespace, run.name, run.uid)
                return image_not_found(wl.image, *failure)
        return None

    async def _await_pods(self, run: _Run) -> None:
        """The Job has finished: wait until the pod watch (which may lag behind the Job
        watch) shows as many finished pods as the Job counts, so that the outcome reads the
        last attempt and its log is followed; list them if it does not in time."""

        def caught_up() -> bool:
            done = sum(1 for pod in run.pods if pod.gone or pod_finished(pod.obj))
            return done >= finished_pod_count(run.job)

        deadline = time.monotonic() + POD_LAG_SECONDS
        while not caught_up():
            tick = run.tick
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                try:
                    items = await self.kube.list_pods(run.namespace, run.wl.job_id)
                except Exception as exc:
                    log.warning("job.pod_list_failed", job_id=run.wl.job_id, error=repr(exc))
                    return
                present = {str(meta(p).get("uid")) for p in items}
                for pod in run.pods:
                    if pod.uid not in present:
                        pod.gone = True
                self._track_pods(run, items, gone=False)
                run.notify()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tick.wait(), remaining)

    async def _expire(self, run: _Run) -> None:
        """Apply a configured ttl shorter than the safety net, now that the logs are read."""
        if self.ttl is None or self.ttl >= SAFETY_TTL_SECONDS or run.job_deleted:
            return
        if self.ttl == 0:
            await self.kube.delete_job(run.namespace, run.name, run.uid)
            return

        async def later() -> None:
            await asyncio.sleep(self.ttl or 0)  # a timer, not a wait for a condition
            await self.kube.delete_job(run.namespace, run.name, run.uid)

        self._task(later(), f"k8s-ttl-{run.wl.job_id}")

    # ---- logs ------------------------------------------------------------------------------

    async def _follow(self, run: _Run, resume: LogCursor) -> None:
        """Follow the pods' logs one at a time, in attempt order, into the job log; delete
        each finished pod once its log is read to the end."""
        attempt = resume.attempt
        while True:
            pod = await self._wait_for_pod(run, attempt)
            if pod is None:
                return
            cursor = resume if attempt == resume.attempt else LogCursor(run.wl.log_path, attempt)
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
            cancelled = run.wl.job_id in self._cancelled  # the Job's deletion takes them
            if not run.ctl.stopped and not cancelled and not pod.gone and pod_finished(pod.obj):
                try:
                    await self.kube.delete_pod(run.namespace, pod.name, pod.uid)
                except Exception as exc:  # the safety-net ttl takes it
                    log.warning("job.pod_delete_failed", job_id=run.wl.job_id, error=repr(exc))
            attempt += 1

    async def _wait_for_pod(self, run: _Run, attempt: int) -> _Pod | None:
        while True:
            tick = run.tick
            if len(run.pods) >= attempt:
                return run.pods[attempt - 1]
            if run.final or run.ctl.stopped:
                return None
            await tick.wait()

    async def _follow_pod(self, run: _Run, pod: _Pod, cursor: LogCursor) -> None:
        # A stream that broke or ended while the container still runs is read again, after
        # 0.05 s doubling to 5 s, so a flapping API server is not hammered.
        retrying = AsyncRetrying(
            retry=retry_if_result(bool), wait=wait_exponential(multiplier=0.05, max=5.0)
        )
        await retrying(self._follow_pod_once, run, pod, cursor)

    async def _follow_pod_once(self, run: _Run, pod: _Pod, cursor: LogCursor) -> bool:
        """Stream the pod's log from the cursor once; whether to read on."""
        while not container_started(pod.obj):
            tick = run.tick
            if run.ctl.stopped or pod.gone or run.final or pod_finished(pod.obj):
                return False  # stopped, or it never ran: no output
            await tick.wait()
        if run.ctl.stopped:
            return False
        result = await asyncio.get_running_loop().run_in_executor(
            self._log_streams,
            partial(
                stream_pod_log,
                self.kube.core,
                run.namespace,
                pod.name,
                cursor,
                run.ctl,
                self.log_read_timeout,
            ),
        )
        if result == "stopped":
            return False
        if result == "gone" or (result == "eof" and await self._container_done(run, pod)):
            await asyncio.to_thread(cursor.flush_partial)
            return False
        # Not started yet, a broken connection, or a stream that ended while the container
        # still runs: read on (what was written is skipped).
        return not run.ctl.stopped

    async def _container_done(self, run: _Run, pod: _Pod, timeout: float = 2.0) -> bool:
        """After a stream ended: does the pod show its container finished (or gone)?"""
        deadline = time.monotonic() + timeout
        while True:
            tick = run.tick
            if pod.gone or pod_finished(pod.obj):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or run.ctl.stopped:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tick.wait(), remaining)

    # ---- cancel, delete, orphans, close --------------------------------------------------

    async def cancel(self, workload: Workload, handle: dict[str, Any] | None) -> None:
        """Delete the Job with its pods (SIGTERM, SIGKILL after the grace period) and wait,
        bounded, until the informer shows the pods gone."""
        self._cancelled.add(workload.job_id)
        namespace, name = self._where(workload, handle)
        informer = self._informer(namespace)
        await self._delete_owned(workload, namespace, name, handle)
        if not await informer.wait_for(
            lambda: not informer.pods_of(workload.job_id), self.grace + POD_GONE_MARGIN
        ):
            log.warning("job.cancel_pods_linger", job_id=workload.job_id)

    async def delete(self, workload: Workload, handle: dict[str, Any] | None) -> None:
        namespace, name = self._where(workload, handle)
        await self._delete_owned(workload, namespace, name, handle)

    async def _delete_owned(
        self, wl: Workload, namespace: str, name: str, handle: dict[str, Any] | None
    ) -> None:
        """Delete the job's Job and its config Secret, never a same-named one that is not
        this job's. (Kubernetes would collect the owned Secret too, but only eventually.)"""
        await self._delete_config_secret(wl, namespace, name)
        uid = str((handle or {}).get("uid") or "")
        if not uid:
            job = await self.kube.read_job(namespace, name)
            if job is None:
                return
            if labels(job).get(JOB_ID_LABEL) != wl.job_id:
                log.warning("job.delete_skipped", job_id=wl.job_id, job=name)
                return
            uid = str(meta(job).get("uid") or "")
        if await self.kube.delete_job(namespace, name, uid or None):
            log.info("job.deleted", job_id=wl.job_id, namespace=namespace, job=name)

    async def orphans(self, known_job_ids: set[str]) -> list[str]:
        """Delete the Jobs this runner created (our managed-by label) that it has no record
        of, e.g. created just before a crash whose database insert was rolled back."""
        stopped: list[str] = []
        live: set[str] = set()
        for item in await self.kube.list_jobs(self.namespace, MANAGED_SELECTOR):
            item_meta = meta(item)
            job_id = labels(item).get(JOB_ID_LABEL, "")
            if job_id in known_job_ids:
                live.add(str(item_meta.get("uid")))
                continue
            await self.kube.delete_job(
                self.namespace, str(item_meta["name"]), str(item_meta.get("uid"))
            )
            stopped.append(job_id or str(item_meta["name"]))
        await self._collect_config_secrets(live)
        return stopped

    async def _collect_config_secrets(self, live_job_uids: set[str]) -> None:
        """Delete our config Secrets that no live Job owns: left by a crash between creating
        the Secret and the Job (no owner yet), or owned by a Job just deleted. Runs before
        any job is admitted, so no Secret here is one whose Job is being created."""
        for secret in await self.kube.list_secrets(self.namespace, MANAGED_SELECTOR):
            if owner_uids(secret) & live_job_uids:
                continue
            secret_meta = meta(secret)
            name = str(secret_meta["name"])
            if await self.kube.delete_secret(self.namespace, name, str(secret_meta.get("uid"))):
                log.warning(
                    "job.config_orphan_deleted",
                    secret=name,
                    job_id=labels(secret).get(JOB_ID_LABEL, ""),
                )

    def forget(self, job_id: str) -> None:
        self._cancelled.discard(job_id)

    async def close(self) -> None:
        """Stop watching and following (the Jobs keep running); waits for the log streams,
        so that a next runner can resume the logs from a complete file."""
        for run in list(self._runs.values()):
            run.ctl.stop()
        await self._background.stop()
        threads = [t for informer in self._informers.values() for t in informer.close()]
        self._informers.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.to_thread(self._log_streams.shutdown, True), 10.0)
        deadline = time.monotonic() + 5.0
        for thread in threads:
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
        await self.kube.close()
