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

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

log = structlog.get_logger("trainyard.background")

CoroFn = Callable[[], Awaitable[object]]


class BackgroundStopped(RuntimeError):
    """A task was spawned after `stop()`."""


class _Ended(enum.Enum):
    RETURNED = "returned"
    CRASHED_HEALTHY = "crashed after a healthy run"


class Background:
    """The background tasks of one component or process."""

    def __init__(self, owner: str = "service", *, started: bool = False) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[None]] = set()
        self._go = asyncio.Event()
        if started:
            self._go.set()
        self._stopped = False

    # ---- registering -------------------------------------------------------------------------

    def spawn(self, name: str, coro_fn: CoroFn) -> asyncio.Task[None]:
        """Run `coro_fn()` once, in the background (once started). Its exception, if any, is
        logged (a task nobody awaits must not fail silently); a task that must keep running is
        `supervise`d. Returns the task, which may be awaited or cancelled."""
        if self._stopped:
            raise BackgroundStopped(f"{self.owner}: {name!r} spawned after shutdown began")
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
    ) -> asyncio.Task[None]:
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
        expected: tuple[type[Exception], ...] = (),
    ) -> asyncio.Task[None]:
        """Keep the long-running `coro_fn()` running: when it raises it is restarted after an
        exponential backoff with jitter (`initial_backoff` doubling up to `max_backoff`), so a
        dependency that is down is not hammered. A run that lasted `healthy_after` seconds
        resets the backoff: the next crash restarts after `initial_backoff` again (never at
        once, so a task that crashes without awaiting cannot starve the event loop). Returning
        ends the supervision. A crash of an `expected` type (a watch the peer closed) is
        logged at info level without a traceback; it is restarted all the same."""

        async def supervised() -> None:
            while True:
                retrying = AsyncRetrying(
                    retry=retry_if_exception_type(Exception),
                    wait=wait_exponential_jitter(
                        multiplier=initial_backoff, max=max_backoff, jitter=initial_backoff
                    ),
                    before_sleep=self._restart_logger(name, expected),
                )
                ended: _Ended = await retrying(
                    self._attempt, name, coro_fn, healthy_after, initial_backoff, expected
                )
                if ended is _Ended.RETURNED:
                    return
                await asyncio.sleep(initial_backoff)

        return self.spawn(name, supervised)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Let the tasks registered so far run; from now on a registration runs at once."""
        if self._stopped:
            raise BackgroundStopped(f"{self.owner}: started after shutdown began")
        self._go.set()

    @property
    def running(self) -> list[str]:
        """The names of the tasks that have not ended yet."""
        return sorted(task.get_name() for task in self._tasks if not task.done())

    async def stop(self, timeout: float = 10.0) -> None:
        """Cancel every task and wait (at most `timeout` seconds) until each has ended; a task
        that swallows its cancellation past that is logged by name and left behind."""
        self._stopped = True
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
            if not self._go.is_set():
                await self._go.wait()
            await coro_fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background.task_failed", owner=self.owner, task=name)

    async def _attempt(
        self,
        name: str,
        coro_fn: CoroFn,
        healthy_after: float,
        restart_in: float,
        expected: tuple[type[Exception], ...],
    ) -> _Ended:
        started = time.monotonic()
        try:
            await coro_fn()
        except Exception as exc:
            if time.monotonic() - started < healthy_after:
                raise  # a crash streak: tenacity backs off
            self._log_crash(name, exc, expected, crashes=1, restart_in=restart_in)
            return _Ended.CRASHED_HEALTHY
        return _Ended.RETURNED

    def _restart_logger(
        self, name: str, expected: tuple[type[Exception], ...]
    ) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            self._log_crash(name, exc, expected, state.attempt_number, state.upcoming_sleep)

        return before_sleep

    def _log_crash(
        self,
        name: str,
        exc: BaseException | None,
        expected: tuple[type[Exception], ...],
        crashes: int,
        restart_in: float,
    ) -> None:
        fields = {
            "owner": self.owner,
            "task": name,
            "crashes": crashes,
            "restart_in_seconds": round(restart_in, 3),
        }
        if isinstance(exc, expected):
            log.info("background.task_ended", error=repr(exc), **fields)
        else:
            log.error("background.task_crashed", exc_info=exc, **fields)
