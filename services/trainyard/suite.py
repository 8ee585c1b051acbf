"""`trainyard up`: every service of the catalogue and Envoy on embedded defaults, supervised.

Services start on free ports (port 0) and report their address in a ready file; services that
others call start first. Envoy is configured with the real addresses. A service that dies is
restarted on the same port; Ctrl-C / SIGTERM stops Envoy, then every service, gracefully.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trainyard.catalogue import phases
from trainyard.gateway.config import render
from trainyard.gateway.process import EnvoyProcess
from trainyard.runtime.children import stop_processes, with_parent_death
from trainyard.runtime.files import atomic_write
from trainyard.runtime.settings import ensure_local_secret, make_data_dir, make_private

# Services others call start first (the catalogue's start phases).
PHASES = phases()
CLI_CLIENT_ID = "trainyard-cli"


RESTART_BUDGET = 5  # restarts of one process within RESTART_WINDOW_SECONDS
RESTART_WINDOW_SECONDS = 60.0
WAITING_NOTICE_SECONDS = 5.0
SUPERVISE_INTERVAL_SECONDS = 0.2  # how often `up` looks for dead children


class RestartBudget:
    """At most RESTART_BUDGET restarts of one process a minute. A process that died once the
    budget is spent waits, and the supervisor says so every WAITING_NOTICE_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._restarts: list[float] = []
        self._last_notice: float | None = None

    def may_restart(self, name: str, returncode: int | None, say: Callable[[str], None]) -> bool:
        """Record and allow a restart of `name`, or say (now and then) why it must wait."""
        now = self._clock()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_SECONDS]
        if len(self._restarts) < RESTART_BUDGET:
            self._restarts.append(now)
            self._last_notice = None
            say(f"{name} exited with {returncode}; restarting")
            return True
        if self._last_notice is None or now - self._last_notice >= WAITING_NOTICE_SECONDS:
            self._last_notice = now
            wait = RESTART_WINDOW_SECONDS - (now - self._restarts[0])
            say(
                f"{name} is down (exited with {returncode}) and has used its restart budget "
                f"({RESTART_BUDGET} a minute); next restart in {wait:.0f}s"
            )
        return False


class ServiceProcess:
    """One service as a child process (`python -m trainyard.NAME`), dying with its parent. It binds
    `port` (0: any free port; a restart keeps the port it got) and is ready once it has written
    its ready file. `env` is the child's whole environment (default: ours)."""

    def __init__(
        self,
        name: str,
        run_dir: Path,
        env: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
    ) -> None:
        self.name = name
        self.run_dir = run_dir
        self.env = env if env is not None else os.environ
        self.host = host
        self.log_path = log_path or run_dir / f"{name}.log"
        self.ready_file = run_dir / f"{name}.ready"
        self.port = 0
        self.address: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.budget = RestartBudget()

    def spawn(self) -> None:
        """Start the process; `await_ready` waits for it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                with_parent_death(
                    [
                        sys.executable,
                        "-m",
                        f"trainyard.{self.name}",
                        "--host",
                        self.host,
                        "--port",
                        str(self.port),
                        "--ready-file",
                        str(self.ready_file),
                    ]
                ),
                env=dict(self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def await_ready(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                tail = self.log_path.read_text()[-3000:]
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not start within {timeout}s")
            time.sleep(0.05)
        address: str = json.loads(self.ready_file.read_text())["address"]
        self.address = address
        self.port = int(address.rsplit(":", 1)[1])
        return address

    def start(self, timeout: float = 60.0) -> str:
        self.spawn()
        return self.await_ready(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM (graceful shutdown), SIGKILL after `grace`."""
        if self.proc is not None:
            stop_processes([self.proc], grace)


def client_credentials(data_dir: Path) -> dict[str, str]:
    """The embedded OAuth2 clients (created once): {client_id: secret}."""
    path = data_dir / "clients.json"
    if path.exists():
        clients: dict[str, str] = json.loads(path.read_text())
        make_private(path)
        return clients
    clients = {CLI_CLIENT_ID: secrets.token_urlsafe(24)}
    make_data_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(clients, fh)
    return clients


