"""One server factory and one service lifecycle for every Trainyard service."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from trainyard.runtime.auth import TokenAuthority
from trainyard.runtime.background import Background
from trainyard.runtime.files import atomic_write
from trainyard.runtime.interceptors import ServiceInterceptor, Validator
from trainyard.runtime.logging import configure_logging
from trainyard.runtime.settings import CommonSettings, ServiceSettings

log = structlog.get_logger("trainyard.server")

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: Metadata a call may carry. Above what Envoy lets through (32 KiB of request headers, plus the
#: x-envoy-original-path copy of a URL of up to 4 KiB and Envoy's own headers), so a request Envoy
#: accepts never meets gRPC's metadata limit, whose RESOURCE_EXHAUSTED Envoy would turn into 429
#: (the soft limit rejects at random between it and the hard one: both are set alike).
MAX_METADATA_BYTES = 128 * 1024

SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_metadata_size", MAX_METADATA_BYTES),
    ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    # A fixed 4 MiB receive window per stream instead of BDP-probed growth: Envoy (with its
    # 16/32 MiB windows) otherwise fills the service's buffers faster than a streaming upload
    # is stored, and RSS grows by ~90 MiB for nothing; throughput stays the same.
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 4 * 1024 * 1024),
)


@dataclass(frozen=True)
class Registration:
    """One gRPC service: the generated `add_*Servicer_to_server` function and its servicer."""

    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    full_name: str


@dataclass
class App:
    """What a service contributes to its process: servicers, validators and lifecycle hooks."""

    name: str
    registrations: Sequence[Registration]
    validators: Mapping[str, Validator] = field(default_factory=dict)
    on_start: Callable[[], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    #: Called once the server is serving, with the address it listens on (host:port).
    on_serving: Callable[[str], Awaitable[None]] | None = None
    #: The service's domain objects, for introspection by tests and tools.
    state: dict[str, Any] = field(default_factory=dict)
    #: Background work (sweeps, follow loops): what `build` registers here starts once the
    #: server is serving (after `on_serving`) and is stopped before the server stops.
    background: Background = field(init=False)

    def __post_init__(self) -> None:
        self.background = Background(self.name)


async def create_server(
    address: str,
    registrations: Iterable[Registration],
    authority: TokenAuthority,
    validators: Mapping[str, Validator] | None = None,
) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    """A grpc.aio server with health, reflection and the Trainyard interceptor, bound to
    `address` (port 0 picks a free port). Returns (server, bound port, health servicer)."""
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(authority, validators)], options=SERVER_OPTIONS
    )
    regs = list(registrations)
    for reg in regs:
        _load_service_descriptor(reg.full_name)
        reg.add_to_server(reg.servicer, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [reg.full_name for reg in regs]
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health


def _load_service_descriptor(full_name: str) -> None:
    """Import the module that defines `full_name`, so its descriptor (and the auth_policy options
    the interceptor reads) is in the default pool: `*_pb2_grpc` modules import only the messages.
    Convention: service `trainyard.api.<svc>.v1.X` is in `trainyard/api/<svc>/v1/service.proto`."""
    package = full_name.rsplit(".", 1)[0]
    importlib.import_module(f"{package}.service_pb2")
    descriptor_pool.Default().FindServiceByName(full_name)  # KeyError if the convention breaks


def callback_address(advertise: str | None, listening: str) -> str:
    """Where workloads reach a service: `advertise` when set, else the listening address with
    a wildcard host read as 127.0.0.1."""
    if advertise:
        return advertise
    host, _, port = listening.rpartition(":")
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "127.0.0.1"
    return f"{host}:{port}"


def authority_from(common: CommonSettings) -> TokenAuthority:
    return TokenAuthority(
        common.resolved_auth_secret(),
        issuer=common.auth_issuer,
        audience=common.auth_audience,
        jwks_url=common.auth_jwks_url,
        default_ttl=common.token_ttl_seconds,
    )


async def run_app(
    app: App,
    common: CommonSettings,
    own: ServiceSettings,
    *,
    default_port: int,
    ready_file: Path | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve `app` until SIGTERM/SIGINT (or `stop`), then shut down gracefully: health goes
    NOT_SERVING, the server stops accepting and drains for grace_seconds, then hooks close."""
    authority = authority_from(common)
    if app.on_start is not None:
        await app.on_start()
    port = own.port if own.port is not None else default_port
    server, bound, health = await create_server(
        f"{own.host}:{port}", app.registrations, authority, app.validators
    )
    if own.metrics_port is not None:
        from prometheus_client import start_http_server

        metrics_server, _ = start_http_server(own.metrics_port, addr=own.host)
        metrics_port = metrics_server.server_address[1]
    else:
        metrics_port = None
    await server.start()
    address = f"{own.host}:{bound}"
    log.info("service.started", service=app.name, address=address, metrics_port=metrics_port)
    if app.on_serving is not None:
        await app.on_serving(address)
    app.background.start()
    if ready_file is not None:
        ready = {"service": app.name, "address": address, "pid": os.getpid()}
        with atomic_write(ready_file, mode=0o644) as fh:
            fh.write(json.dumps(ready).encode())
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("service.stopping", service=app.name, grace_seconds=own.grace_seconds)
    await health.enter_graceful_shutdown()
    # Before the server stops: a follow loop or sweep must not outlive what it uses, and
    # in-flight RPCs still drain for the full grace period below.
    await app.background.stop()
    await server.stop(own.grace_seconds)
    if app.on_stop is not None:
        await app.on_stop()
    log.info("service.stopped", service=app.name)


def main_for(
    name: str,
    build: Callable[[CommonSettings, Any], Awaitable[App]],
    settings_cls: type[ServiceSettings],
    default_port: int,
    host: str | None = None,
    port: int | None = None,
    ready_file: Path | None = None,
) -> None:
    """Entry point used by `trainyard serve NAME` and `python -m trainyard.NAME`."""
    os.umask(0o077)  # every file a service writes (databases, blobs, logs) is its own alone
    common = CommonSettings()
    own = settings_cls()
    if host is not None:
        own.host = host
    if port is not None:
        own.port = port
    configure_logging(common.log_format, common.log_level)
    structlog.contextvars.bind_contextvars(service=name)

    async def go() -> None:
        app = await build(common, own)
        await run_app(app, common, own, default_port=default_port, ready_file=ready_file)

    asyncio.run(go())
