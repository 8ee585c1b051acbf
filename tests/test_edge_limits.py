"""What Envoy refuses before a service sees it, as a REST client sees it: deep JSON 400, bodies
over the route's limit 413, long URLs 414, big headers 431, other methods 405 with Allow. None of
them may be 429 (that says "retry") or a 5xx."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.harness import Harness
from tests.support.recording import Recorder
from tests.test_rest_routes import ROWS
from trainyard.gateway.config import (
    BODY_LIMITS,
    DEFAULT_BODY_LIMIT,
    MAX_REQUEST_HEADERS_KB,
    MAX_URL_BYTES,
    lua_source,
    render,
)
from trainyard.gateway.process import EnvoyProcess
from trainyard.runtime.settings import SERVICE_NAMES
from trainyard.runtime.untrusted import MAX_JSON_DEPTH

MiB = 1024 * 1024
CREATE = "/training-jobs?pipeline=churn"
UPDATE = "/api/v2/train/update-status"


def nested(levels: int) -> str:
    """A JSON object `levels` deep: {"a":{"a":...1...}}."""
    return '{"a":' * levels + "1" + "}" * levels


def _error(resp: httpx.Response, status: int, code: int) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["code"] == code and isinstance(body["details"], list), body
    message: str = body["message"]
    assert "Error" not in message and "grpc" not in message.lower(), message
    return message


@pytest.mark.parametrize("levels", [34, 50, 100, 1000])
@pytest.mark.parametrize("token", [True, False], ids=["token", "no-token"])
def test_deep_json_is_400_at_the_edge(
    recording_gateway: tuple[Harness, Recorder], levels: int, token: bool
) -> None:
    harness, recorder = recording_gateway
    recorder.clear()
    for path, headers, body in (
        (CREATE, harness.user_headers() if token else {}, nested(levels)),
        (
            UPDATE,
            harness.job_headers("m") if token else {},
            json.dumps({"status": "in_progress"})[:-1] + ',"metadata":' + nested(levels) + "}",
        ),
    ):
        resp = httpx.post(harness.http + path, content=body, headers=headers, timeout=30)
        message = _error(resp, 400, 3)
        assert f"nested deeper than {MAX_JSON_DEPTH} levels" in message
    assert not recorder.calls


def test_json_at_the_depth_limit_passes(recording_gateway: tuple[Harness, Recorder]) -> None:
    harness, recorder = recording_gateway
    recorder.clear()
    resp = httpx.post(
        harness.http + CREATE, content=nested(MAX_JSON_DEPTH), headers=harness.user_headers()
    )
    assert resp.status_code == 200, resp.text
    # Brackets inside strings are text, not nesting.
    resp = httpx.post(
        harness.http + CREATE,
        content=json.dumps({"a": "{[" * 100 + '"\\'}),
        headers=harness.user_headers(),
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("size", [20 * MiB, 32 * MiB])
def test_bodies_over_the_limit_are_413(
    recording_gateway: tuple[Harness, Recorder], size: int
) -> None:
    harness, recorder = recording_gateway
    recorder.clear()
    body = b'{"a":"' + b"x" * size + b'"}'
    resp = httpx.post(
        harness.http + CREATE, content=body, headers=harness.user_headers(), timeout=60
    )
    message = _error(resp, 413, 8)
    assert f"at most {DEFAULT_BODY_LIMIT}" in message
    assert not recorder.calls


def test_chunked_bodies_over_the_limit_are_413(
    recording_gateway: tuple[Harness, Recorder],
) -> None:
    harness, recorder = recording_gateway
    recorder.clear()

    def chunks(total: int) -> Iterator[bytes]:
        yield b'{"a":"'
        for _ in range(total // (64 * 1024)):
            yield b"x" * (64 * 1024)
        yield b'"}'

    for total in (2 * DEFAULT_BODY_LIMIT, 4 * MiB):
        resp = httpx.post(
            harness.http + CREATE, content=chunks(total), headers=harness.user_headers(), timeout=60
        )
        _error(resp, 413, 8)
    assert not recorder.calls


def test_body_limits_are_per_route(recording_gateway: tuple[Harness, Recorder]) -> None:
    harness, _ = recording_gateway
    at_limit = b'{"a":"' + b"x" * (DEFAULT_BODY_LIMIT - 8) + b'"}'
    assert len(at_limit) == DEFAULT_BODY_LIMIT
    resp = httpx.post(harness.http + CREATE, content=at_limit, headers=harness.user_headers())
    assert resp.status_code == 200, resp.text
    big = BODY_LIMITS["trainyard.api.finetuning.v1.FinetuningService/CreateGoldenRecords"]
    records = json.dumps([{"question": "x" * (big - 100)}])
    resp = httpx.post(
        harness.http + "/api/v1/golden-records", content=records, headers=harness.user_headers()
    )
    assert resp.status_code == 200, resp.text
    token_limit = BODY_LIMITS["trainyard.api.auth.v1.AuthService/IssueToken"]
    resp = httpx.post(
        harness.http + "/connect/token",
        content="grant_type=" + "x" * token_limit,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert f"at most {token_limit}" in _error(resp, 413, 8)


def test_long_urls_are_414(recording_gateway: tuple[Harness, Recorder]) -> None:
    harness, recorder = recording_gateway
    recorder.clear()
    for length in (MAX_URL_BYTES + 1, 8 * 1024, 16 * 1024):
        path = "/training-jobs?pipeline=" + "a" * (length - len("/training-jobs?pipeline="))
        resp = httpx.get(harness.http + path, headers=harness.user_headers())
        assert f"at most {MAX_URL_BYTES}" in _error(resp, 414, 8)
    ok = "/training-jobs?pipeline=" + "a" * (MAX_URL_BYTES - len("/training-jobs?pipeline="))
    assert httpx.get(harness.http + ok, headers=harness.user_headers()).status_code == 200
    assert not [c for c in recorder.calls if len(c.request.pipeline) > MAX_URL_BYTES]


def test_big_headers_are_431_and_smaller_ones_reach_the_service(
    recording_gateway: tuple[Harness, Recorder],
) -> None:
    harness, _ = recording_gateway
    limit = MAX_REQUEST_HEADERS_KB * 1024
    for size in (limit + 1024, 2 * limit):
        resp = httpx.get(
            harness.http + "/training-jobs", headers={**harness.user_headers(), "x-big": "a" * size}
        )
        _error(resp, 431, 8)
    # Everything Envoy lets through fits the gRPC servers' metadata limit (no 429 at random).
    for _ in range(5):
        resp = httpx.get(
            harness.http + "/training-jobs?pipeline=" + "p" * 4000,
            headers={**harness.user_headers(), "x-big": "a" * (limit - 6000)},
        )
        assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/training-jobs", "GET, POST"),
        ("PUT", "/training-jobs", "GET, POST"),
        ("PATCH", "/training-jobs/model-training-x-1", "DELETE, GET"),
        ("DELETE", "/connect/token", "POST"),
        ("GET", "/api/v2/train/upload-data", "POST"),
        ("OPTIONS", "/api/v2/train/m/status", "GET"),
        ("HEAD", "/api/v2/train/m/status", "GET"),
    ],
)
def test_other_methods_are_405_with_allow(
    recording_gateway: tuple[Harness, Recorder], method: str, path: str, allow: str
) -> None:
    harness, recorder = recording_gateway
    recorder.clear()
    resp = httpx.request(method, harness.http + path, headers=harness.user_headers())
    assert resp.headers["allow"] == allow
    if method != "HEAD":  # a HEAD answer has no body
        assert method in _error(resp, 405, 12)
    else:
        assert resp.status_code == 405
    assert not recorder.calls


def test_connect_with_a_path_is_a_malformed_request(
    recording_gateway: tuple[Harness, Recorder],
) -> None:
    """CONNECT takes host:port, not a path: Envoy's HTTP/1 codec refuses it as 400 (JSON)."""
    harness, _ = recording_gateway
    resp = httpx.request("CONNECT", harness.http + "/api/v2/train/m/status")
    _error(resp, 400, 3)


