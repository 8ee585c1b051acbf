"""The job domain as stored: states and reasons read back typed (an unknown one does not break
reads), and specs written by an older version (proto-JSON) migrated to the domain form."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.jobs import job_spec
from trainyard.jobrunner.app import MIGRATIONS
from trainyard.jobrunner.backends.local import LocalBackend
from trainyard.jobrunner.domain import JobReason, JobSpec, JobState, Resources
from trainyard.jobrunner.runner import JobRunner
from trainyard.runtime.db import Database, migrate
from trainyard.runtime.errors import AlreadyExists

VERSION_TABLE = "alembic_version_jobrunner"

# The jobs table as a plain table, so tests can write what no version of the runner would.
jobs = sa.table(
    "jobrunner_jobs",
    sa.column("id", sa.String(36)),
    sa.column("name", sa.String(63)),
    sa.column("owner", sa.String(255)),
    sa.column("idempotency_key", sa.String(255)),
    sa.column("spec_hash", sa.String(64)),
    sa.column("spec", sa.JSON()),
    sa.column("state", sa.String(16)),
    sa.column("reason", sa.String(32)),
    sa.column("message", sa.Text()),
    sa.column("attempts", sa.Integer()),
    sa.column("backend", sa.String(16)),
    sa.column("cancel_requested", sa.Boolean()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


@pytest.fixture
async def db(database: tuple[str, str | None]) -> AsyncIterator[Database]:
    url, schema = database
    database_ = Database("jobrunner", url, MIGRATIONS, schema)
    try:
        yield database_
    finally:
        await database_.close()


def make_runner(db: Database, tmp_path: Path) -> JobRunner:
    return JobRunner(db.sessions, LocalBackend(tmp_path / "jobs", grace_seconds=1.0), tmp_path, 2)


async def test_a_state_this_version_does_not_know_reads_as_failed(
    db: Database, tmp_path: Path
) -> None:
    await db.start()
    runner = make_runner(db, tmp_path)
    await runner.start()
    try:
        view = await runner.submit(job_spec({"command": ["true"], "labels": {"k": "v"}}), "a")
        done = await runner.wait(view.id, 30)
        assert (done.state, done.reason) == (JobState.SUCCEEDED, JobReason.NONE)
        async with db.engine.begin() as conn:  # as a newer version (or a hand edit) might
            await conn.execute(
                jobs.update().where(jobs.c.id == view.id).values(state="SUSPENDED", reason="NEW")
            )
        again = await runner.get(view.id)
        assert (again.state, again.reason) == (JobState.FAILED, JobReason.NONE)
        listed, _ = await runner.summaries({"k": "v"})
        assert [(s.id, s.state) for s in listed] == [(view.id, JobState.FAILED)]
    finally:
        await runner.close()
    restarted = make_runner(db, tmp_path)
    await restarted.start()  # reconcile skips it rather than failing on it
    try:
        assert (await restarted.get(view.id)).state == JobState.FAILED
    finally:
        await restarted.close()


async def test_proto_json_specs_of_older_versions_are_migrated(
    db: Database, tmp_path: Path
) -> None:
    await migrate(db.engine, MIGRATIONS, VERSION_TABLE, "0002")
    legacy = {  # as 0.x stored a SubmitJob spec: proto-JSON, defaults left out
        "command": ["python", "-c", "print(1)"],
        "deadline": "90.500s",
        "resources": {"cores": 0.5, "memory_mb": "512"},
        "retries": 2,
        "labels": {"model": "m"},
    }
    async with db.engine.begin() as conn:
        await conn.execute(
            jobs.insert().values(
                id="00000000-0000-4000-8000-000000000001",
                name="legacy",
                owner="alice",
                idempotency_key="key-1",
                spec_hash="not-the-new-hash",
                spec=legacy,
                state="SUCCEEDED",
                reason="",
                message="exited 0",
                attempts=1,
                backend="local",
                cancel_requested=False,
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
    await db.start()  # the rest of the migrations, 0003 included
    runner = make_runner(db, tmp_path)
    await runner.start()
    try:
        view = await runner.get("00000000-0000-4000-8000-000000000001")
        assert view.spec == JobSpec(
            command=("python", "-c", "print(1)"),
            deadline_seconds=90.5,
            resources=Resources(cores=0.5, memory_mb=512),
            retries=2,
            labels={"model": "m"},
        )
        # 0004 gives jobs that predate revisions revision 1, so a watch since 0 replays them.
        assert (view.revision, await runner.revision()) == (1, 1)
        # The migrated hash is the one the runner computes: the same spec under the same key is
        # the same job, a different one is refused.
        same = await runner.submit(job_spec(legacy), "alice", idempotency_key="key-1")
        assert same.id == view.id
        with pytest.raises(AlreadyExists, match="different job spec"):
            await runner.submit(
                job_spec({**legacy, "retries": 3}), "alice", idempotency_key="key-1"
            )
    finally:
        await runner.close()
