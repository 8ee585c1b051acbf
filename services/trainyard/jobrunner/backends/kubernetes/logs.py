"""Pod logs into the sequenced job log: one follow connection at a time per pod, resumed by
the kubelet's timestamps so that nothing is lost or doubled.

Every record written for a pod carries the kubelet's timestamp of the line (`timestamps=true`)
as its time. After a reconnect or a runner restart the pod's log is read again and lines older
than the last recorded timestamp, or equal to it and already counted, are skipped, even when
many lines share one timestamp. `k8s-state.json` next to the log maps attempts to pods.

Logs are read with `_preload_content=False`: `kubernetes==36.0.3` returns
`read_namespaced_pod_log` text as the repr of bytes (kubernetes-client/python#2596).
"""

from __future__ import annotations

import calendar
import contextlib
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import structlog
import urllib3
from kubernetes.client.rest import ApiException

from trainyard.jobrunner.backends.kubernetes.manifests import CONTAINER
from trainyard.jobrunner.logfile import STDOUT, LogWriter, records_backwards
from trainyard.runtime.files import atomic_write

log = structlog.get_logger("trainyard.jobrunner.kubernetes")

STATE_FILE = "k8s-state.json"
CONNECT_TIMEOUT = 10.0
SINCE_MARGIN = 300  # seconds of extra log re-read on resume, for clock skew with the node

_STAMP = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$"
)


def parse_stamp(text: str) -> int | None:
    """An RFC 3339 timestamp (the kubelet's RFC3339Nano) as Unix nanoseconds."""
    match = _STAMP.match(text)
    if match is None:
        return None
    parts = [int(match.group(i)) for i in range(1, 7)]
    seconds = calendar.timegm((*parts, 0, 0, 0))
    zone = match.group(8)
    if zone != "Z":
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        seconds -= offset if zone[0] == "+" else -offset
    return seconds * 1_000_000_000 + int((match.group(7) or "").ljust(9, "0"))


def log_tail(path: Path) -> tuple[int, int | None, int]:
    """(attempt of the last record, its time, how many trailing records of that attempt share
    that time); (0, None, 0) without records."""
    attempt, stamp, ties = 0, None, 0
    for rec in records_backwards(path):
        if stamp is None:
            attempt, stamp, ties = rec.attempt, rec.time_ns, 1
        elif rec.attempt == attempt and rec.time_ns == stamp:
            ties += 1
        else:
            break
    return attempt, stamp, ties


class LogCursor:
    """Where one attempt's log stands: what has been written, so that re-reading the pod's log
    (after a dropped connection or a runner restart) skips exactly that."""

    def __init__(self, path: Path, attempt: int, last_ts: int | None = None, ties: int = 0):
        self.path = path
        self.attempt = attempt
        self.last_ts = last_ts
        self.ties = ties  # records already written with time == last_ts
        self.seen = 0  # lines with time == last_ts seen on the current connection
        self.partial = b""
        self.writer: LogWriter | None = None
        self.lock = threading.Lock()  # held by the thread streaming into this cursor

    def connect(self) -> None:
        self.seen = 0
        self.partial = b""

    def feed(self, raw: bytes) -> None:
        """One complete line, `<RFC3339Nano> <text>`."""
        text = raw.decode("utf-8", "replace")
        stamp, sep, rest = text.partition(" ")
        moment = parse_stamp(stamp) if sep else None
        if moment is None:  # not timestamped: write as is (cannot be deduplicated)
            self._write(self.last_ts or time.time_ns(), text)
            return
        if self.last_ts is not None:
            if moment < self.last_ts:
                return
            if moment == self.last_ts:
                if self.seen < self.ties:
                    self.seen += 1
                    return
                self._write(moment, rest)
                self.ties += 1
                self.seen += 1
                return
        self._write(moment, rest)
        self.last_ts, self.ties, self.seen = moment, 1, 1

    def flush_partial(self) -> None:
        """The stream ended for good: a last line without a newline is still a line."""
        if self.partial:
            data, self.partial = self.partial, b""
            self.feed(data)
        self.flush()

    def _write(self, moment: int, text: str) -> None:
        if self.writer is None:
            self.writer = LogWriter(self.path, self.attempt)
        self.writer.write(STDOUT, text, moment)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()


