"""The job runner with the local backend: real processes, real files, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.jobs import follow_with_reconnects, gone, job_spec, lines, wait_state
from tests.support.wait import wait_for_pidfile
from trainyard.jobrunner.app import MIGRATIONS
from trainyard.jobrunner.backends.base import Workload
from trainyard.jobrunner.backends.local import LocalBackend
from trainyard.jobrunner.domain import JobState
from trainyard.jobrunner.runner import JobRunner
from trainyard.runtime.db import Database
from trainyard.runtime.errors import AlreadyExists, InvalidArgument, NotFound

PY = sys.executable


async def make_runner(
    tmp: Path, url: str | None = None, schema: str | None = None, max_concurrent: int = 4
) -> tuple[JobRunner, Database]:
    db = Database("jobrunner", url or f"sqlite+aiosqlite:///{tmp / 'jr.db'}", MIGRATIONS, schema)
    await db.start()
    runner = JobRunner(
        db.sessions, LocalBackend(tmp / "jobs", grace_seconds=1.0), tmp / "jobs", max_concurrent
    )
    await runner.start()
    return runner, db


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[JobRunner]:
    r, db = await make_runner(tmp_path)
    try:
        yield r
    finally:
        for view in (await r.list())[0]:
            if not view.done:
                await r.cancel(view.id)
        await r.close()
        await db.close()


def py(code: str, **extra: object) -> dict[str, object]:
    return {"command": ["python", "-c", code], **extra}


async def test_success_and_logs(runner: JobRunner) -> None:
    view = await runner.submit(
        job_spec(
            py("import sys\nprint('hello')\nprint('oops', file=sys.stderr)", env={"GREETING": "hi"})
        ),
        "alice",
    )
    assert view.state == "PENDING" or view.state == "RUNNING"
    done = await runner.wait(view.id, 30)
    assert (done.state, done.exit_code, done.attempts) == ("SUCCEEDED", 0, 1)
    assert done.started_at and done.finished_at and done.finished_at >= done.started_at
    recs = await lines(runner, view.id)
    assert sorted((r.stream, r.text) for r in recs) == [("e", "oops"), ("o", "hello")]
    assert [r.seq for r in recs] == [1, 2]


async def test_env_reaches_the_workload_and_secrets_do_not(runner: JobRunner) -> None:
    os.environ["TRAINYARD_AUTH_SECRET"] = "must-not-leak"
    try:
        view = await runner.submit(
            job_spec(
                py(
                    "import os\n"
                    "print(os.environ.get('GREETING'), os.environ.get('TRAINYARD_AUTH_SECRET'))",
                    env={"GREETING": "hi"},
                )
            ),
            "alice",
        )
        await runner.wait(view.id, 30)
    finally:
        del os.environ["TRAINYARD_AUTH_SECRET"]
    assert [r.text for r in await lines(runner, view.id)] == ["hi None"]


async def test_failure_exit_code_and_retries(runner: JobRunner) -> None:
    view = await runner.submit(
        job_spec(py("print('try')\nraise SystemExit(7)", retries=2)), "alice"
    )
    done = await runner.wait(view.id, 30)
    assert (done.state, done.reason, done.exit_code, done.attempts) == ("FAILED", "EXIT_CODE", 7, 3)
    assert "code 7" in done.message
    recs = await lines(runner, view.id)
    assert [(r.seq, r.attempt) for r in recs] == [(1, 1), (2, 2), (3, 3)]


async def test_retry_succeeds_on_second_attempt(runner: JobRunner, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    code = (
        f"import os,sys\np={str(marker)!r}\n"
        "if os.path.exists(p): sys.exit(0)\nopen(p,'w').close(); sys.exit(1)"
    )
    done = await runner.wait((await runner.submit(job_spec(py(code, retries=1)), "a")).id, 30)
    assert (done.state, done.attempts) == ("SUCCEEDED", 2)


async def test_deadline_exceeded_kills_the_process(runner: JobRunner) -> None:
    view = await runner.submit(
        job_spec(
            py("import time\nprint('start', flush=True)\ntime.sleep(60)", deadline="1s", retries=3)
        ),
        "alice",
    )
    done = await runner.wait(view.id, 30)
    assert (done.state, done.reason) == ("FAILED", "DEADLINE_EXCEEDED")
    assert done.attempts == 1, "a deadline is never retried"
    assert "deadline of 1s" in done.message


async def test_cancel_really_stops_the_process(runner: JobRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    view = await runner.submit(
        job_spec(
            py(
                f"import os,time\nopen({str(pidfile)!r},'w').write(str(os.getpid()))"
                "\ntime.sleep(60)"
            )
        ),
        "alice",
    )
    await wait_state(runner, view.id, "RUNNING")
    pid = await wait_for_pidfile(pidfile)
    assert psutil.pid_exists(pid)
    done = await runner.cancel(view.id, "no longer needed")
    assert (done.state, done.reason) == ("CANCELLED", "CANCELLED")
    assert gone(pid)
    assert (await runner.cancel(view.id)).state == "CANCELLED"  # idempotent


async def test_cancel_ignoring_sigterm_is_killed(runner: JobRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    view = await runner.submit(
        job_spec(
            py(
                "import os,signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                f"open({str(pidfile)!r},'w').write(str(os.getpid()))\ntime.sleep(60)"
            )
        ),
        "alice",
    )
    pid = await wait_for_pidfile(pidfile)
    done = await runner.cancel(view.id)
    assert done.state == "CANCELLED"
    assert gone(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is Linux-specific")
async def test_memory_limit_is_enforced_and_reported_as_oom(runner: JobRunner) -> None:
    view = await runner.submit(
        job_spec(
            py(
                "x = bytearray(512 * 1024 * 1024)\nprint('allocated')",
                resources={"memory_mb": "200"},
            )
        ),
        "alice",
    )
    done = await runner.wait(view.id, 30)
    assert (done.state, done.reason) == ("FAILED", "OOM_KILLED")
    assert "200 MiB" in done.message
    assert "allocated" not in [r.text for r in await lines(runner, view.id)]


async def test_admission_queue_is_fifo(tmp_path: Path) -> None:
    runner, db = await make_runner(tmp_path, max_concurrent=1)
    order = tmp_path / "order"
    try:
        views = [
            await runner.submit(
                job_spec(
                    py(f"import time\nopen({str(order)!r},'a').write('{i}\\n')\ntime.sleep(0.2)")
                ),
                "a",
            )
            for i in range(4)
        ]
        states = [(await runner.get(v.id)).state for v in views]
        assert states.count(JobState.RUNNING) <= 1 and states[1:].count(JobState.PENDING) >= 2
        for v in views:
            assert (await runner.wait(v.id, 30)).state == "SUCCEEDED"
        assert order.read_text().split() == ["0", "1", "2", "3"]
        starts = [(await runner.get(v.id)).started_at for v in views]
        assert all(starts)
        assert starts == sorted(s for s in starts if s is not None)
    finally:
        await runner.close()
        await db.close()


async def test_cancel_pending_job_never_starts(tmp_path: Path) -> None:
    runner, db = await make_runner(tmp_path, max_concurrent=1)
    try:
        first = await runner.submit(job_spec(py("import time\ntime.sleep(0.5)")), "a")
        second = await runner.submit(job_spec(py("print('should not run')")), "a")
        assert (await runner.get(second.id)).state == "PENDING"
        cancelled = await runner.cancel(second.id)
        assert cancelled.state == "CANCELLED" and cancelled.attempts == 0
        await runner.wait(first.id, 30)
        assert await lines(runner, second.id) == []
    finally:
        await runner.close()
        await db.close()


async def test_idempotent_submit(runner: JobRunner) -> None:
    spec = py("print(1)", labels={"model": "m1"})
    a = await runner.submit(job_spec(spec), "alice", idempotency_key="key-1")
    b = await runner.submit(job_spec(dict(spec)), "alice", idempotency_key="key-1")
    assert a.id == b.id
    with pytest.raises(AlreadyExists, match="different job spec"):
        await runner.submit(job_spec(py("print(2)")), "alice", idempotency_key="key-1")
    await runner.wait(a.id, 30)


async def test_bad_specs_list_every_problem(runner: JobRunner) -> None:
    with pytest.raises(InvalidArgument) as err:
        await runner.submit(
            job_spec({"name": "Bad_Name", "retries": -1, "resources": {"cores": -2}}), "a"
        )
    fields = {v.field for v in err.value.violations}
    assert fields == {"spec.name", "spec.command", "spec.retries", "spec.resources.cores"}
    with pytest.raises(NotFound):
        await runner.get("nope")


async def test_list_filters_by_labels_newest_first_with_cursor(runner: JobRunner) -> None:
    ids = []
    for i in range(5):
        view = await runner.submit(
            job_spec(py("pass", labels={"model": "m1" if i % 2 == 0 else "m2", "kind": "ndb"})), "a"
        )
        ids.append(view.id)
    page, token = await runner.list({"model": "m1"}, page_size=2)
    assert [v.id for v in page] == [ids[4], ids[2]]
    page2, token2 = await runner.list({"model": "m1"}, page_size=2, page_token=token)
    assert [v.id for v in page2] == [ids[0]] and token2 == ""
    everything, _ = await runner.list({"kind": "ndb"})
    assert [v.id for v in everything] == ids[::-1]
    for job_id in ids:
        await runner.wait(job_id, 30)


async def test_watch_sees_every_transition(runner: JobRunner) -> None:
    events: list[tuple[str, str]] = []
    # Subscribed when watch() returns: the submits below happen before anything reads it.
    async with runner.watch({"model": "w"}) as stream:
        other = await runner.submit(job_spec(py("pass", labels={"model": "other"})), "a")
        view = await runner.submit(job_spec(py("print(1)", labels={"model": "w"})), "a")
        async for event in stream:
            events.append((event.previous_state, event.job.state))
            if event.job.done:
                break
    assert events == [("", "PENDING"), ("PENDING", "RUNNING"), ("RUNNING", "SUCCEEDED")]
    await runner.wait(other.id, 30)
    assert view.id


async def test_follow_with_reconnect_across_100k_lines(runner: JobRunner) -> None:
    total = 100_000
    view = await runner.submit(
        job_spec(
            py(
                "import sys\nw = sys.stdout.write\n"
                f"for i in range(1, {total + 1}):\n"
                "    w(f'line {i}\\n') if i % 7 else sys.stderr.write(f'line {i}\\n')\n"
            )
        ),
        "a",
    )
    records = await follow_with_reconnects(runner, view.id, drop_every=9_973)
    assert len(records) // 9_973 >= 10, "the stream was dropped at least ten times"
    assert [r.seq for r in records] == list(range(1, total + 1))
    assert sorted(r.text for r in records) == sorted(f"line {i}" for i in range(1, total + 1))


async def test_data_layer_on_both_databases(
    tmp_path: Path, database: tuple[str, str | None]
) -> None:
    url, schema = database
    runner, db = await make_runner(tmp_path, url, schema)
    try:
        view = await runner.submit(
            job_spec(py("print('pg')", labels={"owner": "alice"})), "alice", idempotency_key="k"
        )
        done = await runner.wait(view.id, 30)
        assert done.state == "SUCCEEDED"
        page, _ = await runner.list({"owner": "alice"}, page_size=1)
        assert [v.id for v in page] == [view.id]
        await runner.delete(view.id)
        with pytest.raises(NotFound):
            await runner.get(view.id)
        assert not (tmp_path / "jobs" / view.id).exists()
    finally:
        await runner.close()
        await db.close()


async def test_cancel_racing_the_launch_never_lets_the_workload_run(tmp_path: Path) -> None:
    """Cancel lands between admission and the shim's start (no handle yet): the backend must
    not run the attempt, and one already spawning is stopped right away."""
    backend = LocalBackend(tmp_path / "jobs", grace_seconds=1.0)
    marker = tmp_path / "ran"
    workload = Workload(
        job_id="j1",
        name="j1",
        image="",
        args=[],
        command=["python", "-c", f"import time\ntime.sleep(2)\nopen({str(marker)!r}, 'w')"],
        env={},
        cores=0,
        memory_mb=0,
        deadline_seconds=None,
        retries=3,
        labels={},
        log_path=tmp_path / "jobs" / "j1" / "log",
    )
    started: list[int] = []

    async def on_running(handle: dict[str, object], attempt: int) -> None:
        started.append(attempt)
        await backend.cancel(workload, None)  # lands while the attempt is being launched

    first = await backend.run(workload, None, on_running)
    assert (first.state, started) == ("CANCELLED", [1])
    assert not marker.exists()
    again = await backend.run(workload, None, on_running)
    assert (again.state, again.message) == ("CANCELLED", "cancelled before it started")
    assert started == [1], "a cancelled job never starts another attempt"


async def test_a_watcher_that_falls_behind_is_told_so(
    runner: JobRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainyard.jobrunner import runner as runner_module
    from trainyard.runtime.errors import Unavailable

    monkeypatch.setattr(runner_module, "WATCH_BUFFER", 3)
    stream = runner.watch()  # subscribed, not reading yet
    views = [await runner.submit(job_spec(py("pass")), "a") for _ in range(3)]
    assert (await stream.__anext__()).job.id == views[0].id
    with pytest.raises(Unavailable, match="fell more than 3 events behind"):
        async for _ in stream:
            pass
    for view in views:
        await runner.wait(view.id, 30)


class _BrokenBackend(LocalBackend):
    """A backend whose run fails as a real one can: with server details in the exception."""

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("HTTP 500 from https://10.0.0.1:6443 (Set-Cookie: session=s3cr3t)")


async def test_a_backend_failure_tells_the_owner_a_reference_not_the_details(
    tmp_path: Path,
) -> None:
    db = Database("jobrunner", f"sqlite+aiosqlite:///{tmp_path / 'jr.db'}", MIGRATIONS)
    await db.start()
    runner = JobRunner(db.sessions, _BrokenBackend(tmp_path / "jobs", 1.0), tmp_path / "jobs", 1)
    await runner.start()
    try:
        view = await runner.submit(job_spec({"command": ["true"]}), "alice")
        done = await runner.wait(view.id, 30)
        assert (done.state, done.reason) == ("FAILED", "LOST")
        assert "s3cr3t" not in done.message and "10.0.0.1" not in done.message
        assert "correlation id" in done.message
    finally:
        await runner.close()
        await db.close()
