"""Workload code imports nothing of the platform's servers: loaded in a fresh interpreter,
trainyard.workload and the trainers bring in no service package and no database module."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = (
    "trainyard.upload",
    "trainyard.orchestrator",
    "trainyard.jobrunner",
    "trainyard.finetuning",
    "trainyard.clustering",
    "trainyard.gateway",
    "trainyard.runtime.db",
    # sqlalchemy itself is not here: the finetuning trainer reads the user's own database with
    # it (sync drivers). The import-linter contract (pyproject) allows that one package only;
    # the platform's database layer, migrations and async drivers stay out of every trainer.
    "alembic",
    "asyncpg",
    "aiosqlite",
)


def test_workload_and_trainers_import_no_service_or_database_module() -> None:
    code = (
        "import json, pkgutil, sys, importlib\n"
        "import trainyard.workload, trainyard.trainers\n"
        "for m in pkgutil.iter_modules(trainyard.trainers.__path__):\n"
        "    importlib.import_module('trainyard.trainers.' + m.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout)
    assert "trainyard.trainers.echo" in loaded and "trainyard.workload.reporter" in loaded
    leaked = [m for m in loaded if m.startswith(FORBIDDEN)]
    assert leaked == [], f"workload code pulled in platform modules: {leaked}"