class Suite:
    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        http_port: int = 8080,
        admin_port: int = 0,
        out: Any = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.http_port = http_port
        self.admin_port = admin_port
        self.run_dir = self.data_dir / "run"
        self.log_dir = self.data_dir / "logs"
        self.children: dict[str, ServiceProcess] = {}
        self.envoy: EnvoyProcess | None = None
        self._envoy_budget = RestartBudget()
        self.env: dict[str, str] = {}
        self.out = out or sys.stdout

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def start(self, timeout: float = 90.0) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ensure_local_secret(self.data_dir / "auth-secret")
        clients = client_credentials(self.data_dir)
        self.env = {
            **os.environ,
            "TRAINYARD_DATA_DIR": str(self.data_dir),
            "TRAINYARD_AUTH_CLIENTS": json.dumps(clients),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.setdefault("TRAINYARD_LOG_FORMAT", "json")
        try:
            for phase in PHASES:
                for name in phase:
                    self.children[name] = ServiceProcess(
                        name,
                        self.run_dir,
                        self.env,
                        host=self.host,
                        log_path=self.log_dir / f"{name}.log",
                    )
                    self.children[name].spawn()
                for name in phase:
                    self.children[name].await_ready(timeout)
                    self.env[f"TRAINYARD_{name.upper()}_ADDRESS"] = (
                        self.children[name].address or ""
                    )
            self._start_envoy(self.http_port, timeout)
            assert self.envoy is not None
            self.envoy.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self.write_endpoints()

    def endpoints(self) -> dict[str, Any]:
        """Where everything answers now: addresses, Envoy's admin URL and the live pids."""
        assert self.envoy is not None
        return {
            "http": f"http://{self.host}:{self.envoy.http_port}",
            "admin": self.envoy.admin_url,
            "grpc": {name: c.address for name, c in self.children.items()},
            "grpc_gateway": f"{self.host}:{self.envoy.http_port}",
            "data_dir": str(self.data_dir),
            "logs": str(self.log_dir),
            "client_id": CLI_CLIENT_ID,
            "pids": {name: c.proc.pid if c.proc else None for name, c in self.children.items()},
            "envoy_pid": self.envoy.proc.pid if self.envoy.proc else None,
        }

    def write_endpoints(self) -> dict[str, Any]:
        """(Re)write DATA_DIR/endpoints.json atomically; called at start and after restarts."""
        endpoints = self.endpoints()
        with atomic_write(self.data_dir / "endpoints.json", mode=0o644) as fh:
            fh.write(json.dumps(endpoints, indent=2).encode())
        return endpoints

    def _start_envoy(self, http_port: int, timeout: float) -> None:
        upstreams = {name: c.address or "" for name, c in self.children.items()}
        self.envoy = EnvoyProcess(
            render(upstreams, http_host=self.host, http_port=http_port, admin_port=self.admin_port),
            self.run_dir,
        )
        self.envoy.start(timeout)

    def supervise_once(self) -> None:
        """Restart services and Envoy that died, on the same ports, within the restart budget
        (RESTART_BUDGET a minute each); rewrite endpoints.json after any restart. While a dead
        process waits for budget, say so every WAITING_NOTICE_SECONDS."""
        restarted = False
        envoy = self.envoy
        code = envoy.proc.poll() if envoy is not None and envoy.proc is not None else None
        if code is not None and self._envoy_budget.may_restart("envoy", code, self._say):
            assert envoy is not None
            try:
                self._start_envoy(envoy.http_port or self.http_port, 60)
                restarted = True
            except (RuntimeError, TimeoutError) as exc:
                self._say(f"envoy failed to restart: {exc}")
        for child in self.children.values():
            if child.proc is None or child.proc.poll() is None:
                continue
            if not child.budget.may_restart(child.name, child.proc.returncode, self._say):
                continue
            child.spawn()
            try:
                child.await_ready(60)
                restarted = True
            except (RuntimeError, TimeoutError) as exc:
                self._say(f"{child.name} failed to restart: {exc}")
        if restarted and self.envoy is not None:
            self.write_endpoints()

    def stop(self, grace: float = 15.0) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        stop_processes([c.proc for c in self.children.values() if c.proc], grace)

    def run_forever(self) -> None:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            while not stop.wait(SUPERVISE_INTERVAL_SECONDS):
                self.supervise_once()
        finally:
            self._say("stopping Trainyard ...")
            self.stop()
            self._say("stopped")
