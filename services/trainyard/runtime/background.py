"""Background work of a service: long-running tasks, periodic tasks and supervised tasks, all
cancelled and awaited on shutdown.

    background = Background("upload")
    background.every("upload-sweep", 60.0, store.sweep)
    background.supervise("follow-jobs", trainings.follow_jobs)
    background.start()          # run_app does this once the server is serving
    ...
    await background.stop()     # and this before the server stops

A task registered before `start()` waits for it, so an App can declare its background work in
`build` and have it run only once the process serves (and never in a process that failed to
start). After `stop()` nothing new starts: a late `spawn` (a job finishing during shutdown)
is refused rather than leaked past the event loop's end.

Restarts back off with tenacity, the one retry mechanism of the code base (see clients.py).
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

log = structlog.get_logger("trainyard.background")

CoroFn = Callable[[], Awaitable[object]]


class BackgroundStopped(RuntimeError):
    """A task was spawned after `stop()`."""


class _Ended(enum.Enum):
    RETURNED = "returned"
    CRASHED_HEALTHY = "crashed after a healthy run"


@dataclass(frozen=True)
class _Pending:
    name: str
    coro_fn: CoroFn


class Background:
    """The background tasks of one component or process."""

    def __init__(self, owner: str = "service", *, started: bool = False) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: list[_Pending] = []
        self._started = started
        self._stopped = False

    # ---- registering -------------------------------------------------------------------------

    def spawn(self, name: str, coro_fn: CoroFn) -> asyncio.Task[None] | None:
        """Run `coro_fn()` once, in the background. Its exception, if any, is logged (a task
        nobody awaits must not fail silently); a task that must keep running is `supervise`d.
        Returns the task, or None while the helper is not started yet (it starts then)."""
        if self._stopped:
            raise BackgroundStopped(f"{self.owner}: {name!r} spawned after shutdown began")
        if not self._started:
            self._pending.append(_Pending(name, coro_fn))
            return None
        task = asyncio.create_task(self._run(name, coro_fn), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def every(
        self,
        name: str,
        seconds: float,
        coro_fn: CoroFn,
        *,
        jitter: float = 0.1,
        immediately: bool = False,
    ) -> asyncio.Task[None] | None:
        """Run `coro_fn()` every `seconds` (± `jitter` of it, so that replicas started together
        do not hit a shared database or bucket in step), until stopped. A round that raises is
        logged and the next one runs on time: one bad round never ends the schedule. Rounds do
        not overlap: the interval counts from the end of the previous round."""
        if seconds <= 0:
            raise ValueError(f"{name}: the interval must be positive, not {seconds}")
        if not 0 <= jitter < 1:
            raise ValueError(f"{name}: jitter is a fraction of the interval in [0, 1)")

        async def periodic() -> None:
            first = True
            while True:
                if not (first and immediately):
                    await asyncio.sleep(seconds * (1 + random.uniform(-jitter, jitter)))
                first = False
                try:
                    await coro_fn()
                except Exception:
                    log.exception("background.round_failed", owner=self.owner, task=name)

        return self.spawn(name, periodic)

    def supervise(
        self,
        name: str,
        coro_fn: CoroFn,
        *,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        healthy_after: float = 60.0,
    ) -> asyncio.Task[None] | None:
        """Keep the long-running `coro_fn()` running: when it raises it is restarted after an
        exponential backoff with jitter (`initial_backoff` doubling up to `max_backoff`), so a
        dependency that is down is not hammered. A run that lasted `healthy_after` seconds
        resets the backoff: the next crash restarts after `initial_backoff` again (never at
        once, so a task that crashes without awaiting cannot starve the event loop). Returning
        ends the supervision."""

        async def supervised() -> None:
            while True:
                retrying = AsyncRetrying(
                    retry=retry_if_exception_type(Exception),
                    wait=wait_exponential_jitter(
                        multiplier=initial_backoff, max=max_backoff, jitter=initial_backoff
                    ),
                    before_sleep=self._restart_logger(name),
                )
                ended: _Ended = await retrying(
                    self._attempt, name, coro_fn, healthy_after, initial_backoff
                )
                if ended is _Ended.RETURNED:
                    return
                await asyncio.sleep(initial_backoff)

        return self.spawn(name, supervised)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Run what was registered so far; from now on a registration runs at once."""
        if self._stopped:
            raise BackgroundStopped(f"{self.owner}: started after shutdown began")
        self._started = True
        pending, self._pending = self._pending, []
        for item in pending:
            self.spawn(item.name, item.coro_fn)

    @property
    def running(self) -> list[str]:
        """The names of the tasks that have not ended yet."""
        return sorted(task.get_name() for task in self._tasks if not task.done())

    async def stop(self, timeout: float = 10.0) -> None:
        """Cancel every task and wait (at most `timeout` seconds) until each has ended; a task
        that swallows its cancellation past that is logged by name and left behind."""
        self._stopped = True
        self._pending.clear()
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, lingering = await asyncio.wait(tasks, timeout=timeout)
        if lingering:
            log.warning(
                "background.stop_timeout",
                owner=self.owner,
                tasks=sorted(task.get_name() for task in lingering),
            )

    # ---- internals ---------------------------------------------------------------------------

    async def _run(self, name: str, coro_fn: CoroFn) -> None:
        try:
            await coro_fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background.task_failed", owner=self.owner, task=name)

    async def _attempt(
        self, name: str, coro_fn: CoroFn, healthy_after: float, restart_in: float
    ) -> _Ended:
        started = time.monotonic()
        try:
            await coro_fn()
        except Exception:
            if time.monotonic() - started < healthy_after:
                raise  # a crash streak: tenacity backs off
            log.exception(
                "background.task_crashed",
                owner=self.owner,
                task=name,
                crashes=1,
                restart_in_seconds=restart_in,
            )
            return _Ended.CRASHED_HEALTHY
        return _Ended.RETURNED

    def _restart_logger(self, name: str) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            log.error(
                "background.task_crashed",
                owner=self.owner,
                task=name,
                crashes=state.attempt_number,
                restart_in_seconds=round(state.upcoming_sleep, 3),
                exc_info=exc,
            )

        return before_sleep
