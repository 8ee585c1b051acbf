"""Every documented REST row reaches the right RPC through the real Envoy, with its path, query
and body fields bound; auth is enforced per the contract's policy."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from google.protobuf import json_format

from tests.support.harness import Harness
from tests.support.recording import Recorder
from trainyard.gateway.descriptors import HttpRoute, http_routes
from trainyard.runtime.http import http_statuses_of

ORCH = "trainyard.api.orchestrator.v1.TrainService"
MODELS = "trainyard.api.orchestrator.v1.ModelService"
UPL = "trainyard.api.upload.v1.UploadService"
TJ = "trainyard.api.jobrunner.v1.TrainingJobsService"
FT = "trainyard.api.finetuning.v1.FinetuningService"
CL = "trainyard.api.clustering.v1.ClusteringTrainingService"
AUTH = "trainyard.api.auth.v1.AuthService"

NDB_BODY = {
    "model_name": "my-model",
    "base_model_id": None,
    "model_options": {"in_memory": False, "advanced_search": True},
    "data": {
        "unsupervised_files": [{"path": "/path/to/file.pdf", "location": "s3"}],
        "supervised_files": [],
        "deletions": ["doc_id_1"],
    },
    "job_options": {"allocation_cores": 4, "allocation_memory": 2000},
}
TOKEN_BODY = {
    "model_name": "tok",
    "model_options": {
        "target_labels": ["PHONE", "EMAIL"],
        "source_column": "source",
        "target_column": "target",
        "default_tag": "O",
    },
    "data": {
        "supervised_files": [{"path": "/p/train.csv", "location": "s3"}],
        "test_files": [{"path": "/p/test.csv", "location": "s3"}],
    },
    "train_options": {
        "epochs": 5,
        "learning_rate": 0.0001,
        "batch_size": 1000,
        "max_in_memory_batches": 20,
        "test_split": 0.2,
    },
    "job_options": {"allocation_cores": 4, "allocation_memory": 2000},
}
TEXT_BODY = {
    "model_name": "txt",
    "doc_classification": False,
    "model_options": {
        "text_column": "source",
        "label_column": "target",
        "n_target_classes": 10,
        "delimiter": ",",
    },
    "data": {"supervised_files": [{"path": "/p/train.csv", "location": "local"}]},
}
DATAGEN_BODY = {
    "model_name": "gen",
    "task_prompt": "description of task",
    "llm_provider": "openai",
    "test_size": 0.1,
    "token_options": {
        "tags": [
            {
                "name": "PHONE",
                "examples": ["my phone number is 123-456-7890"],
                "description": "a phone number",
                "status": "uninserted",
            }
        ],
        "num_sentences_to_generate": 2000,
        "num_samples_per_tag": 10,
        "samples": [
            {"tokens": ["my", "number", "is", "123-456-7890"], "tags": ["O", "O", "O", "PHONE"]}
        ],
        "templates_per_sample": 4,
    },
}
RETRAIN_TOKEN_BODY = {
    "model_name": "m",
    "base_model_id": "base",
    "llm_provider": "openai",
    "test_size": 0.1,
    "train_options": {"epochs": 5},
}
FT_BODY = {
    "db_connection_id": "conn-1",
    "alias": "my_model",
    "base_llm": {
        "model_provider": "openai",
        "model_name": "gpt-3.5-turbo-1106",
        "model_parameters": {"n_epochs": 1},
    },
    "golden_records": ["g1", "g2"],
    "metadata": {"team": "data"},
}


@dataclass
class Row:
    method: str
    path: str
    rpc: str
    expect: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    auth: str = "user"  # user | job | none

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


ROWS = [
    Row(
        "POST",
        "/api/v2/train/ndb",
        f"{ORCH}.TrainNdb",
        NDB_BODY | {"base_model_id": None},
        NDB_BODY,
    ),
    Row(
        "POST",
        "/api/v2/train/ndb-retrain",
        f"{ORCH}.RetrainNdb",
        {"model_name": "m", "base_model_id": "base", "job_options": {"allocation_cores": 2}},
        {"model_name": "m", "base_model_id": "base", "job_options": {"allocation_cores": 2}},
    ),
    Row("POST", "/api/v2/train/nlp-token", f"{ORCH}.TrainNlpToken", TOKEN_BODY, TOKEN_BODY),
    Row("POST", "/api/v2/train/nlp-text", f"{ORCH}.TrainNlpText", TEXT_BODY, TEXT_BODY),
    Row("POST", "/api/v2/train/nlp-datagen", f"{ORCH}.TrainNlpDatagen", DATAGEN_BODY, DATAGEN_BODY),
    Row(
        "POST",
        "/api/v2/train/nlp-token-retrain",
        f"{ORCH}.RetrainNlpToken",
        RETRAIN_TOKEN_BODY,
        RETRAIN_TOKEN_BODY,
    ),
    Row("GET", "/api/v2/train/m-123/status", f"{ORCH}.GetTrainStatus", {"model_id": "m-123"}),
    Row("GET", "/api/v2/train/m-123/logs", f"{ORCH}.GetTrainLogs", {"model_id": "m-123"}),
    Row(
        "GET",
        "/api/v2/train/m-123/logs/follow?from_sequence=7",
        f"{ORCH}.FollowTrainLogs",
        {"model_id": "m-123", "from_sequence": "7"},
    ),
    Row("GET", "/api/v2/train/m-123/report", f"{ORCH}.GetTrainReport", {"model_id": "m-123"}),
    Row("POST", "/api/v2/train/m-123/stop", f"{ORCH}.StopTraining", {"model_id": "m-123"}, {}),
    Row(
        "GET",
        "/api/v2/model/list?type=ndb&status=complete&page_size=5",
        f"{MODELS}.ListModels",
        {"type": "ndb", "status": "complete", "page_size": 5},
    ),
    Row("GET", "/api/v2/model/m-1", f"{MODELS}.GetModel", {"model_id": "m-1"}),
    Row("DELETE", "/api/v2/model/m-1", f"{MODELS}.DeleteModel", {"model_id": "m-1"}),
    Row(
        "POST",
        "/api/v2/model/m-1/access",
        f"{MODELS}.SetModelAccess",
        {"model_id": "m-1", "access": "public"},
        {"access": "public"},
    ),
    Row(
        "GET", "/api/v2/model/m-1/permissions", f"{MODELS}.GetModelPermissions", {"model_id": "m-1"}
    ),
    Row("GET", "/api/v2/model/m-1/download", f"{MODELS}.DownloadModel", {"model_id": "m-1"}),
    Row(
        "POST",
        "/api/v2/model/m-1/predict",
        f"{MODELS}.Predict",
        {"model_id": "m-1", "query": "refund policy", "top_k": 3},
        {"query": "refund policy", "top_k": 3},
    ),
    Row(
        "GET", "/api/v2/model/m-1/generated-data", f"{MODELS}.GetGeneratedData", {"model_id": "m-1"}
    ),
    Row(
        "POST",
        "/api/v2/model/m-1/feedback",
        f"{MODELS}.AddTokenFeedback",
        {"model_id": "m-1", "tokens": ["Ada", "Lovelace"], "tags": ["NAME", "NAME"]},
        {"tokens": ["Ada", "Lovelace"], "tags": ["NAME", "NAME"]},
    ),
    Row(
        "GET",
        "/sestekai-api/api/external/trainings/bank-faq/clusters",
        f"{CL}.ListClusters",
        {"modelId": "bank-faq"},
    ),
    Row(
        "POST",
        "/api/v2/train/update-status",
        f"{ORCH}.UpdateTrainStatus",
        {"status": "in_progress", "metadata": {"key": "value"}},
        {"status": "in_progress", "metadata": {"key": "value"}},
        auth="job",
    ),
    Row(
        "POST",
        "/api/v2/train/log",
        f"{ORCH}.LogTrainMessage",
        {"level": "error", "message": "this failed"},
        {"level": "error", "message": "this failed"},
        auth="job",
    ),
    Row(
        "GET",
        "/api/v2/train/log",
        f"{ORCH}.LogTrainMessage",
        {"level": "warning", "message": "careful"},
        {"level": "warning", "message": "careful"},
        auth="job",
    ),
    # NDB search and feedback (issue 11).
    Row(
        "POST",
        "/api/v2/model/m-1/search",
        f"{MODELS}.Search",
        {
            "model_id": "m-1",
            "queries": ["a", "b"],
            "top_k": 3,
            "constraints": {"kind": ["x", "y"], "year": 2020.0},
        },
        {"queries": ["a", "b"], "top_k": 3, "constraints": {"kind": ["x", "y"], "year": 2020}},
    ),
    Row(
        "POST",
        "/api/v2/model/m-1/upvote",
        f"{MODELS}.Upvote",
        {"model_id": "m-1", "text_id_pairs": [{"query_text": "q", "reference_id": "d#0"}]},
        {"text_id_pairs": [{"query_text": "q", "reference_id": "d#0"}]},
    ),
    Row(
        "POST",
        "/api/v2/model/m-1/associate",
        f"{MODELS}.Associate",
        {"model_id": "m-1", "text_pairs": [{"source": "s", "target": "t"}]},
        {"text_pairs": [{"source": "s", "target": "t"}]},
    ),
    Row(
        "POST",
        "/api/v2/model/m-1/implicit-feedback",
        f"{MODELS}.ImplicitFeedback",
        {"model_id": "m-1", "query_text": "q", "reference_id": "d#0", "event": "click"},
        {"query_text": "q", "reference_id": "d#0", "event": "click"},
    ),
    Row(
        "GET",
        "/api/v2/model/m-1/sources?page_size=10&page_token=t",
        f"{MODELS}.ListSources",
        {"model_id": "m-1", "page_size": 10, "page_token": "t"},
    ),
    Row(
        "GET",
        "/api/v2/train/uploads?page_size=5&page_token=abc",
        f"{UPL}.ListUploads",
        {"page_size": 5, "page_token": "abc"},
    ),
    Row("GET", "/api/v2/train/uploads/u-1", f"{UPL}.GetUpload", {"upload_id": "u-1"}),
    Row("DELETE", "/api/v2/train/uploads/u-1", f"{UPL}.DeleteUpload", {"upload_id": "u-1"}),
    Row(
        "POST",
        "/training-jobs?pipeline=churn",
        f"{TJ}.CreateTrainingJob",
        {"pipeline": "churn", "hyperparameters": {"epochs": 3.0, "lr": "0.1"}},
        {"epochs": 3, "lr": "0.1"},
    ),
    Row(
        "POST",
        "/training-jobs?pipeline_step=churn",
        f"{TJ}.CreateTrainingJob",
        {"pipeline_step": "churn"},
        {},
    ),
    Row(
        "GET",
        "/training-jobs/model-training-churn-1",
        f"{TJ}.GetTrainingJobLogs",
        {"name": "model-training-churn-1"},
    ),
    Row(
        "GET",
        "/training-jobs/model-training-churn-1/logs/follow",
        f"{TJ}.FollowTrainingJobLogs",
        {"name": "model-training-churn-1"},
    ),
    Row("GET", "/training-jobs", f"{TJ}.ListTrainingJobs", {}),
    Row("GET", "/training-jobs?pipeline=churn", f"{TJ}.ListTrainingJobs", {"pipeline": "churn"}),
    Row(
        "DELETE",
        "/training-jobs/model-training-churn-1",
        f"{TJ}.DeleteTrainingJob",
        {"name": "model-training-churn-1"},
    ),
    Row("POST", "/api/v1/finetunings", f"{FT}.CreateFinetuning", FT_BODY, FT_BODY),
    Row("GET", "/api/v1/finetunings/f-1", f"{FT}.GetFinetuning", {"id": "f-1"}),
    Row("GET", "/api/v1/finetuning-jobs/f-1", f"{FT}.GetFinetuning", {"id": "f-1"}),
    Row(
        "GET",
        "/api/v1/finetunings?db_connection_id=conn-1",
        f"{FT}.ListFinetunings",
        {"db_connection_id": "conn-1"},
    ),
    Row("POST", "/api/v1/finetunings/f-1/cancel", f"{FT}.CancelFinetuning", {"id": "f-1"}, {}),
    Row("DELETE", "/api/v1/finetunings/f-1", f"{FT}.DeleteFinetuning", {"id": "f-1"}),
    Row(
        "POST",
        "/api/v1/database-connections",
        f"{FT}.CreateDatabaseConnection",
        {"alias": "db", "connection_uri": "postgresql://u@h/db"},
        {"alias": "db", "connection_uri": "postgresql://u@h/db"},
    ),
    Row("GET", "/api/v1/database-connections", f"{FT}.ListDatabaseConnections", {}),
    Row(
        "GET",
        "/api/v1/database-connections/c-1",
        f"{FT}.GetDatabaseConnection",
        {"id": "c-1"},
    ),
    Row(
        "DELETE",
        "/api/v1/database-connections/c-1",
        f"{FT}.DeleteDatabaseConnection",
        {"id": "c-1"},
    ),
    Row(
        "GET",
        "/api/v1/finetunings/f-1/evaluation",
        f"{FT}.GetFinetuningEvaluation",
        {"id": "f-1"},
    ),
    Row(
        "POST",
        "/api/v1/golden-records",
        f"{FT}.CreateGoldenRecords",
        {
            "golden_records": [
                {"db_connection_id": "c", "question": "how many?", "sql_query": "SELECT 1"}
            ]
        },
        [{"db_connection_id": "c", "question": "how many?", "sql_query": "SELECT 1"}],
    ),
    Row(
        "GET",
        "/api/v1/golden-records?db_connection_id=c&page=2&limit=10",
        f"{FT}.ListGoldenRecords",
        {"db_connection_id": "c", "page": 2, "limit": 10},
    ),
    Row("DELETE", "/api/v1/golden-records/g-1", f"{FT}.DeleteGoldenRecord", {"id": "g-1"}),
    Row(
        "GET",
        "/sestekai-api/api/external/trainings/bank-faq/progress",
        f"{CL}.GetProgress",
        {"modelId": "bank-faq"},
    ),
    Row(
        "GET",
        "/sestekai-api/api/external/trainings/bank-faq/ready",
        f"{CL}.GetReady",
        {"modelId": "bank-faq"},
    ),
    Row(
        "POST",
        "/sestekai-api/api/external/trainings/bank-faq/assign",
        f"{CL}.AssignClusters",
        {"modelId": "bank-faq", "texts": ["hi"]},
        {"texts": ["hi"]},
    ),
]


def _subset(expected: Any, actual: Any, path: str = "") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if value is None:
                assert key not in actual, f"{path}.{key} should be unset"
                continue
            assert key in actual, f"{path}.{key} missing from {actual}"
            _subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _subset(e, a, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _headers(harness: Harness, auth: str) -> dict[str, str]:
    if auth == "user":
        return harness.user_headers("alice")
    if auth == "job":
        return harness.job_headers("m-job")
    return {}


def _send(harness: Harness, row: Row, headers: dict[str, str]) -> httpx.Response:
    content = None if row.body is None else json.dumps(row.body)
    if content is not None:
        headers = {**headers, "content-type": "application/json"}
    return httpx.request(
        row.method, harness.http + row.path, content=content, headers=headers, timeout=30
    )


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_route_reaches_rpc_with_fields_bound(
    recording_gateway: tuple[Harness, Recorder], row: Row
) -> None:
    harness, recorder = recording_gateway
    recorder.clear()
    resp = _send(harness, row, _headers(harness, row.auth))
    service, _, rpc = row.rpc.rpartition(".")
    # 200, or the RPC's success_http_status (201 for finetunings), sent by the runtime.
    assert resp.status_code == http_statuses_of(f"/{service}/{rpc}").success, resp.text
    call = recorder.last()
    assert call.method == row.rpc
    got = json_format.MessageToDict(
        call.request, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _subset(row.expect, got)


@pytest.mark.parametrize("row", [r for r in ROWS if r.auth != "none"], ids=lambda r: r.id)
def test_route_without_token_is_401_json(
    recording_gateway: tuple[Harness, Recorder], row: Row
) -> None:
    harness, recorder = recording_gateway
    recorder.clear()
    resp = _send(harness, row, {})
    assert resp.status_code == 401
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["code"] == 16 and "Bearer" in body["message"]
    assert not recorder.calls, "the servicer must not run for an unauthenticated call"


@pytest.mark.parametrize("row", [r for r in ROWS if r.auth == "job"], ids=lambda r: r.id)
def test_job_route_with_user_token_is_403(
    recording_gateway: tuple[Harness, Recorder], row: Row
) -> None:
    harness, recorder = recording_gateway
    recorder.clear()
    resp = _send(harness, row, harness.user_headers("alice"))
    assert resp.status_code == 403
    assert "job token" in resp.json()["message"]
    assert not recorder.calls


def test_user_route_with_job_token_is_403(recording_gateway: tuple[Harness, Recorder]) -> None:
    harness, _ = recording_gateway
    resp = httpx.get(harness.http + "/api/v2/train/m/status", headers=harness.job_headers("m"))
    assert resp.status_code == 403


def test_bad_token_is_401(recording_gateway: tuple[Harness, Recorder]) -> None:
    harness, _ = recording_gateway
    for value in ("Bearer not-a-jwt", "Basic abc", "Bearer " + "x.y.z"):
        resp = httpx.get(harness.http + "/api/v2/train/m/status", headers={"authorization": value})
        assert resp.status_code == 401, value
        assert resp.json()["code"] == 16


def _multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    ("path", "rpc"),
    [
        ("/api/v2/train/upload-data", f"{UPL}.UploadData"),
        ("/sestekai-api/api/external/trainings/train", f"{CL}.Train"),
        ("/sestekai-api/api/app/external-trainings/train", f"{CL}.TrainDeprecated"),
    ],
)
def test_multipart_routes_stream_the_body(
    recording_gateway: tuple[Harness, Recorder], path: str, rpc: str
) -> None:
    harness, recorder = recording_gateway
    recorder.clear()
    payload = bytes(range(256)) * 8192  # 2 MiB: arrives in several chunks
    body = _multipart("XyZ", [("modelId", None, b"bank-faq"), ("dataFile", "d.json", payload)])
    resp = httpx.post(
        harness.http + path,
        content=body,
        timeout=60,
        headers={**harness.user_headers(), "content-type": "multipart/form-data; boundary=XyZ"},
    )
    assert resp.status_code == 200, resp.text
    call = recorder.last()
    assert call.method == rpc
    assert len(call.requests) > 1, "a large body must stream as several messages"
    assert call.requests[0].http_body.content_type == "multipart/form-data; boundary=XyZ"
    assert b"".join(r.http_body.data for r in call.requests) == body


def test_connect_token_is_public_and_gets_the_form(
    recording_gateway: tuple[Harness, Recorder],
) -> None:
    harness, recorder = recording_gateway
    recorder.clear()
    form = "grant_type=client_credentials&client_id=c&client_secret=s"
    resp = httpx.post(
        harness.http + "/connect/token",
        content=form,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 200
    call = recorder.last()
    assert call.method == f"{AUTH}.IssueToken"
    assert call.request.http_body.content_type == "application/x-www-form-urlencoded"
    assert call.request.http_body.data == form.encode()


def test_bare_json_responses_come_out_exactly(recording_gateway: tuple[Harness, Recorder]) -> None:
    harness, _ = recording_gateway
    resp = httpx.get(harness.http + "/training-jobs", headers=harness.user_headers())
    assert resp.headers["content-type"] == "application/json"
    assert resp.content == b'{"rpc":"ListTrainingJobs"}'


def test_follow_routes_are_server_sent_events(recording_gateway: tuple[Harness, Recorder]) -> None:
    harness, _ = recording_gateway
    resp = httpx.get(harness.http + "/api/v2/train/m/logs/follow", headers=harness.user_headers())
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.text.startswith("data: {")


@pytest.mark.parametrize("status", [201, 202, 422])
def test_x_http_status_sets_the_rest_status(
    recording_gateway: tuple[Harness, Recorder], status: int
) -> None:
    harness, _ = recording_gateway
    resp = httpx.post(
        harness.http + "/api/v1/finetunings",
        content=json.dumps(FT_BODY),
        headers={**harness.user_headers(), "x-test-http-status": str(status)},
    )
    assert resp.status_code == status
    assert "x-http-status" not in resp.headers
    assert "grpc-status" not in resp.headers


def test_error_with_http_status_and_details(recording_gateway: tuple[Harness, Recorder]) -> None:
    harness, _ = recording_gateway
    resp = httpx.post(
        harness.http + "/api/v2/train/ndb",
        content=json.dumps(NDB_BODY),
        headers={**harness.user_headers(), "x-test-fail": "422"},
    )
    assert resp.status_code == 422
    body = resp.json()
    assert body["code"] == 3 and body["message"] == "test failure"
    kinds = {d["@type"].rsplit(".", 1)[-1]: d for d in body["details"]}
    (violation,) = kinds["BadRequest"]["field_violations"]
    assert (violation["field"], violation["description"]) == ("field", "is wrong")
    assert kinds["ErrorInfo"]["reason"] == "INVALID_ARGUMENT"


def test_envoy_own_errors_are_json(recording_gateway: tuple[Harness, Recorder]) -> None:
    harness, _ = recording_gateway
    unknown = httpx.get(harness.http + "/no/such/path")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == 5
    bad_query = httpx.get(harness.http + "/training-jobs?nope=1", headers=harness.user_headers())
    assert bad_query.status_code == 400
    assert bad_query.headers["content-type"] == "application/json"
    assert bad_query.json()["code"] == 3
    bad_json = httpx.post(
        harness.http + "/api/v2/train/ndb", content="{bad", headers=harness.user_headers()
    )
    assert bad_json.status_code == 400
    assert bad_json.json()["code"] == 3


def test_healthz_reports_all_upstreams(recording_gateway: tuple[Harness, Recorder]) -> None:
    harness, _ = recording_gateway
    resp = httpx.get(harness.http + "/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "SERVING"}


def test_success_status_comes_from_the_contract(
    recording_gateway: tuple[Harness, Recorder],
) -> None:
    """CreateFinetuning's success_http_status is 201: the runtime sends it, the servicer not."""
    harness, _ = recording_gateway
    resp = httpx.post(
        harness.http + "/api/v1/finetunings",
        content=json.dumps(FT_BODY),
        headers=harness.user_headers(),
    )
    assert resp.status_code == 201
    assert "x-http-status" not in resp.headers


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/v2/train/ndb", NDB_BODY, 422),  # validation_http_status = 422
        ("/api/v1/finetunings", FT_BODY, 400),  # no option: 400
    ],
)
def test_validation_status_comes_from_the_contract(
    recording_gateway: tuple[Harness, Recorder], path: str, body: Any, status: int
) -> None:
    harness, _ = recording_gateway
    resp = httpx.post(
        harness.http + path,
        content=json.dumps(body),
        headers={**harness.user_headers(), "x-test-fail": "violation"},
    )
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == 3


