"""Every service's migrations and the orchestrator's registry, on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from sqlalchemy import inspect

from trainyard.orchestrator.registry import ModelRegistry
from trainyard.runtime.db import Database
from trainyard.runtime.errors import AlreadyExists, NotFound, PermissionDenied
from trainyard.runtime.settings import SERVICE_NAMES

EXPECTED_TABLES = {
    "upload": {"upload_uploads", "upload_files"},
    "orchestrator": {
        "orchestrator_models",
        "orchestrator_model_messages",
        "orchestrator_token_feedback",
        "orchestrator_ndb_feedback",
    },
    "jobrunner": {"jobrunner_jobs"},
    "finetuning": {
        "finetuning_db_connections",
        "finetuning_golden_records",
        "finetuning_jobs",
        "finetuning_cursors",
    },
    "clustering": {"clustering_experiments"},
}


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        names: list[str] = await conn.run_sync(lambda c: inspect(c).get_table_names())
    return set(names)


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_migrations_run_and_are_idempotent(
    database: tuple[str, str | None], service: str
) -> None:
    url, schema = database
    app = importlib.import_module(f"trainyard.{service}.app")
    db = Database(service, url, app.MIGRATIONS, schema)
    try:
        await db.start()
        await db.start()  # a restart re-runs migrations harmlessly
        tables = await _tables(db)
        assert EXPECTED_TABLES[service] <= tables
        assert f"alembic_version_{service}" in tables
    finally:
        await db.close()


async def test_all_services_share_one_database(database: tuple[str, str | None]) -> None:
    url, schema = database
    dbs = []
    try:
        for service in SERVICE_NAMES:
            app = importlib.import_module(f"trainyard.{service}.app")
            db = Database(service, url, app.MIGRATIONS, schema)
            dbs.append(db)
            await db.start()
        tables = await _tables(dbs[0])
        for service in SERVICE_NAMES:
            assert EXPECTED_TABLES[service] <= tables
    finally:
        for db in dbs:
            await db.close()


async def test_registry(database: tuple[str, str | None]) -> None:
    url, schema = database
    from trainyard.orchestrator.app import MIGRATIONS

    db = Database("orchestrator", url, MIGRATIONS, schema)
    await db.start()
    try:
        registry = ModelRegistry(db.sessions)
        model = await registry.create(owner="alice", name="m1", type="ndb")
        status = await registry.train_status(model.id, "alice")
        assert (status.status, status.errors, status.warnings) == ("not_started", [], [])
        await registry.update_status(model.id, "complete", {"acc": 0.9})
        await registry.add_message(model.id, "warning", "w1")
        await registry.add_message(model.id, "error", "e1")
        await registry.add_message(model.id, "warning", "w2")
        status = await registry.train_status(model.id, "alice")
        assert status.status == "complete"
        assert status.warnings == ["w1", "w2"] and status.errors == ["e1"]
        with pytest.raises(PermissionDenied):
            await registry.train_status(model.id, "bob")
        with pytest.raises(NotFound):
            await registry.train_status("missing", "alice")
        with pytest.raises(AlreadyExists, match="already have a model named 'm1'"):
            await registry.create(owner="alice", name="m1", type="ndb")
        other = await registry.create(owner="bob", name="m1", type="ndb")
        assert other.id != model.id
    finally:
        await db.close()


def test_callback_field_rules_are_request_validators() -> None:
    """The callback field rules live at the edge (App.validators), every violation at once."""
    from trainyard.api.orchestrator.v1 import messages_pb2 as msgs
    from trainyard.orchestrator.validation import VALIDATORS

    def check(request: Any) -> list[str]:
        return [v.field for v in VALIDATORS[request.DESCRIPTOR.full_name](request)]

    assert check(msgs.UpdateTrainStatusRequest(status="exploded")) == ["status"]
    assert check(msgs.UpdateTrainStatusRequest(status="complete")) == []
    assert check(msgs.LogTrainMessageRequest(level="info", message=" ")) == ["level", "message"]
    assert check(msgs.LogTrainMessageRequest(level="error", message="x")) == []
