"""The five services by name: how to build each one's App and its settings."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from trainyard.runtime.server import App
from trainyard.runtime.settings import DEFAULT_PORTS, SERVICE_NAMES, CommonSettings, ServiceSettings

_SETTINGS = {
    "upload": "trainyard.upload.settings:UploadSettings",
    "orchestrator": "trainyard.orchestrator.settings:OrchestratorSettings",
    "jobrunner": "trainyard.jobrunner.settings:JobrunnerSettings",
    "finetuning": "trainyard.finetuning.settings:FinetuningSettings",
    "clustering": "trainyard.clustering.settings:ClusteringSettings",
}


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def settings_class(name: str) -> type[ServiceSettings]:
    cls: type[ServiceSettings] = _load(_SETTINGS[name])
    return cls


def builder(name: str) -> Callable[[CommonSettings, Any], Awaitable[App]]:
    if name not in SERVICE_NAMES:
        raise KeyError(f"unknown service {name!r}; one of {', '.join(SERVICE_NAMES)}")
    build: Callable[[CommonSettings, Any], Awaitable[App]] = _load(f"trainyard.{name}.app:build")
    return build


def default_port(name: str) -> int:
    return DEFAULT_PORTS[name]