def test_undocumented_error_status_is_not_sent(
    recording_gateway: tuple[Harness, Recorder],
) -> None:
    """A status the RPC's contract does not list never reaches the client: the code's own
    mapping applies (INVALID_ARGUMENT -> 400), the answer does not become INTERNAL."""
    harness, _ = recording_gateway
    resp = httpx.post(
        harness.http + "/api/v1/finetunings",
        content=json.dumps(FT_BODY),
        headers={**harness.user_headers(), "x-test-fail": "418"},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == 3


def test_validator_returns_every_violation_at_once() -> None:
    """The interceptor answers a request with three bad fields with three field violations."""
    from trainyard.api.orchestrator.v1 import messages_pb2
    from trainyard.runtime.errors import FieldViolation, InvalidArgument
    from trainyard.runtime.interceptors import ServiceInterceptor

    def three(request: Any) -> list[FieldViolation]:
        return [FieldViolation(name, "is wrong") for name in ("a", "b", "c")]

    name = messages_pb2.LogTrainMessageRequest.DESCRIPTOR.full_name
    interceptor = ServiceInterceptor(None, {name: three})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as err:
        interceptor.validate(messages_pb2.LogTrainMessageRequest())
    assert [v.field for v in err.value.violations] == ["a", "b", "c"]
    assert err.value.http_status is None  # the RPC's contract picks it, not the validator


#: Routes whose bodies are not JSON, tested by their own tests above.
TESTED_APART = {
    f"{UPL}.UploadData": "test_multipart_routes_stream_the_body",
    f"{CL}.Train": "test_multipart_routes_stream_the_body",
    f"{CL}.TrainDeprecated": "test_multipart_routes_stream_the_body",
    f"{AUTH}.IssueToken": "test_connect_token_is_public_and_gets_the_form",
}


def _template_pattern(template: str) -> re.Pattern[str]:
    """A google.api.http path template as a regex: `{name}` one segment, `{name=**}` any."""
    parts = re.split(r"(\{[^}]*\})", template)
    regex = "".join(
        (".+" if "**" in p else "[^/]+") if p.startswith("{") else re.escape(p) for p in parts
    )
    return re.compile(regex + "$")


@pytest.mark.parametrize(
    "route",
    [r for r in http_routes() if r.method.replace("/", ".") not in TESTED_APART],
    ids=lambda r: f"{r.verb} {r.template}",
)
def test_every_binding_of_the_contract_has_a_row(route: HttpRoute) -> None:
    """A REST path added to a contract without a row here would go untested: each binding is
    reached by some row with its verb, its RPC and a path its template matches (or by one of
    the tests above written for its kind of body)."""
    rpc = route.method.replace("/", ".")
    pattern = _template_pattern(route.template)
    assert any(
        row.method == route.verb and row.rpc == rpc and pattern.match(row.path.split("?")[0])
        for row in ROWS
    ), f"no row in ROWS reaches {route.verb} {route.template} ({rpc}); add one"
