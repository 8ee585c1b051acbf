"""The API calls the backend makes, as plain JSON, each in the default executor (the official
client is synchronous) and retried on transient failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from functools import partial
from typing import Any

import structlog
import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from trainyard.jobrunner.backends.kubernetes.manifests import JOB_ID_LABEL

log = structlog.get_logger("trainyard.jobrunner.kubernetes")

JSON = dict[str, Any]
CALL_TIMEOUT = (10.0, 60.0)  # (connect, read) for ordinary requests
PAGE_SIZE = 500


def load_json(response: Any) -> JSON:
    """The body of an unpreloaded response, releasing its connection to the pool."""
    try:
        data: JSON = json.loads(response.data)
    finally:
        response.release_conn()
    return data


def transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (0, 429) or exc.status >= 500
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


def status_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def list_all(
    list_fn: Callable[..., Any], namespace: str, **selectors: Any
) -> tuple[list[JSON], str]:
    """Every matching object, page by page (blocking), and the resourceVersion of the first
    page: a watch from it replays whatever changed while the later pages were read."""
    items: list[JSON] = []
    version = ""
    token: str | None = None
    while True:
        kwargs: JSON = {"limit": PAGE_SIZE, **selectors}
        if token:
            kwargs["_continue"] = token
        listing = load_json(
            list_fn(namespace, _preload_content=False, _request_timeout=CALL_TIMEOUT, **kwargs)
        )
        meta = listing.get("metadata") or {}
        version = version or str(meta.get("resourceVersion") or "")
        items.extend(listing.get("items") or [])
        token = meta.get("continue") or None
        if not token:
            return items, version


class KubernetesApi:
    """Jobs, pods and the jobs' config Secrets of the official client, as JSON dicts."""

    def __init__(self, api_client: Any) -> None:
        self.client = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    async def call_json(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> JSON:
        """One request in the default executor, retried on transient failures."""
        kwargs.setdefault("_request_timeout", CALL_TIMEOUT)
        call = partial(fn, *args, _preload_content=False, **kwargs)
        name = getattr(fn, "__name__", "?")

        def note(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            log.warning("kubernetes.retry", call=name, error=str(error))

        # Four tries, 0.25 s doubling in between: an API server that restarts or throttles
        # (429, 5xx, a reset connection) gets a moment; a refusal (4xx) fails at once.
        retrying = AsyncRetrying(
            retry=retry_if_exception(transient),
            stop=stop_after_attempt(4),
            wait=wait_exponential(multiplier=0.25),
            before_sleep=note,
            reraise=True,
        )
        result: JSON = await retrying(asyncio.to_thread, lambda: load_json(call()))
        return result

    async def create_job(self, namespace: str, manifest: JSON) -> JSON:
        return await self.call_json(self.batch.create_namespaced_job, namespace, manifest)

    async def read_job(self, namespace: str, name: str) -> JSON | None:
        try:
            return await self.call_json(self.batch.read_namespaced_job, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list_jobs(self, namespace: str, label_selector: str) -> list[JSON]:
        items, _version = await asyncio.to_thread(
            list_all, self.batch.list_namespaced_job, namespace, label_selector=label_selector
        )
        return items

    async def list_pods(self, namespace: str, job_id: str) -> list[JSON]:
        listing = await self.call_json(
            self.core.list_namespaced_pod, namespace, label_selector=f"{JOB_ID_LABEL}={job_id}"
        )
        return list(listing.get("items") or [])

    async def delete_job(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete with background propagation (the pods go too); False if there was none."""
        body = client.V1DeleteOptions(
            propagation_policy="Background",
            preconditions=client.V1Preconditions(uid=uid) if uid else None,
        )
        try:
            await self.call_json(self.batch.delete_namespaced_job, name, namespace, body=body)
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status == 409:  # the precondition failed: that Job is not ours
                log.warning("job.delete_skipped", namespace=namespace, job=name, uid=uid)
                return False
            raise
        return True

    async def delete_pod(self, namespace: str, name: str, uid: str) -> bool:
        """Delete this pod (never a same-named successor); False if it was already gone."""
        body = client.V1DeleteOptions(
            propagation_policy="Background", preconditions=client.V1Preconditions(uid=uid)
        )
        try:
            await self.call_json(self.core.delete_namespaced_pod, name, namespace, body=body)
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def create_secret(self, namespace: str, manifest: JSON) -> JSON:
        return await self.call_json(self.core.create_namespaced_secret, namespace, manifest)

    async def read_secret(self, namespace: str, name: str) -> JSON | None:
        try:
            return await self.call_json(self.core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list_secrets(self, namespace: str, label_selector: str) -> list[JSON]:
        items, _version = await asyncio.to_thread(
            list_all, self.core.list_namespaced_secret, namespace, label_selector=label_selector
        )
        return items

    async def patch_secret(self, namespace: str, name: str, patch: JSON) -> JSON | None:
        """A JSON merge patch (the client would send a dict as a JSON patch, which it is
        not); None if the Secret is gone."""
        try:
            return await self.call_json(
                self.core.patch_namespaced_secret,
                name,
                namespace,
                patch,
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def delete_secret(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete this Secret (with `uid`: never a same-named successor); False if there was
        none or it was another one."""
        body = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=uid) if uid else None
        )
        try:
            await self.call_json(self.core.delete_namespaced_secret, name, namespace, body=body)
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)
