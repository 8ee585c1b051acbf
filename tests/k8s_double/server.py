"""The HTTP front end: Kubernetes REST paths, JSON bodies, chunked watch and log streams."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ._util import JSON, now, parse_rfc3339
from .apiserver import JOBS, RESOURCES, Cluster
from .errors import ApiError, bad_request, method_not_allowed, route_not_found, status_object
from .kubelet import PODS, SECRETS, ContainerRun
from .logs import LogOptions, render_piece, render_snapshot
from .store import ExpiredError, WatchEvent

_WAKE_SECONDS = 0.25
_NAME = r"([^/]+)"
_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^/apis/batch/v1/namespaces/{_NAME}/jobs$"), "jobs"),
    (re.compile(r"^/apis/batch/v1/jobs$"), "jobs-all"),
    (re.compile(rf"^/apis/batch/v1/namespaces/{_NAME}/jobs/{_NAME}$"), "job"),
    (re.compile(rf"^/apis/batch/v1/namespaces/{_NAME}/jobs/{_NAME}/status$"), "job-status"),
    (re.compile(rf"^/api/v1/namespaces/{_NAME}/pods$"), "pods"),
    (re.compile(r"^/api/v1/pods$"), "pods-all"),
    (re.compile(rf"^/api/v1/namespaces/{_NAME}/pods/{_NAME}$"), "pod"),
    (re.compile(rf"^/api/v1/namespaces/{_NAME}/pods/{_NAME}/status$"), "pod-status"),
    (re.compile(rf"^/api/v1/namespaces/{_NAME}/pods/{_NAME}/log$"), "pod-log"),
    (re.compile(rf"^/api/v1/namespaces/{_NAME}/secrets$"), "secrets"),
    (re.compile(r"^/api/v1/secrets$"), "secrets-all"),
    (re.compile(rf"^/api/v1/namespaces/{_NAME}/secrets/{_NAME}$"), "secret"),
    (re.compile(r"^/(healthz|livez|readyz)$"), "health"),
    (re.compile(r"^/version$"), "version"),
]
VERSION_INFO: JSON = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-trainyard-double",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the double received (for asserting what a client sent)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: ApiServer) -> None:
        super().__init__(address, _Handler)
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        """Hang up on keep-alive clients so their handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class ApiServer:
    """Owns the listening socket and the thread serving it."""

    def __init__(self, cluster: Cluster, host: str = "127.0.0.1") -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.kubelet = cluster.kubelet
        self.requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._httpd = _HTTPServer((host, 0), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="k8s-double-http",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._httpd.close_connections()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def record(self, request: RecordedRequest) -> None:
        with self._requests_lock:
            self.requests.append(request)


def _flag(query: dict[str, str], name: str) -> bool:
    return query.get(name, "").lower() in ("true", "1")


def _int_param(query: dict[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise bad_request(f'invalid value for {name}: "{raw}"') from exc


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    server_version = "k8s-double"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return

    # -- plumbing ------------------------------------------------------------------

    @property
    def app(self) -> ApiServer:
        return self.server.app

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _common_headers(self, warnings: list[str] | None = None) -> None:
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        for warning in warnings or []:
            escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
            self.send_header("Warning", f'299 - "{escaped}"')

    def _send_json(self, code: int, body: JSON, warnings: list[str] | None = None) -> None:
        payload = (json.dumps(body, separators=(",", ":")) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self._common_headers(warnings)
        self.end_headers()
        self.wfile.write(payload)

    def _send_text(self, code: int, payload: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self._common_headers()
        self.end_headers()
        self.wfile.write(payload)

    def _start_chunked(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self._common_headers()
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        if not data:
            return
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _client_gone(self) -> bool:
        """True once the client closed its side (watch.stop(), resp.close())."""
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return bool(sock.recv(1, socket.MSG_PEEK) == b"")
        except (OSError, ValueError):
            return True

    def _dispatch(self, method: str) -> None:
        parsed = urlsplit(self.path)
        path = unquote(parsed.path).rstrip("/") or "/"
        multi = parse_qs(parsed.query, keep_blank_values=True)
        query = {key: values[-1] for key, values in multi.items()}
        try:
            raw_body = self._read_body()
            body: Any = None
            if raw_body.strip():
                try:
                    body = json.loads(raw_body)
                except ValueError as exc:
                    self.app.record(
                        RecordedRequest(method, path, multi, raw_body.decode(errors="replace"))
                    )
                    raise bad_request(f"error decoding request body: {exc}") from exc
            self.app.record(
                RecordedRequest(method, path, multi, body, {k: v for k, v in self.headers.items()})
            )
            self._route(method, path, query, body)
        except ApiError as error:
            self._send_json(error.code, error.status(), list(error.headers.values()))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - surfaced to the client as a 500
            with contextlib.suppress(OSError):
                self._send_json(
                    500,
                    status_object(
                        code=500, reason="InternalError", message=f"internal error: {exc!r}"
                    ),
                )

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> None:
        for pattern, name in _ROUTES:
            match = pattern.match(path)
            if match:
                handler: Callable[..., None] = getattr(self, "_h_" + name.replace("-", "_"))
                handler(method, query, body, *match.groups())
                return
        raise route_not_found()

    # -- endpoints ----------------------------------------------------------------------

    def _h_health(self, method: str, query: dict[str, str], body: Any, _which: str) -> None:
        self._send_text(200, b"ok")

    def _h_version(self, method: str, query: dict[str, str], body: Any) -> None:
        self._send_json(200, VERSION_INFO)

    def _collection(
        self, resource: str, method: str, query: dict[str, str], body: Any, namespace: str | None
    ) -> None:
        cluster = self.app.cluster
        if method == "GET":
            if _flag(query, "watch"):
                self._watch(resource, namespace, query)
                return
            page = cluster.list(
                resource,
                namespace,
                label_selector=query.get("labelSelector"),
                field_selector=query.get("fieldSelector"),
                limit=_int_param(query, "limit"),
                continue_token=query.get("continue"),
            )
            self._send_json(200, cluster.list_object(resource, page))
            return
        if resource == JOBS and namespace is not None and method == "POST":
            dry_run = "dryRun" in query
            self._send_json(201, cluster.create_job(namespace, body, dry_run=dry_run))
            return
        if resource == SECRETS and namespace is not None and method == "POST":
            dry_run = "dryRun" in query
            self._send_json(201, cluster.create_secret(namespace, body, dry_run=dry_run))
            return
        if resource == JOBS and namespace is not None and method == "DELETE":
            options = self._delete_options(query, body)
            predicate = cluster.predicate(
                JOBS, query.get("labelSelector"), query.get("fieldSelector")
            )
            outcome = cluster.delete_jobs(namespace, options, predicate)
            self._send_json(outcome.code, outcome.body, outcome.warnings)
            return
        raise method_not_allowed()

    def _h_jobs(self, method: str, query: dict[str, str], body: Any, namespace: str) -> None:
        self._collection(JOBS, method, query, body, namespace)

    def _h_jobs_all(self, method: str, query: dict[str, str], body: Any) -> None:
        self._collection(JOBS, method, query, body, None)

    def _h_pods(self, method: str, query: dict[str, str], body: Any, namespace: str) -> None:
        self._collection(PODS, method, query, body, namespace)

    def _h_pods_all(self, method: str, query: dict[str, str], body: Any) -> None:
        self._collection(PODS, method, query, body, None)

    def _h_secrets(self, method: str, query: dict[str, str], body: Any, namespace: str) -> None:
        self._collection(SECRETS, method, query, body, namespace)

    def _h_secrets_all(self, method: str, query: dict[str, str], body: Any) -> None:
        self._collection(SECRETS, method, query, body, None)

    def _h_secret(
        self, method: str, query: dict[str, str], body: Any, namespace: str, name: str
    ) -> None:
        cluster = self.app.cluster
        if method == "GET":
            self._send_json(200, cluster.get(SECRETS, namespace, name))
        elif method == "PATCH":
            content_type = self.headers.get("Content-Type", "")
            self._send_json(200, cluster.patch_secret(namespace, name, content_type, body))
        elif method == "DELETE":
            outcome = cluster.delete_secret(namespace, name, self._delete_options(query, body))
            self._send_json(outcome.code, outcome.body, outcome.warnings)
        else:
            raise method_not_allowed()

    def _delete_options(self, query: dict[str, str], body: Any) -> JSON:
        if isinstance(body, dict) and body:
            return body
        options: JSON = {}
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "gracePeriodSeconds" in query:
            options["gracePeriodSeconds"] = _int_param(query, "gracePeriodSeconds")
        if "orphanDependents" in query:
            options["orphanDependents"] = _flag(query, "orphanDependents")
        return options

    def _h_job(
        self, method: str, query: dict[str, str], body: Any, namespace: str, name: str
    ) -> None:
        cluster = self.app.cluster
        if method == "GET":
            self._send_json(200, cluster.get(JOBS, namespace, name))
        elif method == "DELETE":
            outcome = cluster.delete_job(namespace, name, self._delete_options(query, body))
            self._send_json(outcome.code, outcome.body, outcome.warnings)
        else:
            raise method_not_allowed()

    def _h_job_status(
        self, method: str, query: dict[str, str], body: Any, namespace: str, name: str
    ) -> None:
        if method != "GET":
            raise method_not_allowed()
        self._send_json(200, self.app.cluster.get(JOBS, namespace, name))

    def _h_pod(
        self, method: str, query: dict[str, str], body: Any, namespace: str, name: str
    ) -> None:
        cluster = self.app.cluster
        if method == "GET":
            self._send_json(200, cluster.get(PODS, namespace, name))
        elif method == "DELETE":
            self._send_json(
                200, cluster.delete_pod(namespace, name, self._delete_options(query, body))
            )
        else:
            raise method_not_allowed()

    def _h_pod_status(
        self, method: str, query: dict[str, str], body: Any, namespace: str, name: str
    ) -> None:
        if method != "GET":
            raise method_not_allowed()
        self._send_json(200, self.app.cluster.get(PODS, namespace, name))

    # -- watch ---------------------------------------------------------------------------

    def _watch(self, resource: str, namespace: str | None, query: dict[str, str]) -> None:
        cluster = self.app.cluster
        store = self.app.store
        predicate = cluster.predicate(
            resource, query.get("labelSelector"), query.get("fieldSelector")
        )
        timeout = _int_param(query, "timeoutSeconds")
        deadline = time.monotonic() + timeout if timeout else None
        requested = query.get("resourceVersion", "")
        send_initial = _flag(query, "sendInitialEvents")
        _group, api_version, kind, _list_kind = RESOURCES[resource]
        initial: list[JSON] = []
        expired_error: ExpiredError | None = None
        with store.lock:
            if requested in ("", "0") or send_initial:
                items, cursor = store.list(resource, namespace, predicate)
                initial = [{"type": "ADDED", "object": item} for item in items]
                if send_initial:
                    initial.append(
                        {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": kind,
                                "apiVersion": api_version,
                                "metadata": {
                                    "resourceVersion": str(cursor),
                                    "annotations": {"k8s.io/initial-events-end": "true"},
                                },
                            },
                        }
                    )
            else:
                try:
                    cursor = int(requested)
                except ValueError as exc:
                    raise bad_request(f'invalid resource version "{requested}"') from exc
                try:
                    store.events_after(resource, cursor)
                except ExpiredError as error:
                    expired_error = error
        self._start_chunked("application/json")
        try:
            if expired_error is not None:
                status = status_object(code=410, reason="Expired", message=str(expired_error))
                self._chunk(_event_line({"type": "ERROR", "object": status}))
                self._end_chunked()
                return
            for initial_event in initial:
                self._chunk(_event_line(initial_event))
            while True:
                gone: ExpiredError | None = None
                with store.lock:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    wait = _WAKE_SECONDS if remaining is None else min(_WAKE_SECONDS, remaining)

                    def advanced(seen: int = cursor) -> bool:
                        return store.closed or store.revision > seen

                    store.changed.wait_for(advanced, timeout=wait)
                    if store.closed:
                        break
                    try:
                        events = store.events_after(resource, cursor)
                    except ExpiredError as error:
                        events, gone = [], error
                    cursor = store.revision
                if gone is not None:
                    status = status_object(code=410, reason="Expired", message=str(gone))
                    self._chunk(_event_line({"type": "ERROR", "object": status}))
                    break
                for event in events:
                    converted = _convert(event, namespace, predicate)
                    if converted is not None:
                        self._chunk(_event_line(converted))
                if not events and self._client_gone():
                    self.close_connection = True
                    return
            self._end_chunked()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- logs ----------------------------------------------------------------------------

    def _h_pod_log(
        self, method: str, query: dict[str, str], body: Any, namespace: str, name: str
    ) -> None:
        if method != "GET":
            raise method_not_allowed()
        cluster = self.app.cluster
        kubelet = self.app.kubelet
        store = self.app.store
        cluster.get(PODS, namespace, name)
        runtime = kubelet.runtime(namespace, name)
        if runtime is None:
            raise bad_request(f'pod "{name}" is not available')
        requested = query.get("container")
        names = [c.name for c in runtime.containers]
        if not requested:
            if len(names) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(names)}]"
                )
            requested = names[0]
        container = runtime.container(requested)
        if container is None:
            raise bad_request(f"container {requested} is not valid for pod {name}")
        since = None
        since_seconds = _int_param(query, "sinceSeconds")
        if since_seconds is not None:
            since = now() - timedelta(seconds=since_seconds)
        if query.get("sinceTime"):
            try:
                since = parse_rfc3339(query["sinceTime"])
            except ValueError as exc:
                raise bad_request(f"invalid sinceTime: {query['sinceTime']}") from exc
        options = LogOptions(
            tail_lines=_int_param(query, "tailLines"),
            since=since,
            timestamps=_flag(query, "timestamps"),
            limit_bytes=_int_param(query, "limitBytes"),
        )
        previous = _flag(query, "previous")
        with store.lock:
            runs = list(container.runs)
            if previous:
                if len(runs) < 2:
                    raise bad_request(
                        f'previous terminated container "{requested}" in pod "{name}" not found'
                    )
                run: ContainerRun = runs[-2]
            elif not runs:
                waiting = container.state.get("waiting") or {}
                reason = waiting.get("reason", "ContainerCreating")
                detail = {
                    "ErrImagePull": "image can't be pulled",
                    "ImagePullBackOff": "trying and failing to pull image",
                }.get(reason, reason)
                raise bad_request(
                    f'container "{requested}" in pod "{name}" is waiting to start: {detail}'
                )
            else:
                run = runs[-1]
            snapshot = render_snapshot(run.log.pieces, options)
            cursor = len(run.log.pieces)
            at_line_start = not run.log.pieces or run.log.pieces[-1].ends_line
        limit = options.limit_bytes
        if limit is not None:
            snapshot = snapshot[:limit]
        if not _flag(query, "follow") or previous:
            self._send_text(200, snapshot)
            return
        self._start_chunked("text/plain")
        sent = len(snapshot)
        try:
            self._chunk(snapshot)
            while limit is None or sent < limit:
                with store.lock:

                    def progressed(seen: int = cursor) -> bool:
                        return (
                            store.closed
                            or len(run.log.pieces) > seen
                            or run.log.closed
                            or not store.exists(PODS, namespace, name)
                        )

                    kubelet.logs_changed.wait_for(progressed, timeout=_WAKE_SECONDS)
                    pieces = run.log.pieces[cursor:]
                    cursor += len(pieces)
                    finished = (
                        store.closed or run.log.closed or not store.exists(PODS, namespace, name)
                    )
                out = bytearray()
                for piece in pieces:
                    out += render_piece(piece, at_line_start, options)
                    at_line_start = piece.ends_line
                if limit is not None:
                    out = out[: limit - sent]
                sent += len(out)
                self._chunk(bytes(out))
                if finished and not pieces:
                    break
                if not pieces and self._client_gone():
                    self.close_connection = True
                    return
            self._end_chunked()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _event_line(event: JSON) -> bytes:
    return (json.dumps(event, separators=(",", ":")) + "\n").encode()


def _convert(
    event: WatchEvent, namespace: str | None, predicate: Callable[[JSON], bool]
) -> JSON | None:
    """The watch cache's filtering: selector transitions become ADDED/DELETED."""
    if namespace is not None and event.object["metadata"].get("namespace") != namespace:
        return None
    current_passes = event.type != "DELETED" and predicate(event.object)
    previous_passes = event.previous is not None and predicate(event.previous)
    if current_passes and previous_passes:
        return {"type": "MODIFIED", "object": event.object}
    if current_passes:
        return {"type": "ADDED", "object": event.object}
    if previous_passes:
        return {"type": "DELETED", "object": event.object}
    return None
