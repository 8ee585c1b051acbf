"""The example trainer: `python -m trainyard.trainers.echo`.

It does what every trainer does, with no ML in between: loads its config, reports
in_progress and its progress, prints its message, records a warning if asked, writes an
artifact (`models/<model_id>/echo`: message.txt and the config it ran with), reports complete
and exits 0. A bad config exits 2 and a failure 1, each with one clear line on stderr.

Config (a JSON object):
    message        text to print and store (required, non-empty)
    repeat         how many times, 1..1000 (default 1)
    warning        a warning to record on the model (optional)
    model_id       where the artifact goes (default TRAINYARD_JOB_ID, else "echo")
    artifacts_uri  folder URI of the artifact storage (default file://<cwd>/artifacts/)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from trainyard.blobs import check_key
from trainyard.workload import (
    Artifacts,
    ConfigError,
    Reporter,
    Written,
    run_trainer,
    storage_for,
)

PROG = "trainyard.trainers.echo"
MAX_REPEAT = 1000
ARTIFACT = "echo"


@dataclass(frozen=True)
class EchoConfig:
    message: str
    repeat: int
    warning: str
    model_id: str
    artifacts_uri: str

    @classmethod
    def parse(cls, raw: Mapping[str, Any], environ: Mapping[str, str]) -> EchoConfig:
        """The config's fields; ConfigError listing every problem at once."""
        problems: list[str] = []
        message = raw.get("message")
        if not isinstance(message, str) or not message.strip():
            problems.append("message must be a non-empty string")
        repeat = raw.get("repeat", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int):
            problems.append("repeat must be an integer")
        elif not 1 <= repeat <= MAX_REPEAT:
            problems.append(f"repeat must be from 1 to {MAX_REPEAT}")
        warning = raw.get("warning", "")
        if not isinstance(warning, str):
            problems.append("warning must be a string")
        model_id = raw.get("model_id") or environ.get("TRAINYARD_JOB_ID") or "echo"
        if not isinstance(model_id, str) or "/" in model_id or not _is_key(model_id):
            problems.append("model_id must be one path segment (no '/', '.', '..')")
        default_uri = PurePath(os.path.abspath("artifacts")).as_uri() + "/"
        artifacts_uri = raw.get("artifacts_uri", default_uri)
        if not isinstance(artifacts_uri, str) or not artifacts_uri.endswith("/"):
            problems.append("artifacts_uri must be a folder URI ending in '/'")
        unknown = sorted(set(raw) - {"message", "repeat", "warning", "model_id", "artifacts_uri"})
        if unknown:
            problems.append(f"unknown field(s): {', '.join(unknown)}")
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(str(message), int(repeat), str(warning), str(model_id), str(artifacts_uri))


def _is_key(text: str) -> bool:
    try:
        check_key(text)
    except ValueError:
        return False
    return True


async def _echo(config: EchoConfig, reporter: Reporter) -> Written:
    for i in range(config.repeat):
        print(config.message, flush=True)
        await reporter.progress((i + 1) / config.repeat, "echo")
    if config.warning:
        await reporter.log("warning", config.warning)
    storage = storage_for(config.artifacts_uri)
    await storage.start()
    try:
        artifacts = Artifacts(storage, f"models/{config.model_id}/")
        manifest = await artifacts.write(
            ARTIFACT,
            {
                "message.txt": ((config.message + "\n") * config.repeat).encode(),
                "config.json": json.dumps(config.__dict__, sort_keys=True).encode(),
            },
            metadata={"repeat": config.repeat},
        )
        return Written(artifacts.uri(ARTIFACT), manifest.version)
    finally:
        await storage.close()


async def run(environ: Mapping[str, str]) -> int:
    return await run_trainer(PROG, environ, lambda raw: EchoConfig.parse(raw, environ), _echo)


def main() -> int:
    return asyncio.run(run(os.environ))


if __name__ == "__main__":
    sys.exit(main())
