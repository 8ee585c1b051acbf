"""Untrusted input never gets a 5xx: deep or broken JSON, crafted page tokens, malformed bearer
tokens and undecodable gRPC messages are 400/401 with a plain message (no exception class names),
negative page sizes are 400 on every list, and failed POST /connect/token attempts are limited
(429 with Retry-After) per client and per source. Real services on SQLite behind real Envoy, and
direct gRPC with raw bytes."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import json_format, struct_pb2

from tests.support.harness import TEST_SECRET, Harness
from trainyard.jobrunner.app import build as build_jobrunner
from trainyard.jobrunner.settings import JobrunnerSettings, Pipeline
from trainyard.orchestrator.app import build as build_orchestrator
from trainyard.orchestrator.settings import OrchestratorSettings
from trainyard.runtime.auth import TokenAuthority
from trainyard.runtime.errors import InvalidArgument, Unauthenticated, status_from_rpc_error
from trainyard.runtime.pagination import checked_page_size
from trainyard.runtime.ratelimit import FailureLimiter
from trainyard.runtime.settings import CommonSettings
from trainyard.runtime.untrusted import (
    MAX_JSON_DEPTH,
    decode_cursor,
    decode_json,
    decode_json_cursor,
    json_depth,
    struct_to_dict,
)
from trainyard.upload.app import build as build_upload
from trainyard.upload.settings import UploadSettings

CLIENTS = {"acme-client": "acme-secret-123", "other-client": "other-secret-456"}
CREATE = "/trainyard.api.jobrunner.v1.TrainingJobsService/CreateTrainingJob"
UPDATE = "/trainyard.api.orchestrator.v1.TrainService/UpdateTrainStatus"
UPLOAD = "/trainyard.api.upload.v1.UploadService/UploadData"
INTERNAL_NAMES = ("DecodeError", "RecursionError", "PyJWTError", "Exception", "<class", "upb_")


def nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def plain(message: str) -> str:
    for name in INTERNAL_NAMES:
        assert name not in message, message
    return message


# --- the helpers -----------------------------------------------------------------------------


def test_decode_json_bounds_size_and_depth() -> None:
    assert decode_json(nested(MAX_JSON_DEPTH), field="body") is not None
    for bad, fragment in (
        (nested(MAX_JSON_DEPTH + 1), "deeper than 32"),
        ("[" * 60_000, "deeper than 32"),
        ("{bad", "not valid JSON"),
        (b"\xff\xfe", "not valid UTF-8"),
        ("x" * (70 * 1024), "larger than"),
    ):
        with pytest.raises(InvalidArgument) as err:
            decode_json(bad, field="body")
        assert fragment in plain(err.value.message)
        assert err.value.violations[0].field == "body"
    assert json_depth(b'{"a": "[[[[{{{", "b": [[1]]}') == 3


def test_cursors_decode_or_are_invalid_argument() -> None:
    assert decode_cursor(b64(b"2026|x")) == b"2026|x"
    assert decode_json_cursor(b64('{"c": "t", "i": "u"}')) == {"c": "t", "i": "u"}
    for token in ("!!!", "a" * 5000, b64("[" * 10_000), b64(nested(50)), b64(b"\xff\x00"), "é"):
        with pytest.raises(InvalidArgument) as err:
            decode_json_cursor(token)
        assert "page_token" in plain(err.value.message)


def test_structs_deeper_than_the_limit_are_refused() -> None:
    ok = struct_pb2.Struct()
    json_format.Parse(nested(MAX_JSON_DEPTH), ok)
    assert struct_to_dict(ok, field="hyperparameters")
    with pytest.raises(InvalidArgument) as err:
        struct_to_dict(ok, field="metadata", base_depth=1)
    assert err.value.violations[0].field == "metadata"


def test_malformed_bearer_tokens_are_unauthenticated() -> None:
    authority = TokenAuthority(TEST_SECRET)
    deep = b64("[" * 50_000) + "." + b64("{}") + ".sig"
    deep_claims = b64('{"alg":"HS256"}') + "." + b64(nested(5000)) + ".sig"
    for token in ("x", "a.b.c", deep, deep_claims, b64("[]") + ".e30.x", "x" * 100_000):
        with pytest.raises(Unauthenticated) as err:
            authority.verify(token)
        plain(err.value.message)
    assert authority.verify(authority.mint_user("alice")).subject == "alice"


def test_page_size_must_not_be_negative() -> None:
    assert checked_page_size(0) == 0
    assert checked_page_size(5000, maximum=1000) == 1000
    with pytest.raises(InvalidArgument) as err:
        checked_page_size(-1)
    assert err.value.violations[0].field == "page_size"


def test_failure_limiter_window_and_bounded_memory() -> None:
    now = [0.0]
    limiter = FailureLimiter(3, 60, max_keys=100, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after(["k"]) == 0
        limiter.record_failure(["k"])
    assert limiter.retry_after(["k", "other"]) == 60
    now[0] = 30.5
    assert limiter.retry_after(["k"]) == 30
    now[0] = 60.0
    assert limiter.retry_after(["k"]) == 0
    for i in range(10_000):
        limiter.record_failure([f"random-{i}", "flood-source"])
    assert len(limiter) <= 100
    assert limiter.retry_after(["flood-source"]) > 0


# --- real services behind Envoy ----------------------------------------------------------------


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    tmp: Path = tmp_path_factory.mktemp("untrusted")
    common = CommonSettings(data_dir=tmp, auth_secret=TEST_SECRET, auth_clients=CLIENTS)
    harness = Harness(tmp)
    run = harness.loop.run
    orchestrator = OrchestratorSettings(database_url=f"sqlite+aiosqlite:///{tmp / 'o.db'}")
    harness.start_app("orchestrator", run(build_orchestrator(common, orchestrator)))
    upload = UploadSettings(database_url=f"sqlite+aiosqlite:///{tmp / 'u.db'}")
    harness.start_app("upload", run(build_upload(common, upload)))
    jobrunner = JobrunnerSettings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'j.db'}",
        pipelines={"churn": Pipeline(command=["true"])},
    )
    harness.start_app("jobrunner", run(build_jobrunner(common, jobrunner)))
    harness.start_envoy()
    try:
        yield harness
    finally:
        harness.close()


def _client(source: str) -> httpx.Client:
    """An HTTP client whose connections come from `source` (any 127.x address is local)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30)


