"""One namespace-wide, label-selected view of trainyard's Jobs and Pods: an informer.

Two threads per namespace (one per resource kind) each list, then watch from the list's
resourceVersion; when the server ends a watch they resume from the last resourceVersion seen,
and on 410 Gone (history compacted) they list again and turn the difference into events, so
subscribers never miss a deletion. Events are parsed as plain JSON (no model deserialization)
and handed to the event loop in batches, where the cache is updated and per-job subscribers
are called. So connections and threads stay constant however many jobs run, and "what state
is job X in" is answered from the cache without an API call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from kubernetes.client.rest import ApiException
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential

from trainyard.jobrunner.backends.kubernetes.api import KubernetesApi, list_all
from trainyard.jobrunner.backends.kubernetes.logs import (
    CONNECT_TIMEOUT,
    response_chunks,
    shutdown_response,
)
from trainyard.jobrunner.backends.kubernetes.manifests import JOB_ID_LABEL, MANAGED_SELECTOR
from trainyard.jobrunner.backends.kubernetes.status import labels, meta

log = structlog.get_logger("trainyard.jobrunner.kubernetes")

JSON = dict[str, Any]
JOB = "job"
POD = "pod"
# A subscriber's events: (JOB | POD, ADDED | MODIFIED | DELETED, the object), or
# (JOB, ABSENT, None) when a re-list does not contain the job's Job (it may never have been
# seen: the subscriber decides with a read).
Handler = Callable[[str, str, JSON | None], None]
Deliver = Callable[[str, str, Any], None]


class _Watcher:
    """List + watch of one kind, in one daemon thread, delivering to the event loop."""

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        namespace: str,
        deliver: Deliver,
        watch_timeout: int,
    ) -> None:
        self.kind = kind
        self.list_fn = list_fn
        self.namespace = namespace
        self.deliver = deliver
        self.watch_timeout = watch_timeout
        self.stopped = threading.Event()
        self._response: Any = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(
            target=self._loop, name=f"k8s-informer-{kind}-{namespace}", daemon=True
        )

    def stop(self) -> None:
        self.stopped.set()
        with self._lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                shutdown_response(response)

    def _loop(self) -> None:
        version: str | None = None
        while not self.stopped.is_set():
            # One Retrying per healthy session: the backoff (0.2 s doubling to 5 s) grows over
            # consecutive failures only, and `stop()` cuts a pause short.
            retrying = Retrying(
                retry=retry_if_exception(lambda _exc: not self.stopped.is_set()),
                wait=wait_exponential(multiplier=0.2, max=5.0),
                sleep=self._pause,
                before_sleep=self._note_failure,
                reraise=True,
            )
            try:
                version = retrying(self._session, version)
            except Exception:
                return  # failed as it was being stopped

    def _session(self, version: str | None) -> str | None:
        """List (when there is no version to resume from) and watch until the server ends
        the watch; the version to resume from, None after 410 Gone (list again at once)."""
        if version is None:
            items, version = list_all(self.list_fn, self.namespace, label_selector=MANAGED_SELECTOR)
            self.deliver(self.kind, "RELIST", items)
        try:
            return self._watch(version)
        except ApiException as exc:
            if exc.status != 410:
                raise
            log.info("kubernetes.watch_expired", kind=self.kind, namespace=self.namespace)
            return None

    def _pause(self, seconds: float) -> None:
        self.stopped.wait(seconds)

    def _note_failure(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, ApiException):
            log.warning("kubernetes.watch_failed", kind=self.kind, status=exc.status)
        else:
            log.warning("kubernetes.watch_failed", kind=self.kind, error=repr(exc))

    def _watch(self, version: str) -> str:
        """One watch connection from `version` until the server ends it; the last version."""
        response = self.list_fn(
            self.namespace,
            label_selector=MANAGED_SELECTOR,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT, self.watch_timeout + 30),
        )
        with self._lock:
            self._response = response
        if self.stopped.is_set():
            shutdown_response(response)
        partial = b""
        try:
            for chunk in response_chunks(response):
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                batch: list[tuple[str, JSON]] = []
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    type_, obj = str(event.get("type")), event.get("object") or {}
                    if type_ == "ERROR":
                        if batch:
                            self.deliver(self.kind, "EVENTS", batch)
                        raise ApiException(
                            status=int(obj.get("code") or 500),
                            reason=f"{obj.get('reason')}: {obj.get('message')}",
                        )
                    version = str(meta(obj).get("resourceVersion") or "") or version
                    if type_ != "BOOKMARK":
                        batch.append((type_, obj))
                if batch:
                    self.deliver(self.kind, "EVENTS", batch)
                if self.stopped.is_set():
                    break
        finally:
            with self._lock:
                self._response = None
            with contextlib.suppress(Exception):
                response.release_conn()
        return version


class NamespaceInformer:
    """The cache of trainyard's Jobs and Pods in one namespace, and per-job subscriptions.
    Everything but the two watcher threads runs on the event loop."""

    def __init__(self, api: KubernetesApi, namespace: str, watch_timeout: int) -> None:
        self.namespace = namespace
        self._objects: dict[str, dict[str, JSON]] = {JOB: {}, POD: {}}  # kind -> uid -> obj
        self._by_job: dict[str, dict[str, set[str]]] = {JOB: {}, POD: {}}  # job id -> uids
        self._subscribers: dict[str, set[Handler]] = {}
        self._listed: dict[str, asyncio.Event] = {JOB: asyncio.Event(), POD: asyncio.Event()}
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._watchers = [
            _Watcher(JOB, api.batch.list_namespaced_job, namespace, self._deliver, watch_timeout),
            _Watcher(POD, api.core.list_namespaced_pod, namespace, self._deliver, watch_timeout),
        ]
        for watcher in self._watchers:
            watcher.thread.start()

    # ---- queries (no API calls) --------------------------------------------------------------

    def jobs_of(self, job_id: str) -> list[JSON]:
        return [self._objects[JOB][uid] for uid in self._by_job[JOB].get(job_id, ())]

    def pods_of(self, job_id: str) -> list[JSON]:
        return [self._objects[POD][uid] for uid in self._by_job[POD].get(job_id, ())]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until both kinds were listed and predicate() holds; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            changed = self._changed
            if all(e.is_set() for e in self._listed.values()) and predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    # ---- subscriptions ----------------------------------------------------------------------

    def subscribe(self, job_id: str, handler: Handler) -> Callable[[], None]:
        """Call handler for every change of the job's Job and pods, starting with what the
        cache holds now; returns the unsubscribe function."""
        self._subscribers.setdefault(job_id, set()).add(handler)
        for job in self.jobs_of(job_id):
            handler(JOB, "ADDED", job)
        for pod in self.pods_of(job_id):
            handler(POD, "ADDED", pod)

        def unsubscribe() -> None:
            handlers = self._subscribers.get(job_id)
            if handlers is not None:
                handlers.discard(handler)
                if not handlers:
                    del self._subscribers[job_id]

        return unsubscribe

    def close(self) -> list[threading.Thread]:
        for watcher in self._watchers:
            watcher.stop()
        return [watcher.thread for watcher in self._watchers]

    # ---- applying what the watchers saw ------------------------------------------------------

    def _deliver(self, kind: str, what: str, payload: Any) -> None:
        """From a watcher thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._apply, kind, what, payload)

    def _apply(self, kind: str, what: str, payload: Any) -> None:
        try:
            if what == "RELIST":
                self._relist(kind, payload)
            else:
                for type_, obj in payload:
                    self._event(kind, type_, obj)
        finally:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def _relist(self, kind: str, items: list[JSON]) -> None:
        fresh = {str(meta(obj).get("uid")): obj for obj in items}
        for uid, gone in list(self._objects[kind].items()):
            if uid not in fresh:
                self._event(kind, "DELETED", gone)
        for uid, obj in fresh.items():
            known = self._objects[kind].get(uid)
            if known is None:
                self._event(kind, "ADDED", obj)
            elif meta(known).get("resourceVersion") != meta(obj).get("resourceVersion"):
                self._event(kind, "MODIFIED", obj)
        if kind == JOB:
            for job_id in list(self._subscribers):
                if not self._by_job[JOB].get(job_id):
                    self._dispatch(job_id, JOB, "ABSENT", None)
        self._listed[kind].set()

    def _event(self, kind: str, type_: str, obj: JSON) -> None:
        uid = str(meta(obj).get("uid"))
        job_id = labels(obj).get(JOB_ID_LABEL, "")
        index = self._by_job[kind]
        if type_ == "DELETED":
            self._objects[kind].pop(uid, None)
            uids = index.get(job_id)
            if uids is not None:
                uids.discard(uid)
                if not uids:
                    del index[job_id]
        elif type_ in ("ADDED", "MODIFIED"):
            self._objects[kind][uid] = obj
            index.setdefault(job_id, set()).add(uid)
        else:
            return
        self._dispatch(job_id, kind, type_, obj)

    def _dispatch(self, job_id: str, kind: str, type_: str, obj: JSON | None) -> None:
        for handler in list(self._subscribers.get(job_id, ())):
            try:
                handler(kind, type_, obj)
            except Exception:  # a malformed object must not stop the other jobs' bookkeeping
                log.exception("job.event_ignored", job_id=job_id, kind=kind)
