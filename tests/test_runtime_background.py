"""The background helper: supervised tasks restart after a crash, periodic tasks survive a
failing round, and stop() cancels and awaits everything, refusing work spawned afterwards."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from trainyard.runtime.background import Background, BackgroundStopped

#: A generous bound for something that should happen at once: a hang fails, never a slow run.
PATIENCE = 20.0


async def test_a_crashed_supervised_task_is_restarted_with_backoff() -> None:
    background = Background("test", started=True)
    calls = 0
    up = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError(f"crash {calls}")
        up.set()
        await asyncio.Event().wait()  # then runs for good

    with capture_logs() as logs:
        background.supervise("flaky", flaky, initial_backoff=0.01, max_backoff=0.02)
        await asyncio.wait_for(up.wait(), PATIENCE)
    assert calls == 3
    crashes = [e for e in logs if e["event"] == "background.task_crashed"]
    assert [e["crashes"] for e in crashes] == [1, 2]
    assert all(e["restart_in_seconds"] > 0 for e in crashes), "restarts wait for the backoff"
    assert background.running == ["flaky"]
    await background.stop()
    assert background.running == []


async def test_a_crash_after_a_healthy_run_resets_the_backoff() -> None:
    background = Background("test", started=True)
    runs = asyncio.Queue[int]()
    count = 0

    async def crashes_every_time() -> None:
        nonlocal count
        count += 1
        await runs.put(count)
        raise RuntimeError("boom")

    with capture_logs() as logs:
        # healthy_after=0: every run counts as healthy, so each crash starts a new streak.
        background.supervise("crashy", crashes_every_time, initial_backoff=0.01, healthy_after=0)
        for expected in (1, 2, 3):
            assert await asyncio.wait_for(runs.get(), PATIENCE) == expected
    await background.stop()
    crashes = [e for e in logs if e["event"] == "background.task_crashed"]
    assert len(crashes) >= 2
    assert all(e["crashes"] == 1 and e["restart_in_seconds"] == 0.01 for e in crashes)


async def test_an_expected_crash_is_restarted_and_logged_without_a_traceback() -> None:
    background = Background("test", started=True)
    calls = 0
    again = asyncio.Event()

    async def watch() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionResetError("the peer closed the watch")
        again.set()

    with capture_logs() as logs:
        background.supervise("watch", watch, initial_backoff=0.01, expected=(ConnectionError,))
        await asyncio.wait_for(again.wait(), PATIENCE)
    await background.stop()
    assert [e["event"] for e in logs] == ["background.task_ended"]
    assert "exc_info" not in logs[0] and "peer closed" in logs[0]["error"]


async def test_a_supervised_task_that_returns_is_not_restarted() -> None:
    background = Background("test", started=True)
    calls = 0

    async def once() -> None:
        nonlocal calls
        calls += 1

    task = background.supervise("once", once)
    await asyncio.wait_for(task, PATIENCE)
    assert calls == 1 and background.running == []


async def test_every_runs_repeatedly_and_survives_a_failing_round() -> None:
    background = Background("test", started=True)
    rounds = 0
    third = asyncio.Event()

    async def tick() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise ValueError("a bad round")
        if rounds == 3:
            third.set()

    with capture_logs() as logs:
        background.every("tick", 0.01, tick, jitter=0.5)
        await asyncio.wait_for(third.wait(), PATIENCE)
    await background.stop()
    failed = [e for e in logs if e["event"] == "background.round_failed"]
    assert len(failed) == 1 and failed[0]["task"] == "tick"
    assert failed[0]["exc_info"] is True


async def test_every_immediately_runs_the_first_round_before_any_interval() -> None:
    background = Background("test", started=True)
    ran = asyncio.Event()

    async def mark() -> None:
        ran.set()

    background.every("mark", 3600, mark, immediately=True)
    await asyncio.wait_for(ran.wait(), PATIENCE)
    await background.stop()


def test_every_refuses_a_non_positive_interval_or_a_jitter_out_of_range() -> None:
    background = Background("test")

    async def noop() -> None:
        return None

    with pytest.raises(ValueError, match="interval"):
        background.every("x", 0, noop)
    with pytest.raises(ValueError, match="jitter"):
        background.every("x", 1, noop, jitter=1.5)


async def test_stop_cancels_and_awaits_every_task_and_refuses_new_ones() -> None:
    background = Background("test", started=True)
    started = asyncio.Event()
    cleaned: list[str] = []

    async def forever(name: str) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            cleaned.append(name)

    tasks = [background.spawn(n, lambda n=n: forever(n)) for n in ("a", "b")]  # type: ignore[misc]
    periodic = background.every("p", 3600, lambda: forever("p"))
    await asyncio.wait_for(started.wait(), PATIENCE)
    await asyncio.wait_for(background.stop(), PATIENCE)
    assert sorted(cleaned) == ["a", "b"], "each task's cleanup ran before stop() returned"
    assert all(t.cancelled() for t in [*tasks, periodic])
    assert background.running == []
    with pytest.raises(BackgroundStopped):
        background.spawn("late", lambda: forever("late"))


async def test_tasks_registered_before_start_wait_for_it() -> None:
    background = Background("test")
    ran = asyncio.Event()

    async def mark() -> None:
        ran.set()

    background.spawn("early", mark)
    await asyncio.sleep(0)  # give a wrongly started task its chance to run
    assert not ran.is_set() and background.running == ["early"]
    background.start()
    await asyncio.wait_for(ran.wait(), PATIENCE)
    await background.stop()


async def test_a_failing_one_off_task_is_logged_not_lost() -> None:
    background = Background("test", started=True)

    async def fails() -> None:
        raise KeyError("gone")

    with capture_logs() as logs:
        task = background.spawn("fails", fails)
        await asyncio.wait_for(task, PATIENCE)
    assert [e["task"] for e in logs if e["event"] == "background.task_failed"] == ["fails"]
    await background.stop()