def _token(
    client: httpx.Client, harness: Harness, client_id: str, secret: str, spoof: str = ""
) -> httpx.Response:
    # A client's own x-forwarded-for or client-address header must not change its source.
    headers = {"x-forwarded-for": spoof, "x-trainyard-client-address": spoof} if spoof else {}
    return client.post(
        harness.http + "/connect/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        headers=headers,
    )


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", nested(100)),
        ("application/json", "[" * 10_000),
        ("application/json", "[1, 2]"),
        ("application/json", "{bad"),
        ("application/x-www-form-urlencoded", b"grant_type=\xff"),
        ("text/plain", "hello"),
    ],
)
def test_connect_token_bad_bodies_are_400(suite: Harness, content_type: str, body: str) -> None:
    resp = httpx.post(
        suite.http + "/connect/token", content=body, headers={"content-type": content_type}
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == 3
    plain(resp.json()["message"])


def test_connect_token_json_body_works(suite: Harness) -> None:
    resp = httpx.post(
        suite.http + "/connect/token",
        content=json.dumps(
            {
                "grant_type": "client_credentials",
                "client_id": "acme-client",
                "client_secret": "acme-secret-123",
            }
        ),
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 200, resp.text


def test_failed_token_requests_are_limited_per_client_and_source(suite: Harness) -> None:
    with _client("127.0.0.3") as attacker:
        statuses = [
            _token(attacker, suite, "acme-client", "wrong", spoof=f"10.0.0.{i}").status_code
            for i in range(31)
        ]
        assert statuses[:30] == [401] * 30 and statuses[30] == 429, statuses
        blocked = _token(attacker, suite, "acme-client", "wrong")
        assert blocked.status_code == 429
        assert 0 < int(blocked.headers["retry-after"]) <= 60
        body = blocked.json()
        assert body["code"] == 8 and "try again in" in body["message"]
        kinds = {d["@type"].rsplit(".", 1)[-1] for d in body["details"]}
        assert {"ErrorInfo", "RetryInfo"} <= kinds
        # The source is blocked for every client, even with the right secret.
        assert _token(attacker, suite, "other-client", "other-secret-456").status_code == 429
        spoofed = _token(attacker, suite, "other-client", "other-secret-456", spoof="10.9.9.9")
        assert spoofed.status_code == 429
    with _client("127.0.0.4") as elsewhere:
        # The attacked client is blocked from anywhere; another client elsewhere is not slowed.
        assert _token(elsewhere, suite, "acme-client", "acme-secret-123").status_code == 429
        assert _token(elsewhere, suite, "other-client", "other-secret-456").status_code == 200


def test_bad_bearer_tokens_through_envoy_are_401(suite: Harness) -> None:
    deep = b64('{"alg":"HS256"}') + "." + b64("[" * 3000) + ".sig"
    for token in (deep, b64("[" * 3000) + ".e30.sig", "a.b.c"):
        resp = httpx.get(
            suite.http + "/training-jobs", headers={"authorization": f"Bearer {token}"}
        )
        assert resp.status_code == 401, resp.text
        plain(resp.json()["message"])


@pytest.mark.parametrize("path", ["/api/v2/train/uploads", "/training-jobs"])
@pytest.mark.parametrize(
    "token",
    [b64(nested(60)), b64("[" * 3000), "garbage!", b64(b"\xff" * 30), "A" * 1500, b64("1|2")],
    ids=["deep", "deeper", "garbage", "binary", "huge", "wrong-shape"],
)
def test_crafted_page_tokens_are_400(suite: Harness, path: str, token: str) -> None:
    resp = httpx.get(
        f"{suite.http}{path}", params={"page_token": token}, headers=suite.user_headers()
    )
    assert resp.status_code == 400, resp.text
    assert "page_token" in plain(resp.json()["message"])


@pytest.mark.parametrize("path", ["/api/v2/train/uploads", "/training-jobs"])
def test_negative_page_size_is_400(suite: Harness, path: str) -> None:
    resp = httpx.get(f"{suite.http}{path}?page_size=-1", headers=suite.user_headers())
    assert resp.status_code == 400, resp.text
    violations = [v for d in resp.json()["details"] for v in d.get("field_violations", [])]
    assert [v["field"] for v in violations] == ["page_size"]


def test_negative_page_size_is_400_on_list_jobs(suite: Harness) -> None:
    from trainyard.api.jobrunner.v1 import messages_pb2, service_pb2_grpc

    with grpc.insecure_channel(suite.servers["jobrunner"].address) as channel:
        stub = service_pb2_grpc.JobRunnerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ListJobs(
                messages_pb2.ListJobsRequest(page_size=-5),
                metadata=tuple(suite.service_headers().items()),
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in (err.value.details() or "")


# --- direct gRPC with bytes no client library would send ---------------------------------------


def _ld(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    size, out = len(payload), b""
    while True:
        byte = size & 0x7F
        size >>= 7
        out += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return bytes([number << 3 | 2]) + out + payload


def _struct_bytes(levels: int) -> bytes:
    """A google.protobuf.Struct nested `levels` JSON levels deep, encoded by hand (the library
    refuses to build one past its own limit)."""
    value = b"\x11" + b"\x00" * 7 + b"\x3f"  # Value.number_value = 1.0
    struct = b""
    for _ in range(levels):
        struct = _ld(1, _ld(1, b"a") + _ld(2, value))  # fields {"a": value}
        value = _ld(5, struct)  # Value.struct_value
    return struct


def _raw_call(
    harness: Harness, service: str, method: str, payload: bytes, md: dict[str, str]
) -> grpc.RpcError:
    """Send `payload` as the request bytes of `method` (no serializer) and return the error."""
    with grpc.insecure_channel(harness.servers[service].address) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(payload, metadata=tuple(md.items()), timeout=30)
    return err.value


@pytest.mark.parametrize("levels", [33, 34, 50, 100, 1000])
def test_deep_structs_over_grpc_are_invalid_argument(suite: Harness, levels: int) -> None:
    for service, method, payload, md in (
        (
            "jobrunner",
            CREATE,
            _ld(1, b"churn") + _ld(3, _struct_bytes(levels)),
            suite.user_headers(),
        ),
        (
            "orchestrator",
            UPDATE,
            _ld(1, b"x") + _ld(2, _struct_bytes(levels)),
            suite.job_headers("m"),
        ),
    ):
        err = _raw_call(suite, service, method, payload, md)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (levels, err.details())
        plain(err.details() or "")
        status = status_from_rpc_error(err)
        assert status is not None and status.code == 3


def test_undecodable_messages_are_invalid_argument(suite: Harness) -> None:
    err = _raw_call(suite, "jobrunner", CREATE, b"\xff\xff\xff\xff", suite.user_headers())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not be decoded" in plain(err.details() or "")
    with grpc.insecure_channel(suite.servers["upload"].address) as channel:
        call = channel.stream_unary(UPLOAD, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as stream_err:
            call(iter([b"\xff\xff\xff"]), metadata=tuple(suite.user_headers().items()), timeout=30)
    assert stream_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    plain(stream_err.value.details() or "")
