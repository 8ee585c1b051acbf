"""The orchestrator's implemented REST paths, real service on SQLite behind real Envoy:
status, the job-token callbacks and POST /connect/token."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.harness import TEST_SECRET, Harness
from trainyard.orchestrator.app import build
from trainyard.orchestrator.registry import ModelRegistry
from trainyard.orchestrator.settings import OrchestratorSettings
from trainyard.runtime.db import Database
from trainyard.runtime.settings import CommonSettings

CLIENTS = {"acme-client": "acme-secret-123"}


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, str]]:
    tmp: Path = tmp_path_factory.mktemp("orch")
    url = f"sqlite+aiosqlite:///{tmp / 'orchestrator.db'}"
    common = CommonSettings(data_dir=tmp, auth_secret=TEST_SECRET, auth_clients=CLIENTS)
    harness = Harness(tmp)
    app = harness.loop.run(build(common, OrchestratorSettings(database_url=url)))
    harness.start_app("orchestrator", app)
    harness.start_envoy()
    try:
        yield harness, url
    finally:
        harness.close()


def _new_model(url: str, owner: str = "alice") -> str:
    async def go() -> str:
        db = Database("orchestrator", url, Path("unused"))
        try:
            model = await ModelRegistry(db.sessions).create(
                owner=owner, name=f"m-{uuid.uuid4().hex[:12]}", type="ndb"
            )
            return model.id
        finally:
            await db.close()

    return asyncio.run(go())


def test_status_callbacks_and_messages(orchestrator: tuple[Harness, str]) -> None:
    harness, url = orchestrator
    model_id = _new_model(url)
    status = httpx.get(
        f"{harness.http}/api/v2/train/{model_id}/status", headers=harness.user_headers("alice")
    )
    assert status.status_code == 200
    assert status.json() == {"status": "not_started", "errors": [], "warnings": []}

    job = harness.job_headers(model_id)
    for _ in range(2):  # idempotent
        resp = httpx.post(
            f"{harness.http}/api/v2/train/update-status",
            headers=job,
            json={"status": "in_progress", "metadata": {"epoch": 1}},
        )
        assert resp.status_code == 200
        assert resp.json() == {}
    assert (
        httpx.post(
            f"{harness.http}/api/v2/train/log",
            headers=job,
            json={"level": "warning", "message": "slow disk"},
        ).status_code
        == 200
    )
    # The documented form: GET with a JSON body.
    resp = httpx.request(
        "GET",
        f"{harness.http}/api/v2/train/log",
        headers=job,
        json={"level": "error", "message": "this failed"},
    )
    assert resp.status_code == 200, resp.text

    status = httpx.get(
        f"{harness.http}/api/v2/train/{model_id}/status", headers=harness.user_headers("alice")
    )
    assert status.json() == {
        "status": "in_progress",
        "errors": ["this failed"],
        "warnings": ["slow disk"],
    }


def test_status_of_another_users_model_is_403(orchestrator: tuple[Harness, str]) -> None:
    harness, url = orchestrator
    model_id = _new_model(url, owner="alice")
    resp = httpx.get(
        f"{harness.http}/api/v2/train/{model_id}/status", headers=harness.user_headers("mallory")
    )
    assert resp.status_code == 403
    assert "read access" in resp.json()["message"]


def test_unknown_model_is_404(orchestrator: tuple[Harness, str]) -> None:
    harness, _ = orchestrator
    resp = httpx.get(f"{harness.http}/api/v2/train/nope/status", headers=harness.user_headers())
    assert resp.status_code == 404
    assert resp.json()["message"] == "model 'nope' does not exist"


def test_bad_callback_values_are_422_with_violations(orchestrator: tuple[Harness, str]) -> None:
    harness, url = orchestrator
    job = harness.job_headers(_new_model(url))
    resp = httpx.post(
        f"{harness.http}/api/v2/train/update-status", headers=job, json={"status": "done"}
    )
    assert resp.status_code == 422
    body = resp.json()
    assert "unknown status 'done'" in body["message"]
    bad = next(d for d in body["details"] if d["@type"].endswith("BadRequest"))
    assert bad["field_violations"][0]["field"] == "status"
    resp = httpx.post(
        f"{harness.http}/api/v2/train/log", headers=job, json={"level": "info", "message": ""}
    )
    assert resp.status_code == 422
    fields = {
        v["field"]
        for d in resp.json()["details"]
        if d["@type"].endswith("BadRequest")
        for v in d["field_violations"]
    }
    assert fields == {"level", "message"}


def test_job_token_only_reaches_its_own_model(orchestrator: tuple[Harness, str]) -> None:
    harness, url = orchestrator
    mine, other = _new_model(url), _new_model(url)
    update = f"{harness.http}/api/v2/train/update-status"
    job = harness.job_headers(mine)

    def status(model_id: str) -> str:
        resp = httpx.get(
            f"{harness.http}/api/v2/train/{model_id}/status", headers=harness.user_headers("alice")
        )
        value: str = resp.json()["status"]
        return value

    # The token for `mine` naming `other` every way a request could. A query parameter or a path
    # are refused; a body field the message lacks is dropped by the transcoder: the update then
    # lands on the token's model, never on the one the body names.
    refused = [
        httpx.post(update, headers=job, params={"model_id": other}, json={"status": "failed"}),
        httpx.post(f"{harness.http}/api/v2/train/{other}/update-status", headers=job, json={}),
    ]
    assert [r.status_code for r in refused] == [400, 404], [r.text for r in refused]
    assert (status(mine), status(other)) == ("not_started", "not_started")
    smuggled = httpx.post(update, headers=job, json={"status": "in_progress", "model_id": other})
    assert smuggled.status_code == 200, smuggled.text
    assert (status(mine), status(other)) == ("in_progress", "not_started")


def test_connect_token_client_credentials(orchestrator: tuple[Harness, str]) -> None:
    harness, url = orchestrator
    resp = httpx.post(
        f"{harness.http}/connect/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "acme-client",
            "client_secret": "acme-secret-123",
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert set(body) == {"access_token", "token_type", "expires_in"}
    model_id = _new_model(url, owner="acme-client")
    status = httpx.get(
        f"{harness.http}/api/v2/train/{model_id}/status",
        headers={"authorization": f"Bearer {body['access_token']}"},
    )
    assert status.status_code == 200

    basic = base64.b64encode(b"acme-client:acme-secret-123").decode()
    resp = httpx.post(
        f"{harness.http}/connect/token",
        data={"grant_type": "client_credentials"},
        headers={"authorization": f"Basic {basic}"},
    )
    assert resp.status_code == 200


@pytest.mark.parametrize(
    ("form", "status", "fragment"),
    [
        (
            {
                "grant_type": "client_credentials",
                "client_id": "acme-client",
                "client_secret": "wrong",
            },
            401,
            "wrong client_secret",
        ),
        (
            {"grant_type": "password", "client_id": "a", "client_secret": "b"},
            400,
            "unsupported grant_type",
        ),
        ({"client_id": "a"}, 400, "grant_type, client_secret required"),
    ],
)
def test_connect_token_errors(
    orchestrator: tuple[Harness, str], form: dict[str, str], status: int, fragment: str
) -> None:
    harness, _ = orchestrator
    resp = httpx.post(f"{harness.http}/connect/token", data=form)
    assert resp.status_code == status
    assert fragment in resp.json()["message"]


def test_grpc_clients_reach_the_service_through_envoy(orchestrator: tuple[Harness, str]) -> None:
    """Envoy's listener speaks gRPC (HTTP/2, codec AUTO) as well as REST."""
    import grpc

    from trainyard.api.orchestrator.v1 import messages_pb2, service_pb2_grpc
    from trainyard.runtime.errors import status_from_rpc_error

    harness, url = orchestrator
    model_id = _new_model(url)
    assert harness.envoy is not None
    with grpc.insecure_channel(f"127.0.0.1:{harness.envoy.http_port}") as channel:
        stub = service_pb2_grpc.TrainServiceStub(channel)
        md = tuple(harness.user_headers("alice").items())
        reply = stub.GetTrainStatus(
            messages_pb2.GetTrainStatusRequest(model_id=model_id), metadata=md
        )
        assert reply.status == "not_started"
        with pytest.raises(grpc.RpcError) as err:
            stub.GetTrainStatus(messages_pb2.GetTrainStatusRequest(model_id="nope"), metadata=md)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        status = status_from_rpc_error(err.value)
        assert status is not None and status.message == "model 'nope' does not exist"
