"""The job's config, as the platform hands it to a workload.

The job-runner sets one of three variables: TRAINYARD_CONFIG, the path of a JSON file it
wrote for the workload (the job spec's `config_json`, local backend); TRAINYARD_CONFIG_JSON,
that JSON itself (Kubernetes backend: the container's env takes it from the job's Secret by
reference); or TRAINYARD_CONFIG_URI, a `file://` or `s3://` URI (the spec's `config_uri`) read
here through trainyard.blobs. There is no precedence: a job spec has either `config_json` or
`config_uri`, so more than one set means a confused environment, and guessing which one was
meant could run a trainer on the wrong job's config; `load_config` refuses it. Either way the
config is one JSON object (at most MAX_READ_BYTES, the same rules for all three); anything else
is a `ConfigError` that says what is wrong and where, never what the config holds.

A config the orchestrator writes carries a `platform` section (the orchestrator's address and
the workload's job token): `load_config` takes it out, so a trainer never sees it, and keeps it
for `Reporter.from_env` (this process is the one workload the config belongs to); its optional
`llm` object (an LLM provider's base URL, model and key, from the orchestrator's settings, for
the trainers that generate data) is kept for `platform_llm()`. It travels in
the config file (mode 0600, the workload's own; a per-job Secret on Kubernetes), not in the
environment, so it shows in no process listing or pod spec.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from trainyard.blobs import BlobNotFound, StorageSettings, read_uri

#: The path of the job's config file.
CONFIG_PATH_VAR = "TRAINYARD_CONFIG"
#: The job's config itself, as JSON text.
CONFIG_JSON_VAR = "TRAINYARD_CONFIG_JSON"
#: The blob URI of the job's config.
CONFIG_URI_VAR = "TRAINYARD_CONFIG_URI"
_CONFIG_VARS = (CONFIG_PATH_VAR, CONFIG_JSON_VAR, CONFIG_URI_VAR)
#: The largest config a workload reads (the inline one is at most 1 MiB; one in blob storage
#: may be bigger, within reason: it is read whole into memory).
MAX_READ_BYTES = 64 * 1024 * 1024
#: The key of the platform's own part of a config.
PLATFORM_KEY = "platform"
#: `relay` = "orchestrator": inputs and artifacts go through the orchestrator (see relay.py);
#: `callback_address`: the service a workload reports to when it is not the orchestrator.
_PLATFORM_FIELDS = ("orchestrator_address", "callback_address", "job_token", "relay")
_platform: dict[str, str] = {}

#: The platform's LLM provider settings: a flat object of strings and numbers.
PLATFORM_LLM_KEY = "llm"
_platform_llm: dict[str, str | int | float] = {}


def platform_settings() -> dict[str, str]:
    """The platform section of the config `load_config` read last (empty when none)."""
    return dict(_platform)


def platform_llm() -> dict[str, str | int | float]:
    """The LLM provider settings of the platform section `load_config` read last (empty when
    the platform configured none)."""
    return dict(_platform_llm)


def _take_platform(config: dict[str, Any]) -> dict[str, Any]:
    section = config.pop(PLATFORM_KEY, None)
    if section is None:
        return config
    if not isinstance(section, dict) or not all(
        isinstance(section.get(k, ""), str) for k in _PLATFORM_FIELDS
    ):
        raise ConfigError(f"the config's {PLATFORM_KEY!r} section is malformed")
    llm = section.get(PLATFORM_LLM_KEY) or {}
    if not isinstance(llm, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
        for k, v in llm.items()
    ):
        raise ConfigError(f"the config's {PLATFORM_KEY}.{PLATFORM_LLM_KEY} section is malformed")
    _platform.clear()
    _platform.update({k: str(section[k]) for k in _PLATFORM_FIELDS if section.get(k)})
    _platform_llm.clear()
    _platform_llm.update(llm)
    return config


class ConfigError(Exception):
    """The job's config is missing, unreadable or not a JSON object."""


async def load_config(
    environ: Mapping[str, str] | None = None, settings: StorageSettings | None = None
) -> dict[str, Any]:
    """The job's config, from the file named by TRAINYARD_CONFIG, the JSON in
    TRAINYARD_CONFIG_JSON or the URI in TRAINYARD_CONFIG_URI (exactly one of them set)."""
    env = os.environ if environ is None else environ
    given = [name for name in _CONFIG_VARS if env.get(name, "")]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)} are set; expected exactly one")
    if not given:
        raise ConfigError(
            f"no config: none of {CONFIG_PATH_VAR} (a file), {CONFIG_JSON_VAR} (inline JSON) "
            f"or {CONFIG_URI_VAR} (a blob URI) is set; submit the job with spec.config_json "
            "or spec.config_uri"
        )
    if given[0] == CONFIG_PATH_VAR:
        return _take_platform(await read_config_file(Path(env[CONFIG_PATH_VAR])))
    if given[0] == CONFIG_JSON_VAR:
        return _take_platform(read_config_text(env[CONFIG_JSON_VAR]))
    return _take_platform(await read_config_uri(env[CONFIG_URI_VAR], settings))


def read_config_text(text: str) -> dict[str, Any]:
    """The JSON object in TRAINYARD_CONFIG_JSON's value. Bytes that were not UTF-8 in the
    environment come back as they were (surrogateescape), so they fail as in a file."""
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_READ_BYTES:
        raise ConfigError(f"the config in {CONFIG_JSON_VAR} is larger than {MAX_READ_BYTES} bytes")
    return parse_config(raw, f"in {CONFIG_JSON_VAR}")


async def read_config_file(path: Path) -> dict[str, Any]:
    """The JSON object in a local file."""
    return await read_config_uri(_file_uri(path), None, shown=str(path))


def _file_uri(path: Path) -> str:
    """file:// URI of a path, relative ones taken from the working directory."""
    return PurePath(os.path.abspath(path)).as_uri()


async def read_config_uri(
    uri: str, settings: StorageSettings | None = None, *, shown: str | None = None
) -> dict[str, Any]:
    """The JSON object a `file://` or `s3://` URI names."""
    where = shown or uri
    try:
        raw = await read_uri(uri, MAX_READ_BYTES, settings)
    except BlobNotFound as exc:
        raise ConfigError(f"the config {where} does not exist") from exc
    except ValueError as exc:
        raise ConfigError(f"cannot read the config {where}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the config {where}: {exc.strerror or exc}") from exc
    except RuntimeError as exc:  # S3: bucket not reachable
        raise ConfigError(f"cannot read the config {where}: {exc}") from exc
    return parse_config(raw, where)


def parse_config(raw: bytes, where: str = "config") -> dict[str, Any]:
    """A config's bytes as a JSON object; ConfigError naming the line and column otherwise."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the config {where} is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"the config {where} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    if not isinstance(value, dict):
        raise ConfigError(f"the config {where} must be a JSON object, not {type(value).__name__}")
    return value
