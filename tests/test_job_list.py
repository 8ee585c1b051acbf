"""The job list reads summaries: the same jobs, labels, order and pages as the whole-job list,
never the spec, answered from the covering index; on SQLite and PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support.jobs import job_spec
from trainyard.jobrunner.app import MIGRATIONS
from trainyard.jobrunner.backends.local import LocalBackend
from trainyard.jobrunner.models import Job
from trainyard.jobrunner.runner import JobRunner, _summary_statement
from trainyard.runtime.db import Database
from trainyard.runtime.readcache import ReadCache

KIND = "trainyard.dev/kind"
PIPELINE = "trainyard.dev/pipeline"


@pytest.fixture
async def runner(
    tmp_path: Path, database: tuple[str, str | None]
) -> AsyncIterator[tuple[JobRunner, Database]]:
    url, schema = database
    db = Database("jobrunner", url, MIGRATIONS, schema)
    await db.start()
    runner = JobRunner(db.sessions, LocalBackend(tmp_path / "jobs", 1.0), tmp_path / "jobs", 1)
    await runner.close()  # no admission: the jobs stay PENDING and nothing runs
    try:
        yield runner, db
    finally:
        await db.close()


async def _submit(runner: JobRunner, name: str, owner: str, pipeline: str, pad: int = 0) -> None:
    spec = {
        "name": name,
        "command": [sys.executable, "-c", "pass"],
        # The spec's bulk in arguments: the environment has its own limits (1 MiB in all).
        "args": ["x" * 65536] * (pad // 65536) + ["x" * (pad % 65536)],
        "labels": {KIND: "training-job", PIPELINE: pipeline},
    }
    await runner.submit(job_spec(spec), owner)


async def test_summaries_page_like_the_whole_list(runner: tuple[JobRunner, Database]) -> None:
    jr, _ = runner
    for i in range(7):
        await _submit(jr, f"model-training-p-{i}", "bob", "a" if i % 2 else "b")
    await _submit(jr, "model-training-p-alice", "alice", "a")
    await jr.submit(
        job_spec({"name": "other-bob", "command": ["true"], "labels": {KIND: "x"}}), "bob"
    )
    for labels in ({KIND: "training-job"}, {KIND: "training-job", PIPELINE: "a"}, {}):
        for size in (0, 1, 3, 7, 10):
            pages: list[list[tuple[object, ...]]] = []
            for method in (jr.list, jr.summaries):
                seen: list[tuple[object, ...]] = []
                token = ""
                while True:
                    page, token = await method(labels, size, token, "model-training-", "bob")
                    assert size == 0 or len(page) <= size
                    seen += [(v.id, v.name, v.state, v.labels, v.created_at) for v in page]
                    seen.append(("token", bool(token)))
                    if not token:
                        break
                pages.append(seen)
            assert pages[0] == pages[1], (labels, size)
            jobs = [row for row in pages[1] if row[0] != "token"]
            want = 7 if len(labels) == 1 else (3 if labels else 7)
            assert len(jobs) == want, (labels, size)


async def test_the_prefix_is_literal(runner: tuple[JobRunner, Database]) -> None:
    jr, _ = runner
    await _submit(jr, "model-training-x-1", "bob", "x")
    # "_" is a LIKE wildcard: unescaped, "model_training" would match "model-training".
    assert (await jr.summaries({}, 0, "", "model_training", "bob"))[0] == []
    assert len((await jr.summaries({}, 0, "", "model-training-", "bob"))[0]) == 1


async def test_a_huge_spec_lists_the_same(runner: tuple[JobRunner, Database]) -> None:
    jr, _ = runner
    await _submit(jr, "model-training-small-1", "bob", "s", pad=10)
    await _submit(jr, "model-training-huge-1", "carol", "s", pad=2 * 1024 * 1024)
    (small,), _ = await jr.summaries({KIND: "training-job"}, 0, "", "", "bob")
    (huge,), _ = await jr.summaries({KIND: "training-job"}, 0, "", "", "carol")
    assert not hasattr(huge, "spec")
    assert (huge.state, huge.labels) == (small.state, small.labels)


def test_the_summary_statement_never_reads_the_spec() -> None:
    for shape in [(0, False, False, False, False), (2, True, True, True, True)]:
        stmt = _summary_statement(*shape)
        assert {c.name for c in stmt.selected_columns} == {
            "id",
            "name",
            "owner",
            "state",
            "reason",
            "created_at",
            "started_at",
            "finished_at",
            "key",
            "value",
        }
        sql = str(stmt.compile()).lower()
        assert "spec" not in sql and "handle" not in sql
    assert _summary_statement(1, True, True, False, True) is _summary_statement(
        1, True, True, False, True
    ), "built once per shape"


async def test_sqlite_answers_a_users_list_from_the_covering_index(tmp_path: Path) -> None:
    db = Database("jobrunner", f"sqlite+aiosqlite:///{tmp_path / 'j.db'}", MIGRATIONS)
    await db.start()
    try:
        stmt = _summary_statement(1, True, True, True, True)
        params = {
            "label_key_0": KIND,
            "label_value_0": "training-job",
            "name_pattern": "model-training-%",
            "owner": "bob",
            "cursor_created": "2026-01-01 00:00:00",
            "cursor_id": "z",
            "limit": 11,
        }
        compiled = stmt.compile(db.engine.sync_engine)
        values = compiled.construct_params(params)
        async with db.engine.connect() as conn:
            rows = (
                await conn.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {compiled}",
                    tuple(values[name] for name in compiled.positiontup or ()),
                )
            ).all()
        plan = " | ".join(str(row[-1]) for row in rows)
        assert "COVERING INDEX ix_jobrunner_jobs_owner_summary" in plan, plan
        async with db.engine.connect() as conn:
            names = (await conn.execute(text("PRAGMA index_list('jobrunner_jobs')"))).all()
        assert "ix_jobrunner_jobs_owner_summary" in {row[1] for row in names}
    finally:
        await db.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_write_is_seen_by_the_next_list(runner: tuple[JobRunner, Database]) -> None:
    jr, _ = runner
    labels = {KIND: "training-job"}
    assert (await jr.summaries(labels, 0, "", "", "bob"))[0] == []
    assert (await jr.summaries(labels, 0, "", "", "bob"))[0] == []  # now cached
    await _submit(jr, "model-training-w-1", "bob", "w")
    (job,), _ = await jr.summaries(labels, 0, "", "", "bob")
    assert job.state == "PENDING"
    await jr.cancel(job.id)
    (job,), _ = await jr.summaries(labels, 0, "", "", "bob")
    assert job.state == "CANCELLED"
    await jr.delete(job.id)
    assert (await jr.summaries(labels, 0, "", "", "bob"))[0] == []


async def test_a_foreign_write_is_seen_within_max_age(
    runner: tuple[JobRunner, Database],
) -> None:
    jr, db = runner
    clock = Clock()
    jr._summary_cache = ReadCache(clock=clock)
    await _submit(jr, "model-training-f-1", "bob", "f")
    (job,), _ = await jr.summaries({}, 0, "", "", "bob")
    async with db.sessions.begin() as session:  # a write this runner did not make
        row = await session.get(Job, job.id)
        assert row is not None
        row.state = "RUNNING"
    (cached,), _ = await jr.summaries({}, 0, "", "", "bob")
    assert cached.state == "PENDING"
    clock.now += jr._summary_cache.max_age
    (fresh,), _ = await jr.summaries({}, 0, "", "", "bob")
    assert fresh.state == "RUNNING"


def test_a_read_that_overlapped_a_write_is_not_kept() -> None:
    cache = ReadCache()
    generation = cache.generation  # a read starts
    cache.invalidate()  # a write ends meanwhile
    cache.put("k", generation, "maybe stale")
    assert cache.get("k") is None
    cache.put("k", cache.generation, "fresh")
    assert cache.get("k") == "fresh"


def test_the_summary_cache_is_bounded() -> None:
    cache = ReadCache(max_entries=2)
    for key in ("a", "b", "c"):
        cache.put(key, cache.generation, key)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, "b", "c")