def test_unknown_paths_stay_404(recording_gateway: tuple[Harness, Recorder]) -> None:
    harness, _ = recording_gateway
    for method in ("GET", "TRACE"):
        resp = httpx.request(method, harness.http + "/no/such/path")
        assert resp.status_code == 404 and "allow" not in resp.headers


def test_the_route_table_covers_every_rest_row() -> None:
    """The Lua table is generated from the contract: every documented row is in it."""
    source = lua_source({name: "127.0.0.1:1" for name in SERVICE_NAMES})
    patterns = [
        (m.group(1), m.group(2))
        for m in re.finditer(r'pattern = "([^"]+)", allow = "([^"]+)"', source)
    ]
    for row in ROWS:
        path = row.path.split("?", 1)[0]
        lua_like = [
            allow
            for pattern, allow in patterns
            if re.fullmatch(pattern.replace("%-", "-").replace("%.", r"\.").strip("^$"), path)
        ]
        assert any(row.method in allow.split(", ") for allow in lua_like), row.id


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (CREATE, '"s"', 'hyperparameters: invalid value "s" (expected a JSON object)'),
        (CREATE, "[1]", "a field that takes one value got a JSON array"),
        (
            "/api/v2/train/ndb",
            '{"model_name": 5}',
            "model_name: invalid value 5 (expected a string)",
        ),
        ("/api/v2/train/ndb", '{"": 1}', "an empty key is not allowed"),
        (
            "/api/v2/train/ndb",
            '{"job_options": {"allocation_cores": 1.5}}',
            "job_options.allocation_cores: invalid value 1.5 (expected a 32-bit integer)",
        ),
        ("/api/v2/train/ndb", "{bad", "the body is not valid JSON: "),
    ],
)
def test_bodies_that_do_not_fit_say_so_without_protobuf_internals(
    recording_gateway: tuple[Harness, Recorder], path: str, body: str, expected: str
) -> None:
    harness, _ = recording_gateway
    resp = httpx.post(harness.http + path, content=body, headers=harness.user_headers())
    message = _error(resp, 400, 3)
    assert message.startswith(expected), message
    for internal in ("TYPE_", "type.googleapis.com", "Proto field"):
        assert internal not in message


