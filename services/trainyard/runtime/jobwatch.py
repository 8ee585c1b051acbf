"""Following the job-runner's events from a service: the one loop the services that submit
workloads share (clustering, finetuning).

`follow_job_events` reconciles first (what ended while nobody watched), then applies every
WatchJobs event of the jobs carrying `labels` from the last revision seen, which it keeps
in `cursors` under the name `cursor` (the service's own database). It never returns: a watch
that ends raises WatchLost, so that `Background.supervise` reconnects with backoff. A revision
the job-runner no longer has (INVALID_ARGUMENT) resets the cursor; the reconcile then covers
the gap.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn

import grpc
import structlog

from trainyard.api.jobrunner.v1 import messages_pb2 as jr
from trainyard.runtime.db import Cursors

log = structlog.get_logger("trainyard.runtime.jobwatch")


class WatchLost(ConnectionError):
    """The job-runner's WatchJobs stream ended."""


async def follow_job_events(
    jobs: Any,
    labels: Mapping[str, str],
    *,
    cursors: Cursors,
    cursor: str,
    on_job: Callable[[jr.Job], Awaitable[None]],
    reconcile: Callable[[], Awaitable[None]],
) -> NoReturn:
    since = await cursors.get(cursor)
    request = jr.WatchJobsRequest(labels=dict(labels))
    if since:
        request.since_revision = since
    call = jobs.WatchJobs(request)
    try:
        await reconcile()
        async for response in call:
            try:
                await on_job(response.event.job)
            except Exception:
                log.exception("jobwatch.event_failed", job_id=response.event.job.job_id)
            if response.event.revision > since:
                since = response.event.revision
                await cursors.save(cursor, since)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and since:
            await cursors.save(cursor, 0, reset=True)
        raise WatchLost(f"the job-runner's watch ended: {exc.code().name}") from exc
    finally:
        call.cancel()
    raise WatchLost("the job-runner closed the watch")
