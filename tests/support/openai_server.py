"""A local OpenAI-compatible HTTP server for tests: the real `openai` SDK talks to it over a socket.

It speaks the provider's wire format (JSON bodies, `Authorization: Bearer <key>`, errors shaped
`{"error": {"message", "type", "param", "code"}}`) and is extended by registering routes, so each
feature's tests add the endpoints they need (chat completions are built in; files and
fine-tuning jobs are added by the finetuning tests' module) without a second server.

    with OpenAIServer() as server:
        server.chat = lambda request: "SELECT 1"     # the assistant's reply to a chat request
        client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key)

A handler receives a `Request` and returns `(status, json_body)`; raise `ApiError` for an error
answer.
`server.requests` records every request (method, path, JSON body) for assertions;
`server.fail_next(...)` answers an error to the next matching requests (transient failures).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

JSON = dict[str, Any]


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> JSON:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise ApiError(400, f"invalid JSON body: {exc}", "invalid_request_error") from exc
        if not isinstance(value, dict):
            raise ApiError(400, "the body must be a JSON object", "invalid_request_error")
        return value


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code

    def body(self) -> JSON:
        return {
            "error": {"message": self.message, "type": self.type, "param": None, "code": self.code}
        }


Handler = Callable[[Request], tuple[int, JSON]]
ChatReply = Callable[[JSON], str]


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


@dataclass
class Fault:
    """An error answered to the next `times` requests of `method` on a path matching `path`;
    `after_handling` runs the handler first (its effect happens, its answer is lost)."""

    method: str
    path: re.Pattern[str]
    error: ApiError
    times: int = 1
    after_handling: bool = False


@dataclass
class Recorded:
    method: str
    path: str
    body: Any


@dataclass
class OpenAIServer:
    """Serve on 127.0.0.1 (a free port) in a daemon thread; a context manager stops it."""

    api_key: str = "sk-test-key"
    chat: ChatReply = field(default=lambda request: "ok")
    # When set, every chat completion answers this error (e.g. ApiError(429, "rate limited")).
    chat_error: ApiError | None = None
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    _routes: list[_Route] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.route("POST", "/v1/chat/completions", self._chat_completions)
        self.route("GET", "/v1/models", lambda request: (200, {"object": "list", "data": []}))

    # -- extension -----------------------------------------------------------------------------
    def route(self, method: str, path: str, handler: Handler) -> None:
        """Add a route; `{name}` in `path` matches one path segment, passed in `request.params`."""
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
        self._routes.append(_Route(method.upper(), re.compile(f"^{regex}$"), handler))

    def fail_next(
        self,
        method: str,
        path: str,
        error: ApiError,
        *,
        times: int = 1,
        after_handling: bool = False,
    ) -> None:
        """Answer `error` to the next `times` `method` requests whose path matches the regex
        `path` (e.g. a 500 or a 429 the client must retry)."""
        self.faults.append(Fault(method.upper(), re.compile(path), error, times, after_handling))

    def _fault(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == request.method and fault.path.search(request.path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}-{next(self._ids):06d}"

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "the server is not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> OpenAIServer:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                server._dispatch(self)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        threading.Thread(
            target=self._httpd.serve_forever, name="openai-test-server", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- dispatch ------------------------------------------------------------------------------
    def _dispatch(self, http: BaseHTTPRequestHandler) -> None:
        url = urlsplit(http.path)
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        request = Request(
            method=http.command,
            path=url.path,
            params={},
            query={k: v[-1] for k, v in parse_qs(url.query).items()},
            headers={k.lower(): v for k, v in http.headers.items()},
            body=body,
        )
        try:
            status, answer = self._handle(request)
        except ApiError as exc:
            status, answer = exc.status, exc.body()
        payload = json.dumps(answer).encode()
        http.send_response(status)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(payload)))
        http.end_headers()
        http.wfile.write(payload)

    def _handle(self, request: Request) -> tuple[int, JSON]:
        recorded_body: Any = None
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                recorded_body = json.loads(request.body or b"null")
            except ValueError:
                recorded_body = None
        with self._lock:
            self.requests.append(Recorded(request.method, request.path, recorded_body))
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            raise ApiError(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        allowed = False
        for route in self._routes:
            match = route.pattern.match(request.path)
            if match is None:
                continue
            allowed = True
            if route.method == request.method:
                request.params = match.groupdict()
                fault = self._fault(request)
                if fault is not None and not fault.after_handling:
                    raise fault.error
                answer = route.handler(request)
                if fault is not None:
                    raise fault.error
                return answer
        if allowed:
            raise ApiError(405, f"method {request.method} is not allowed on {request.path}")
        raise ApiError(404, f"unknown path {request.path}", "invalid_request_error", "not_found")

    def _chat_completions(self, request: Request) -> tuple[int, JSON]:
        body = request.json()
        if self.chat_error is not None:
            raise self.chat_error
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "'messages' must be a non-empty array")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "'model' is required")
        content = self.chat(body)
        prompt_tokens = sum(
            len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict)
        )
        completion_tokens = len(content.split())
        return 200, {
            "id": self.new_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
