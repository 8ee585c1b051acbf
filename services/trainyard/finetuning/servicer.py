"""gRPC servicer of the finetuning service: proto <-> store / Finetunings, and the checks of
connections and golden records on their way in."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from trainyard.api.finetuning.v1 import messages_pb2 as msgs
from trainyard.api.finetuning.v1 import service_pb2_grpc as svc
from trainyard.finetuning.connections import UriCipher, check_uri
from trainyard.finetuning.settings import FinetuningSettings
from trainyard.finetuning.store import (
    ConnectionView,
    FinetuningStore,
    GoldenRecordView,
    NewGoldenRecord,
)
from trainyard.finetuning.work import (
    Finetunings,
    check_metadata,
    evaluation_message,
    finetuning_json,
    finetuning_message,
    iso,
)
from trainyard.runtime.auth import current_identity, current_user
from trainyard.runtime.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from trainyard.runtime.http import json_body
from trainyard.trainers.finetuning import (
    DatabaseUnreachable,
    check_read_only,
    describe_database,
    mask_password,
)

Context = grpc.aio.ServicerContext[Any, Any]
MAX_ALIAS_CHARS = 255
MAX_URI_CHARS = 4096
MAX_SCHEMAS = 64
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
#: Finetunings refreshed from the provider at once while listing.
REFRESH_CONCURRENCY = 8


def _invalid(field: str, message: str, reason: str = "INVALID_ARGUMENT") -> InvalidArgument:
    return InvalidArgument(message, reason=reason, violations=[FieldViolation(field, message)])


def connection_message(view: ConnectionView) -> msgs.DatabaseConnection:
    return msgs.DatabaseConnection(
        id=view.id,
        alias=view.alias,
        dialect=view.dialect,
        connection_uri=view.uri_masked,
        schemas=view.schemas,
        metadata=view.meta or {},
        created_at=iso(view.created_at),
    )


def connection_json(view: ConnectionView) -> dict[str, Any]:
    """As Envoy prints a DatabaseConnection (GET, POST): the list answers the same objects."""
    return {
        "id": view.id,
        "alias": view.alias,
        "dialect": view.dialect,
        "connection_uri": view.uri_masked,
        "schemas": view.schemas,
        "metadata": view.meta or {},
        "created_at": iso(view.created_at),
    }


def record_message(view: GoldenRecordView) -> msgs.GoldenRecord:
    return msgs.GoldenRecord(
        id=view.id,
        db_connection_id=view.db_connection_id,
        question=view.question,
        sql_query=view.sql_query,
        metadata=view.meta or {},
        created_at=iso(view.created_at),
    )


def record_json(view: GoldenRecordView) -> dict[str, Any]:
    return {
        "id": view.id,
        "db_connection_id": view.db_connection_id,
        "question": view.question,
        "sql_query": view.sql_query,
        "metadata": view.meta,
        "created_at": iso(view.created_at),
    }


def _check_records(
    inputs: Sequence[msgs.GoldenRecordInput],
    dialects: dict[str, str],
    settings: FinetuningSettings,
) -> None:
    """Every record's fields and SQL (in its connection's dialect); the first problem raises."""
    for index, item in enumerate(inputs):
        where = f"golden record {index}"
        field = f"golden_records[{index}]"
        if not item.question.strip():
            raise _invalid(f"{field}.question", f"{where}: the question is empty")
        if len(item.question) > settings.max_question_chars:
            raise _invalid(
                f"{field}.question",
                f"{where}: the question is longer than {settings.max_question_chars} characters",
            )
        if len(item.sql_query) > settings.max_sql_chars:
            raise _invalid(
                f"{field}.sql_query",
                f"{where}: sql_query is longer than {settings.max_sql_chars} characters",
            )
        try:
            problem = check_read_only(item.sql_query, dialects[item.db_connection_id])
        except RecursionError:
            problem = "does not parse: it is nested too deeply"
        if problem is not None:
            raise _invalid(
                f"{field}.sql_query", f"{where}: sql_query {problem}", "INVALID_GOLDEN_SQL"
            )
        check_metadata(item.metadata, f"{field}.metadata")


class FinetuningServicer(svc.FinetuningServiceServicer):
    def __init__(
        self,
        store: FinetuningStore,
        finetunings: Finetunings,
        cipher: UriCipher,
        settings: FinetuningSettings,
        *,
        databases_root: Path,
        suite_databases: Sequence[str],
    ) -> None:
        self._store = store
        self._finetunings = finetunings
        self._cipher = cipher
        self._settings = settings
        self._databases_root = databases_root
        self._suite_databases = list(suite_databases)

    # ---- finetunings -----------------------------------------------------------------------

    @staticmethod
    def _view(view: Any) -> msgs.FinetuningView:
        return msgs.FinetuningView(
            finetuning=finetuning_message(view), http_body=json_body(finetuning_json(view))
        )

    async def CreateFinetuning(
        self, request: msgs.CreateFinetuningRequest, context: Context
    ) -> msgs.FinetuningView:
        return self._view(await self._finetunings.create(current_user(), request))

    async def GetFinetuning(
        self, request: msgs.GetFinetuningRequest, context: Context
    ) -> msgs.FinetuningView:
        return self._view(await self._finetunings.get(current_user(), request.id))

    async def ListFinetunings(
        self, request: msgs.ListFinetuningsRequest, context: Context
    ) -> msgs.ListFinetuningsResponse:
        user = current_user()
        if request.db_connection_id:
            await self._store.connection(user, request.db_connection_id)
        views = await self._store.finetunings(user, request.db_connection_id or None)
        gate = asyncio.Semaphore(REFRESH_CONCURRENCY)

        async def refresh(view: Any) -> Any:
            async with gate:
                return await self._finetunings.refreshed(view)

        views = list(await asyncio.gather(*(refresh(v) for v in views)))
        return msgs.ListFinetuningsResponse(
            finetunings=[finetuning_message(v) for v in views],
            http_body=json_body([finetuning_json(v) for v in views]),
        )

    async def CancelFinetuning(
        self, request: msgs.CancelFinetuningRequest, context: Context
    ) -> msgs.FinetuningView:
        return self._view(await self._finetunings.cancel(current_user(), request.id))

    async def DeleteFinetuning(
        self, request: msgs.DeleteFinetuningRequest, context: Context
    ) -> msgs.DeleteFinetuningResponse:
        await self._finetunings.delete(current_user(), request.id)
        return msgs.DeleteFinetuningResponse(id=request.id)

    async def GetFinetuningEvaluation(
        self, request: msgs.GetFinetuningEvaluationRequest, context: Context
    ) -> msgs.FinetuningEvaluation:
        view = await self._finetunings.get(current_user(), request.id)
        return evaluation_message(view)

    # ---- database connections --------------------------------------------------------------

    async def CreateDatabaseConnection(
        self, request: msgs.CreateDatabaseConnectionRequest, context: Context
    ) -> msgs.DatabaseConnection:
        user = current_user()
        alias = request.alias.strip()
        if not alias:
            raise _invalid("alias", "alias is required")
        if len(alias) > MAX_ALIAS_CHARS:
            raise _invalid("alias", f"alias is at most {MAX_ALIAS_CHARS} characters")
        uri = request.connection_uri.strip()
        if not uri:
            raise _invalid("connection_uri", "connection_uri is required")
        if len(uri) > MAX_URI_CHARS:
            raise _invalid(
                "connection_uri", f"connection_uri is at most {MAX_URI_CHARS} characters"
            )
        schemas = [s.strip() for s in request.schemas if s.strip()]
        if len(schemas) > MAX_SCHEMAS or any(len(s) > MAX_ALIAS_CHARS for s in schemas):
            raise _invalid("schemas", f"at most {MAX_SCHEMAS} schemas of at most 255 characters")
        meta = check_metadata(request.metadata)
        url = await asyncio.to_thread(  # it resolves host names
            check_uri,
            uri,
            databases_root=self._databases_root,
            suite_databases=self._suite_databases,
            allowed_hosts=self._settings.database_hosts,
        )
        try:
            schema = await asyncio.to_thread(
                describe_database, uri, schemas or None, timeout_seconds=10.0, sample_rows=0
            )
        except DatabaseUnreachable as exc:
            message = f"cannot read the database: {exc}"
            raise InvalidArgument(
                message,
                reason="DATABASE_UNREACHABLE",
                violations=[FieldViolation("connection_uri", message)],
            ) from exc
        view = await self._store.create_connection(
            connection_id=str(uuid.uuid4()),
            owner=user,
            alias=alias,
            dialect=schema.dialect,
            uri_encrypted=self._cipher.encrypt(uri),
            uri_masked=mask_password(url.render_as_string(hide_password=False)),
            schemas=schemas,
            meta=meta,
        )
        return connection_message(view)

    async def GetDatabaseConnection(
        self, request: msgs.GetDatabaseConnectionRequest, context: Context
    ) -> msgs.DatabaseConnection:
        return connection_message(await self._store.connection(current_user(), request.id))

    async def ListDatabaseConnections(
        self, request: msgs.ListDatabaseConnectionsRequest, context: Context
    ) -> msgs.ListDatabaseConnectionsResponse:
        views = await self._store.connections(current_user())
        return msgs.ListDatabaseConnectionsResponse(
            database_connections=[connection_message(v) for v in views],
            http_body=json_body([connection_json(v) for v in views]),
        )

    async def DeleteDatabaseConnection(
        self, request: msgs.DeleteDatabaseConnectionRequest, context: Context
    ) -> msgs.DeleteDatabaseConnectionResponse:
        await self._store.delete_connection(current_user(), request.id)
        return msgs.DeleteDatabaseConnectionResponse(id=request.id)

    # ---- golden records --------------------------------------------------------------------

    async def CreateGoldenRecords(
        self, request: msgs.CreateGoldenRecordsRequest, context: Context
    ) -> msgs.CreateGoldenRecordsResponse:
        user = current_user()
        inputs = list(request.golden_records)
        if not inputs:
            raise _invalid("golden_records", "the body must be a non-empty JSON list of records")
        limit = self._settings.max_golden_records_per_request
        if len(inputs) > limit:
            raise _invalid(
                "golden_records", f"at most {limit} golden records per request, got {len(inputs)}"
            )
        dialects: dict[str, str] = {}
        for index, item in enumerate(inputs):
            connection_id = item.db_connection_id.strip()
            if not connection_id:
                raise _invalid(
                    f"golden_records[{index}].db_connection_id",
                    f"golden record {index}: db_connection_id is required",
                )
            if connection_id not in dialects:
                try:
                    dialects[connection_id] = (
                        await self._store.connection(user, connection_id)
                    ).dialect
                except NotFound as exc:
                    raise NotFound(
                        "Database connection not found",
                        reason="DB_CONNECTION_NOT_FOUND",
                        metadata={"golden_record_index": str(index)},
                    ) from exc
        await asyncio.to_thread(_check_records, inputs, dialects, self._settings)
        created = await self._store.add_golden_records(
            user,
            [
                (
                    str(uuid.uuid4()),
                    NewGoldenRecord(
                        db_connection_id=item.db_connection_id.strip(),
                        question=item.question.strip(),
                        sql_query=item.sql_query.strip(),
                        meta=dict(item.metadata) or None,
                    ),
                )
                for item in inputs
            ],
        )
        return msgs.CreateGoldenRecordsResponse(
            golden_records=[record_message(v) for v in created],
            http_body=json_body([record_json(v) for v in created]),
        )

    async def ListGoldenRecords(
        self, request: msgs.ListGoldenRecordsRequest, context: Context
    ) -> msgs.ListGoldenRecordsResponse:
        user = current_user()
        if request.page < 0:
            raise _invalid("page", "page is 1-based: 1 or more")
        if not 0 <= request.limit <= MAX_PAGE_SIZE:
            raise _invalid("limit", f"limit must be from 1 to {MAX_PAGE_SIZE}")
        limit = request.limit or DEFAULT_PAGE_SIZE
        page = request.page or 1
        if request.db_connection_id:
            await self._store.connection(user, request.db_connection_id)
        views = await self._store.golden_records(
            user,
            connection_id=request.db_connection_id or None,
            offset=(page - 1) * limit,
            limit=limit,
        )
        return msgs.ListGoldenRecordsResponse(
            golden_records=[record_message(v) for v in views],
            http_body=json_body([record_json(v) for v in views]),
        )

    async def DeleteGoldenRecord(
        self, request: msgs.DeleteGoldenRecordRequest, context: Context
    ) -> msgs.DeleteGoldenRecordResponse:
        await self._store.delete_golden_record(current_user(), request.id)
        return msgs.DeleteGoldenRecordResponse(id=request.id)

    # ---- the workload's calls (job token) --------------------------------------------------

    @staticmethod
    def _job() -> tuple[str, str | None]:
        ident = current_identity()
        if ident.kind != "job" or not ident.model_id:
            raise PermissionDenied(
                "this job token names no finetuning", reason="JOB_TOKEN_REQUIRED"
            )
        return ident.model_id, ident.job

    async def GetFinetuningWork(
        self, request: msgs.GetFinetuningWorkRequest, context: Context
    ) -> msgs.GetFinetuningWorkResponse:
        finetuning_id, job = self._job()
        config = await self._finetunings.work(finetuning_id, job)
        return msgs.GetFinetuningWorkResponse(config_json=json.dumps(config))

    async def ReportFinetuningProgress(
        self, request: msgs.ReportFinetuningProgressRequest, context: Context
    ) -> msgs.ReportFinetuningProgressResponse:
        finetuning_id, job = self._job()
        await self._finetunings.report(finetuning_id, job, request)
        return msgs.ReportFinetuningProgressResponse()