class StreamControl:
    """Stops a job's log streams: a flag, plus closers that unblock reads in progress."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closers: set[Callable[[], None]] = set()
        self.stopped = False

    def register(self, closer: Callable[[], None]) -> bool:
        with self._lock:
            if self.stopped:
                return False
            self._closers.add(closer)
            return True

    def unregister(self, closer: Callable[[], None]) -> None:
        with self._lock:
            self._closers.discard(closer)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            closers = list(self._closers)
        for closer in closers:
            with contextlib.suppress(Exception):
                closer()


def shutdown_response(response: Any) -> None:
    """Unblock a thread reading `response` (urllib3 2.3+; else shut the socket down)."""
    try:
        response.shutdown()
        return
    except (AttributeError, ValueError, RuntimeError, OSError):
        pass
    connection = getattr(response, "connection", None) or getattr(response, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def response_chunks(response: Any) -> Iterator[bytes]:
    """The body of an unpreloaded response as it arrives."""
    if getattr(response, "chunked", False):
        yield from response.stream(None, decode_content=False)
        return
    while True:
        data = response.read1(1 << 16)
        if not data:
            return
        yield data


def stream_pod_log(
    core: Any,
    namespace: str,
    pod_name: str,
    cursor: LogCursor,
    ctl: StreamControl,
    read_timeout: float,
) -> str:
    """One follow connection (blocking; run it in a worker thread): write new lines until the
    server ends the stream ("eof"), or "gone" (404), "waiting" (not started yet, 400),
    "error", "stopped"."""
    with cursor.lock:
        try:
            return _stream_locked(core, namespace, pod_name, cursor, ctl, read_timeout)
        finally:
            if ctl.stopped:
                cursor.close()
            else:
                cursor.flush()


def _stream_locked(
    core: Any,
    namespace: str,
    pod_name: str,
    cursor: LogCursor,
    ctl: StreamControl,
    read_timeout: float,
) -> str:
    kwargs: dict[str, Any] = {
        "container": CONTAINER,
        "follow": True,
        "timestamps": True,
        "_preload_content": False,
        "_request_timeout": (CONNECT_TIMEOUT, read_timeout),
    }
    if cursor.last_ts is not None:
        behind = time.time() - cursor.last_ts / 1e9
        kwargs["since_seconds"] = max(1, math.ceil(behind) + SINCE_MARGIN)
    if ctl.stopped:
        return "stopped"
    try:
        response = core.read_namespaced_pod_log(pod_name, namespace, **kwargs)
    except ApiException as exc:
        return {404: "gone", 400: "waiting"}.get(exc.status, "error")
    except (urllib3.exceptions.HTTPError, OSError):
        return "stopped" if ctl.stopped else "error"
    closer = partial(shutdown_response, response)
    if not ctl.register(closer):
        response.release_conn()
        return "stopped"
    cursor.connect()
    try:
        for chunk in response_chunks(response):
            if ctl.stopped:
                return "stopped"
            lines = (cursor.partial + chunk).split(b"\n")
            cursor.partial = lines.pop()
            for raw in lines:
                cursor.feed(raw)
            cursor.flush()
        return "stopped" if ctl.stopped else "eof"
    except (urllib3.exceptions.HTTPError, OSError, ValueError):
        return "stopped" if ctl.stopped else "error"
    finally:
        ctl.unregister(closer)
        with contextlib.suppress(Exception):
            response.release_conn()


# ---- which pod is which attempt, for a runner that re-attaches later --------------------------


@dataclass
class Resume:
    pods: list[tuple[str, str]] = field(default_factory=list)
    attempt: int = 1
    last_ts: int | None = None
    ties: int = 0


def save_attempts(
    log_path: Path, job_id: str, uid: str, namespace: str, name: str, pods: list[tuple[str, str]]
) -> None:
    """Record the Job's pods (uid, name) in attempt order next to the log."""
    state = {
        "uid": uid,
        "namespace": namespace,
        "job_name": name,
        "pods": [{"uid": pod_uid, "name": pod_name} for pod_uid, pod_name in pods],
    }
    try:
        with atomic_write(log_path.parent / STATE_FILE) as fh:
            fh.write(json.dumps(state).encode())
    except OSError as exc:  # e.g. the job's directory was removed: only re-attach suffers
        log.warning("job.state_not_saved", job_id=job_id, error=str(exc))


def load_resume(log_path: Path, job_uid: str) -> Resume:
    try:
        state = json.loads((log_path.parent / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        state = {}
    pods: list[tuple[str, str]] = []
    if isinstance(state, dict) and state.get("uid") == job_uid:
        pods = [(str(p["uid"]), str(p["name"])) for p in state.get("pods") or []]
    attempt, stamp, ties = log_tail(log_path)
    if attempt == 0:
        return Resume(pods)
    return Resume(pods, attempt, stamp, ties)