def test_an_unavailable_service_is_503_without_envoy_internals(tmp_path: Path) -> None:
    """A route whose service is down: 503 JSON saying so, not Envoy's connection details."""
    harness = Harness(tmp_path)
    try:
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        assert harness.envoy is None
        harness.envoy = EnvoyProcess(
            render({"jobrunner": f"127.0.0.1:{port}"}, http_port=0), tmp_path / "envoy"
        )
        harness.envoy.start()
        resp = httpx.get(harness.http + "/training-jobs", headers=harness.user_headers())
        message = _error(resp, 503, 14)
        assert "unavailable" in message and "reset" not in message
    finally:
        harness.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl for an HTTP/2 REST client")
def test_limits_over_http2_are_clean_answers(
    recording_gateway: tuple[Harness, Recorder], tmp_path: Path
) -> None:
    """Over HTTP/2 the 413 comes after the body is read, so the client sees it (an early answer
    would reset the stream); deep JSON and 405 are the same as over HTTP/1.1."""
    harness, _ = recording_gateway
    big = tmp_path / "big.json"
    big.write_bytes(b'{"a":"' + b"x" * (3 * MiB) + b'"}')
    auth = harness.user_headers()["authorization"]

    def curl(*args: str) -> tuple[int, dict[str, object]]:
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "--http2-prior-knowledge",
                "-H",
                f"authorization: {auth}",
                "-w",
                "\n%{http_code}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        body, _, status = out.rpartition("\n")
        return int(status), json.loads(body)

    status, body = curl("--data-binary", f"@{big}", harness.http + CREATE)
    assert (status, body["code"]) == (413, 8)
    status, body = curl("-d", nested(50), harness.http + CREATE)
    assert (status, body["code"]) == (400, 3)
    status, body = curl("-X", "TRACE", harness.http + "/training-jobs")
    assert (status, body["code"]) == (405, 12)


def test_the_client_address_comes_from_envoy() -> None:
    """Envoy overwrites the client-address header; behind a load balancer it trusts one hop."""
    for hops in (0, 1):
        cfg = render({"orchestrator": "127.0.0.1:1"}, xff_trusted_hops=hops)
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        conf = hcm["typed_config"]
        assert conf["use_remote_address"] is True and conf["xff_num_trusted_hops"] == hops
        (add,) = conf["route_config"]["request_headers_to_add"]
        assert add["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
        assert add["header"]["key"] == "x-trainyard-client-address"
