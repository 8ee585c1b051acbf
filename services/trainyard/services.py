"""The services by name (trainyard/catalogue.py): how to build each one's App and settings."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from trainyard.catalogue import service
from trainyard.runtime.server import App
from trainyard.runtime.settings import CommonSettings, ServiceSettings


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def settings_class(name: str) -> type[ServiceSettings]:
    cls: type[ServiceSettings] = _load(service(name).settings)
    return cls


def builder(name: str) -> Callable[[CommonSettings, Any], Coroutine[Any, Any, App]]:
    """The service's `async def build(common, settings) -> App`."""
    build: Callable[[CommonSettings, Any], Coroutine[Any, Any, App]] = _load(service(name).builder)
    return build


def default_port(name: str) -> int:
    return service(name).default_port


def serve(
    name: str, host: str | None = None, port: int | None = None, ready_file: Path | None = None
) -> None:
    """Run service `name` in this process until SIGTERM (the settings come from the env)."""
    from trainyard.runtime.server import main_for

    main_for(
        name,
        builder(name),
        settings_class(name),
        default_port(name),
        host=host,
        port=port,
        ready_file=ready_file,
    )


def main(name: str, argv: Sequence[str] | None = None) -> None:
    """`python -m trainyard.<name> [--host H] [--port N] [--ready-file F]`: one service alone,
    without the CLI's imports (typer, the gateway, the suite)."""
    parser = argparse.ArgumentParser(prog=f"python -m trainyard.{name}")
    parser.add_argument("--host", help="listen address (default from settings)")
    parser.add_argument("--port", type=int, help="gRPC port; 0 picks a free one")
    parser.add_argument("--ready-file", type=Path, help="write {address} here once serving")
    ns = parser.parse_args(argv)
    serve(name, host=ns.host, port=ns.port, ready_file=ns.ready_file)
