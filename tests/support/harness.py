"""Test harness: real services in-process on ephemeral ports (in a background event loop) and a
real Envoy in front of them. No fixed ports, no sleeps for readiness."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc

from trainyard.gateway.config import render
from trainyard.gateway.process import EnvoyProcess
from trainyard.runtime.auth import TokenAuthority
from trainyard.runtime.server import App, Registration, create_server

T = TypeVar("T")

TEST_SECRET = "test-secret-for-trainyard-tests-0123456789"


class LoopThread:
    """An asyncio loop in a daemon thread, so sync tests can drive async servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class RunningServer:
    def __init__(self, server: grpc.aio.Server, port: int, app: App | None) -> None:
        self.server = server
        self.port = port
        self.app = app

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class Harness:
    """Starts Apps or bare registrations on port 0 and Envoy in front of them."""

    def __init__(self, workdir: Path, authority: TokenAuthority | None = None) -> None:
        self.workdir = workdir
        self.authority = authority or TokenAuthority(TEST_SECRET)
        self.loop = LoopThread()
        self.servers: dict[str, RunningServer] = {}
        self.envoy: EnvoyProcess | None = None

    def start_app(self, name: str, app: App, port: int = 0) -> RunningServer:
        """Start `app` on `port` (0: a free one; a restarted service takes its old port)."""

        async def go() -> RunningServer:
            if app.on_start is not None:
                await app.on_start()
            server, bound, _ = await create_server(
                f"127.0.0.1:{port}", app.registrations, self.authority, app.validators
            )
            await server.start()
            if app.on_serving is not None:
                await app.on_serving(f"127.0.0.1:{bound}")
            app.background.start()
            return RunningServer(server, bound, app)

        running = self.loop.run(go())
        self.servers[name] = running
        return running

    def start_registrations(
        self, name: str, registrations: Iterable[Registration]
    ) -> RunningServer:
        return self.start_app(name, App(name=name, registrations=list(registrations)))

    def start_envoy(self, upstreams: Mapping[str, str] | None = None) -> EnvoyProcess:
        ups = dict(upstreams or {n: s.address for n, s in self.servers.items()})
        self.envoy = EnvoyProcess(render(ups, http_port=0), self.workdir / "envoy")
        self.envoy.start()
        self.envoy.wait_healthy()
        return self.envoy

    @property
    def http(self) -> str:
        assert self.envoy is not None and self.envoy.http_port is not None
        return f"http://127.0.0.1:{self.envoy.http_port}"

    def stop_server(self, name: str, grace: float = 0.5) -> None:
        running = self.servers.pop(name)

        async def go() -> None:
            if running.app is not None:
                await running.app.background.stop()
            await running.server.stop(grace)
            if running.app is not None and running.app.on_stop is not None:
                await running.app.on_stop()

        self.loop.run(go())

    def close(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        for name in list(self.servers):
            self.stop_server(name, grace=0)
        self.loop.close()

    def user_headers(self, user: str = "alice") -> dict[str, str]:
        return {"authorization": f"Bearer {self.authority.mint_user(user)}"}

    def job_headers(self, model_id: str, owner: str = "alice") -> dict[str, str]:
        return {"authorization": f"Bearer {self.authority.mint_job(owner, model_id=model_id)}"}

    def service_headers(self, service: str = "test") -> dict[str, str]:
        return {"authorization": f"Bearer {self.authority.mint_service(service)}"}
