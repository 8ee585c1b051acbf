"""The job controller, the garbage collector and the TTL-after-finished controller.

One background thread reconciles every job whenever the store changes (and at
least every 50 ms, for deadlines): it creates pods, counts finished ones,
applies backoffLimit / activeDeadlineSeconds, writes the job status with the
same conditions as Kubernetes 1.31+ (SuccessCriteriaMet/FailureTarget first,
then Complete/Failed once no pod is left running), and finishes deletions that
wait on the orphan / foregroundDeletion finalizers.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from ._util import JSON, now, parse_rfc3339, rfc3339
from .apiserver import (
    FOREGROUND_FINALIZER,
    JOB_TRACKING_FINALIZER,
    JOBS,
    ORPHAN_FINALIZER,
    Cluster,
)
from .kubelet import PODS, SECRETS, PodRuntime

_log = logging.getLogger(__name__)

_POLL_SECONDS = 0.05
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")
COMPLETIONS_REACHED = ("CompletionsReached", "Reached expected number of succeeded pods")


@dataclass
class _Tracking:
    counted: set[str] = field(default_factory=set)
    succeeded: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    last_failure: float = 0.0
    started: float | None = None  # monotonic time matching status.startTime
    finishing: tuple[str, str, str] | None = None  # (terminal type, reason, message)
    finishing_at: str = ""
    finished_at: float | None = None


def _condition(type_: str, reason: str, message: str, stamp: str) -> JSON:
    return {
        "type": type_,
        "status": "True",
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


def _finished(status: JSON) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


class JobController:
    def __init__(self, cluster: Cluster, retry_backoff: float = 0.0) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.kubelet = cluster.kubelet
        self.retry_backoff = retry_backoff
        self._tracking: dict[str, _Tracking] = {}
        self._by_owner: dict[str, list[PodRuntime]] = {}  # rebuilt by every sync_all pass
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="job-controller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self.store.lock:
            self._stopped = True
            self.store.changed.notify_all()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        seen = -1
        while True:
            with self.store.lock:

                def changed(last: int = seen) -> bool:
                    return self._stopped or self.store.revision != last

                self.store.changed.wait_for(changed, timeout=_POLL_SECONDS)
                if self._stopped:
                    return
                seen = self.store.revision
                try:
                    self.sync_all()
                except Exception:  # keep the controller alive, like a real one
                    _log.exception("job controller sync failed")

    def sync_all(self) -> None:
        with self.store.lock:
            jobs = self.store.live(JOBS)
            # Index pod runtimes by owner once per pass, not once per job: with a thousand
            # jobs a per-job scan of every runtime made each pass quadratic.
            self._by_owner = {}
            for runtime in self.kubelet.runtimes():
                if runtime.owner_uid is not None:
                    self._by_owner.setdefault(runtime.owner_uid, []).append(runtime)
            for job in jobs:
                self._sync_job(job)
            self._collect_garbage()

    def _owned_runtimes(self, uid: str, rescan: bool = False) -> list[PodRuntime]:
        """This job's pod runtimes (`rescan`: after creating pods in this pass)."""
        if rescan:
            return [rt for rt in self.kubelet.runtimes() if rt.owner_uid == uid]
        return list(self._by_owner.get(uid, []))

    # -- job controller ----------------------------------------------------------

    def _release(self, namespace: str, name: str) -> None:
        """Drop the job-tracking finalizer once a finished pod has been counted."""

        def strip(obj: JSON) -> None:
            finalizers = [
                f for f in obj["metadata"].get("finalizers") or [] if f != JOB_TRACKING_FINALIZER
            ]
            if finalizers:
                obj["metadata"]["finalizers"] = finalizers
            else:
                obj["metadata"].pop("finalizers", None)

        self.store.update(PODS, namespace, name, strip)
        self.kubelet.maybe_remove(namespace, name)

    def _sync_job(self, job: JSON) -> None:
        meta = job["metadata"]
        if meta.get("deletionTimestamp"):
            return
        spec = job["spec"]
        status = job.get("status") or {}
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        tracking = self._tracking.setdefault(uid, _Tracking())
        runtimes = self._owned_runtimes(uid)

        for runtime in runtimes:
            if runtime.done.is_set() and runtime.uid not in tracking.counted:
                tracking.counted.add(runtime.uid)
                if runtime.phase == "Succeeded":
                    tracking.succeeded += 1
                    tracking.consecutive_failures = 0
                else:
                    tracking.failed += 1
                    tracking.consecutive_failures += 1
                    tracking.last_failure = time.monotonic()
                self._release(runtime.namespace, runtime.name)

        if _finished(status):
            self._expire_finished(job, tracking)
            return

        suspended = bool(spec.get("suspend"))
        start_time = status.get("startTime")
        if not suspended and start_time is None:
            start_time = rfc3339(now())
            tracking.started = time.monotonic()
        elif start_time is not None and tracking.started is None:
            elapsed = (now() - parse_rfc3339(start_time)).total_seconds()
            tracking.started = time.monotonic() - elapsed

        active = [rt for rt in runtimes if not rt.done.is_set() and not rt.deletion_requested]
        policy = spec["template"]["spec"].get("restartPolicy")
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        if tracking.finishing is None and not suspended:
            backoff_limit = int(spec.get("backoffLimit", 6))
            restarts = sum(c.restart_count for rt in active for c in rt.containers)
            on_failure_exceeded = policy == "OnFailure" and (
                restarts >= backoff_limit if backoff_limit > 0 else restarts > 0
            )
            deadline = spec.get("activeDeadlineSeconds")
            finishing: tuple[str, str, str] | None = None
            if tracking.failed > backoff_limit or on_failure_exceeded:
                finishing = ("Failed", *BACKOFF_LIMIT_EXCEEDED)
            elif (
                deadline is not None
                and tracking.started is not None
                and time.monotonic() - tracking.started >= float(deadline)
            ):
                finishing = ("Failed", *DEADLINE_EXCEEDED)
            elif (completions is not None and tracking.succeeded >= int(completions)) or (
                completions is None and tracking.succeeded > 0 and not active
            ):
                finishing = ("Complete", *COMPLETIONS_REACHED)
            if finishing is not None:
                tracking.finishing = finishing
                tracking.finishing_at = rfc3339(now())

        created = False
        if tracking.finishing is not None or suspended:
            for runtime in active:
                self.kubelet.delete_pod(runtime.namespace, runtime.name)
        else:
            wanted = parallelism
            if completions is not None:
                wanted = min(parallelism, int(completions) - tracking.succeeded)
            elif tracking.succeeded > 0:
                wanted = 0
            delay = 0.0
            if tracking.consecutive_failures:
                delay = self.retry_backoff * 2 ** min(tracking.consecutive_failures - 1, 6)
            if time.monotonic() >= tracking.last_failure + delay:
                for _ in range(max(0, wanted - len(active))):
                    self.cluster.create_pod_for_job(job)
                    created = True

        runtimes = self._owned_runtimes(uid, rescan=created)
        active = [rt for rt in runtimes if not rt.done.is_set() and not rt.deletion_requested]
        terminating = [rt for rt in runtimes if not rt.done.is_set() and rt.deletion_requested]
        ready = sum(1 for rt in active if rt.containers and all(c.ready for c in rt.containers))

        new_status: JSON = {}
        conditions: list[JSON] = []
        if suspended:
            stamp = next(
                (
                    c["lastTransitionTime"]
                    for c in status.get("conditions") or []
                    if c.get("type") == "Suspended"
                ),
                rfc3339(now()),
            )
            conditions.append(_condition("Suspended", "JobSuspended", "Job suspended", stamp))
        if tracking.finishing is not None:
            terminal, reason, message = tracking.finishing
            interim = "SuccessCriteriaMet" if terminal == "Complete" else "FailureTarget"
            conditions.append(_condition(interim, reason, message, tracking.finishing_at))
            if not active and not terminating:
                stamp = rfc3339(now())
                conditions.append(_condition(terminal, reason, message, stamp))
                if terminal == "Complete":
                    new_status["completionTime"] = stamp
                tracking.finished_at = time.monotonic()
        if conditions:
            new_status["conditions"] = conditions
        if start_time is not None:
            new_status["startTime"] = start_time
        if active:
            new_status["active"] = len(active)
        if tracking.succeeded:
            new_status["succeeded"] = tracking.succeeded
        if tracking.failed:
            new_status["failed"] = tracking.failed
        new_status["terminating"] = len(terminating)
        new_status["ready"] = ready
        new_status["uncountedTerminatedPods"] = {}

        def apply(obj: JSON) -> None:
            obj["status"] = new_status

        self.store.update(JOBS, namespace, name, apply)

    def _expire_finished(self, job: JSON, tracking: _Tracking) -> None:
        """ttlSecondsAfterFinished: delete finished jobs (foreground, like the TTL controller)."""
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        if tracking.finished_at is None:
            stamps = [
                c["lastTransitionTime"]
                for c in job["status"].get("conditions") or []
                if c.get("type") in ("Complete", "Failed")
            ]
            elapsed = (now() - parse_rfc3339(stamps[0])).total_seconds() if stamps else 0.0
            tracking.finished_at = time.monotonic() - elapsed
        if time.monotonic() - tracking.finished_at >= float(ttl):
            meta = job["metadata"]
            self.cluster.delete_job(
                meta["namespace"], meta["name"], {"propagationPolicy": "Foreground"}
            )

    # -- garbage collector ---------------------------------------------------------

    def _owned_secrets(self, owner_uid: str) -> list[JSON]:
        return [
            secret
            for secret in self.store.live(SECRETS)
            if any(
                ref.get("uid") == owner_uid
                for ref in secret["metadata"].get("ownerReferences") or []
            )
        ]

    def _strip_owner(self, pod: JSON, owner_uid: str, resource: str = PODS) -> None:
        """Orphan a dependent (a pod, or another resource's object): drop the owner's
        reference, and a pod's job-tracking finalizer."""

        def strip(obj: JSON) -> None:
            refs = [
                ref
                for ref in obj["metadata"].get("ownerReferences") or []
                if ref.get("uid") != owner_uid
            ]
            if refs:
                obj["metadata"]["ownerReferences"] = refs
            else:
                obj["metadata"].pop("ownerReferences", None)
            finalizers = [
                f for f in obj["metadata"].get("finalizers") or [] if f != JOB_TRACKING_FINALIZER
            ]
            if finalizers:
                obj["metadata"]["finalizers"] = finalizers
            else:
                obj["metadata"].pop("finalizers", None)

        meta = pod["metadata"]
        self.store.update(resource, meta["namespace"], meta["name"], strip)
        if resource == PODS:
            self.kubelet.maybe_remove(meta["namespace"], meta["name"])

    def _release_if_done(self, pod: JSON) -> None:
        meta = pod["metadata"]
        runtime = self.kubelet.runtime(meta["namespace"], meta["name"])
        if JOB_TRACKING_FINALIZER in (meta.get("finalizers") or []) and (
            runtime is None or runtime.done.is_set()
        ):
            self._release(meta["namespace"], meta["name"])

    def _collect_garbage(self) -> None:
        jobs = self.store.live(JOBS)
        pods = self.store.live(PODS)
        live_uids = {job["metadata"]["uid"] for job in jobs}

        def dependents(uid: str) -> list[JSON]:
            return [
                pod
                for pod in self.store.live(PODS)
                if any(
                    ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or []
                )
            ]

        for job in jobs:
            meta = job["metadata"]
            if not meta.get("deletionTimestamp"):
                continue
            uid = meta["uid"]
            finalizers = list(meta.get("finalizers") or [])
            if ORPHAN_FINALIZER in finalizers:
                for pod in dependents(uid):
                    self._strip_owner(pod, uid)
                for secret in self._owned_secrets(uid):
                    self._strip_owner(secret, uid, SECRETS)
                finalizers.remove(ORPHAN_FINALIZER)
            if FOREGROUND_FINALIZER in finalizers:
                # None of them blocks the owner's deletion (blockOwnerDeletion is for pods
                # here): they go first, the owner does not wait for them.
                for secret in self._owned_secrets(uid):
                    self.store.delete(
                        SECRETS, secret["metadata"]["namespace"], secret["metadata"]["name"]
                    )
                for pod in dependents(uid):
                    if pod["metadata"].get("deletionTimestamp") is None:
                        self.kubelet.delete_pod(
                            pod["metadata"]["namespace"], pod["metadata"]["name"]
                        )
                    self._release_if_done(pod)
                if not dependents(uid):
                    finalizers.remove(FOREGROUND_FINALIZER)
            if finalizers == list(meta.get("finalizers") or []):
                continue
            if finalizers:

                def keep(obj: JSON, remaining: list[str] = finalizers) -> None:
                    obj["metadata"]["finalizers"] = remaining

                self.store.update(JOBS, meta["namespace"], meta["name"], keep)
            else:

                def clear(obj: JSON) -> None:
                    obj["metadata"].pop("finalizers", None)

                self.store.update(JOBS, meta["namespace"], meta["name"], clear)
                self.store.delete(JOBS, meta["namespace"], meta["name"])
                self._tracking.pop(uid, None)

        # Background collection of Secrets: once none of the Jobs a Secret names as owners
        # exists, it goes (owners of kinds the double does not model keep it).
        for secret in self.store.live(SECRETS):
            meta = secret["metadata"]
            refs = meta.get("ownerReferences") or []
            if not refs or any(ref.get("kind") != "Job" for ref in refs):
                continue
            if not any(ref.get("uid") in live_uids for ref in refs):
                self.store.delete(SECRETS, meta["namespace"], meta["name"])

        for pod in pods:
            meta = pod["metadata"]
            owners = [
                ref.get("uid")
                for ref in meta.get("ownerReferences") or []
                if ref.get("kind") == "Job"
            ]
            if not owners or all(uid in live_uids for uid in owners):
                continue
            if meta.get("deletionTimestamp") is None:
                self.kubelet.delete_pod(meta["namespace"], meta["name"])
            current = self.store.get(PODS, meta["namespace"], meta["name"])
            if current is not None:
                self._release_if_done(current)
