"""The one way tests wait: poll a predicate until it holds, with a deadline and a message that
says what never happened. `wait_until` for async tests, `wait_until_sync` (alias `eventually`)
for sync ones. Predicates return the value they found (`cond and value` reads as the value), so
a wait also fetches what it waited for."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar, overload

T = TypeVar("T")

#: What a predicate may answer: a value (truthy when the wait is over), or False / None.
Answer: TypeAlias = T | Literal[False] | None

INTERVAL = 0.02


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"not true after {timeout}s: {what} (last: {last!r})")


@overload
async def wait_until(
    predicate: Callable[[], Awaitable[Answer[T]]],
    timeout: float = ...,
    what: str = ...,
    *,
    interval: float = ...,
) -> T: ...


@overload
async def wait_until(
    predicate: Callable[[], Answer[T]],
    timeout: float = ...,
    what: str = ...,
    *,
    interval: float = ...,
) -> T: ...


async def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "",
    *,
    interval: float = INTERVAL,
) -> Any:
    """Await (or call) `predicate` until it answers something truthy, and return that; raise
    AssertionError naming `what` at the deadline. An AssertionError from the predicate counts as
    not yet (and is shown as the last answer)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            answer = predicate()
            if inspect.isawaitable(answer):
                answer = await answer
            if answer:
                return answer
            last = answer
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, last)
        await asyncio.sleep(interval)


def wait_until_sync(
    predicate: Callable[[], Answer[T]],
    timeout: float = 10.0,
    what: str = "",
    *,
    interval: float = INTERVAL,
) -> T:
    """The sync twin of `wait_until`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            answer = predicate()
            if answer:
                return answer
            last = answer
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)


def eventually(
    predicate: Callable[[], Answer[T]],
    *,
    timeout: float = 10.0,
    interval: float = INTERVAL,
    message: str = "",
) -> T:
    """`wait_until_sync` with the keyword names the older tests use."""
    return wait_until_sync(predicate, timeout, message, interval=interval)


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    # A writer may be caught between creating the file and writing it.
    return int(text) if text.strip().isdigit() else None


async def wait_for_pidfile(path: Path, timeout: float = 20.0) -> int:
    """The pid a workload wrote to `path` (once it has written all of it)."""
    return await wait_until(lambda: _pid_in(path), timeout, f"a pid in {path}")


__all__ = ["eventually", "wait_for_pidfile", "wait_until", "wait_until_sync"]
