"""The shared runtime on real gRPC sockets: tokens, the interceptor's error mapping, graceful
shutdown."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.harness import TEST_SECRET
from tests.support.wait import wait_until
from trainyard.api.orchestrator.v1 import messages_pb2, service_pb2_grpc
from trainyard.runtime.auth import TokenAuthority
from trainyard.runtime.errors import NotFound, Unauthenticated, status_from_rpc_error
from trainyard.runtime.server import App, Registration, create_server, run_app
from trainyard.runtime.settings import CommonSettings, ServiceSettings, ensure_local_secret

AUTH = TokenAuthority(TEST_SECRET)


class Servicer(service_pb2_grpc.TrainServiceServicer):
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def GetTrainStatus(self, request: Any, context: Any) -> Any:
        if request.model_id == "crash":
            raise RuntimeError("secret internals")
        if request.model_id == "missing":
            raise NotFound("model 'missing' does not exist", reason="MODEL_NOT_FOUND")
        if request.model_id == "slow":
            self.entered.set()
            await self.release.wait()
        return messages_pb2.GetTrainStatusResponse(status="complete")


async def _serve(servicer: Servicer) -> tuple[grpc.aio.Server, int]:
    server, port, _ = await create_server(
        "127.0.0.1:0",
        [
            Registration(
                service_pb2_grpc.add_TrainServiceServicer_to_server,
                servicer,
                "trainyard.api.orchestrator.v1.TrainService",
            )
        ],
        AUTH,
    )
    await server.start()
    return server, port


def _md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_tokens_round_trip_and_reject_tampering() -> None:
    user = AUTH.verify(AUTH.mint_user("alice"))
    assert (user.subject, user.kind) == ("alice", "user")
    job = AUTH.verify(AUTH.mint_job("alice", model_id="m1"))
    assert (job.kind, job.model_id) == ("job", "m1")
    forged = jwt.encode(
        {"sub": "alice", "typ": "user", "exp": time.time() + 60, "iss": "trainyard"},
        "another-secret-that-is-long-enough-for-hs256",
        algorithm="HS256",
    )
    with pytest.raises(Unauthenticated, match="invalid bearer token"):
        AUTH.verify(forged)
    with pytest.raises(Unauthenticated, match="expired"):
        AUTH.verify(AUTH.mint_user("alice", ttl=-10))
    none_alg = jwt.encode(
        {"sub": "alice", "typ": "user", "exp": time.time() + 60}, "", algorithm="none"
    )
    with pytest.raises(Unauthenticated, match="unsupported token algorithm"):
        AUTH.verify(none_alg)


def test_local_secret_is_created_once(tmp_path: Path) -> None:
    path = tmp_path / "auth-secret"
    first = ensure_local_secret(path)
    assert ensure_local_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600


async def test_errors_map_to_statuses_with_details() -> None:
    servicer = Servicer()  # type: ignore[abstract]  # see tests/support/train_service.py
    server, port = await _serve(servicer)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.TrainServiceStub(channel)
            token = AUTH.mint_user("alice")
            resp = await stub.GetTrainStatus(
                messages_pb2.GetTrainStatusRequest(model_id="ok"), metadata=_md(token)
            )
            assert resp.status == "complete"

            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetTrainStatus(
                    messages_pb2.GetTrainStatusRequest(model_id="missing"), metadata=_md(token)
                )
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            status = status_from_rpc_error(missing.value)
            assert status is not None
            info = error_details_pb2.ErrorInfo()
            assert status.details[0].Unpack(info) and info.reason == "MODEL_NOT_FOUND"

            with pytest.raises(grpc.aio.AioRpcError) as crash:
                await stub.GetTrainStatus(
                    messages_pb2.GetTrainStatusRequest(model_id="crash"), metadata=_md(token)
                )
            assert crash.value.code() == grpc.StatusCode.INTERNAL
            assert "correlation id" in (crash.value.details() or "")
            assert "secret internals" not in (crash.value.details() or "")

            with pytest.raises(grpc.aio.AioRpcError) as anon:
                await stub.GetTrainStatus(messages_pb2.GetTrainStatusRequest(model_id="ok"))
            assert anon.value.code() == grpc.StatusCode.UNAUTHENTICATED

            with pytest.raises(grpc.aio.AioRpcError) as unimpl:
                await stub.GetTrainLogs(
                    messages_pb2.GetTrainLogsRequest(model_id="x"), metadata=_md(token)
                )
            assert unimpl.value.code() == grpc.StatusCode.UNIMPLEMENTED

            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)


async def test_graceful_shutdown_finishes_in_flight_calls(tmp_path: Path) -> None:
    servicer = Servicer()  # type: ignore[abstract]  # see tests/support/train_service.py
    stop = asyncio.Event()
    ready = tmp_path / "ready.json"
    common = CommonSettings(data_dir=tmp_path, auth_secret=TEST_SECRET)
    own = ServiceSettings(port=0, grace_seconds=5)
    app = App(
        name="t",
        registrations=[
            Registration(
                service_pb2_grpc.add_TrainServiceServicer_to_server,
                servicer,
                "trainyard.api.orchestrator.v1.TrainService",
            )
        ],
    )
    runner = asyncio.create_task(
        run_app(app, common, own, default_port=0, ready_file=ready, stop=stop)
    )
    written = await wait_until(
        lambda: ready.exists() and ready.read_text(), 10, f"the ready file {ready} is written"
    )
    address = json.loads(written)["address"]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.TrainServiceStub(channel)
        call = stub.GetTrainStatus(
            messages_pb2.GetTrainStatusRequest(model_id="slow"), metadata=_md(AUTH.mint_user("a"))
        )
        await asyncio.wait_for(servicer.entered.wait(), 5)
        stop.set()  # SIGTERM equivalent while the call is in flight
        # New calls are refused while the in-flight one may still finish.

        async def refused() -> bool:
            try:
                await stub.GetTrainStatus(
                    messages_pb2.GetTrainStatusRequest(model_id="ok"),
                    metadata=_md(AUTH.mint_user("a")),
                    timeout=1,
                )
            except grpc.aio.AioRpcError:
                return True
            return False

        await wait_until(refused, 5, "new calls are refused after the stop signal")
        assert not call.done()
        servicer.release.set()
        assert (await call).status == "complete"
    await asyncio.wait_for(runner, 10)


def test_oidc_tokens_verify_against_a_jwks_url() -> None:
    """A real JWKS document served over HTTP; RS256 user tokens verify, tampered ones do not."""
    import http.server
    import threading

    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
        authority = TokenAuthority(TEST_SECRET, jwks_url=url, audience=None)
        claims = {"sub": "carol@example.com", "exp": int(time.time()) + 60}
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        ident = authority.verify(token)
        assert (ident.subject, ident.kind) == ("carol@example.com", "user")
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"})
        with pytest.raises(Unauthenticated):
            authority.verify(forged)
        job_claim = jwt.encode(
            {**claims, "typ": "job"}, key, algorithm="RS256", headers={"kid": "k1"}
        )
        with pytest.raises(Unauthenticated, match="only identify users"):
            authority.verify(job_claim)
    finally:
        server.shutdown()
