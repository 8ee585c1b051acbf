"""The layering (README "Layout"): the import-linter contracts in pyproject.toml hold, each of
them can fail, they name every layer, and a service started alone does not load the CLI."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trainyard.catalogue import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sysconfig.get_path("scripts")) / "lint-imports"
CHECK = runpy.run_path(str(ROOT / "scripts" / "check.py"))
lint_imports_env: Callable[[], dict[str, str]] = CHECK["lint_imports_env"]

Contract = dict[str, Any]


def contracts() -> dict[str, Contract]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def lint(config: Path, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    run = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "--config", str(config)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return run.returncode, run.stdout + run.stderr


def test_the_codebase_keeps_every_contract() -> None:
    code, out = lint(ROOT / "pyproject.toml", ROOT, lint_imports_env())
    assert code == 0, out
    assert f"Contracts: {len(contracts())} kept, 0 broken." in out, out


def test_contracts_name_every_layer() -> None:
    """A new service (an entry in the catalogue) must join the contracts, or it would be free to
    import its neighbours."""
    by_id = contracts()
    services = {f"trainyard.{s.name}" for s in CATALOGUE}
    assert set(by_id["services-independent"]["modules"]) == services
    assert set(by_id["services-no-cli"]["source_modules"]) == services
    assert services | {"trainyard.cli", "trainyard.suite", "trainyard.gateway"} <= set(
        by_id["shared-code"]["forbidden_modules"]
    )
    assert set(by_id["shared-code"]["source_modules"]) == {"trainyard.runtime", "trainyard.blobs"}
    workload = by_id["workload-code"]
    assert set(workload["source_modules"]) == {"trainyard.workload", "trainyard.trainers"}
    assert services | {"trainyard.runtime.db", "sqlalchemy", "alembic"} <= set(
        workload["forbidden_modules"]
    )
    assert by_id["generated-code"]["source_modules"] == ["trainyard.api"]
    hand_written = {
        f"trainyard.{p.stem}"
        for p in (ROOT / "services" / "trainyard").iterdir()
        if not p.name.startswith(("_", "."))
        and (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
    }
    assert hand_written == set(by_id["generated-code"]["forbidden_modules"])


def _rename(module: str) -> str:
    """trainyard.x -> fakeyard.x: the contracts, applied to a throwaway package tree."""
    return (
        "fakeyard" + module.removeprefix("trainyard") if module.startswith("trainyard") else module
    )


def _violation(contract: Contract) -> tuple[str, str]:
    """(importer, imported): one import the contract forbids."""
    if contract["type"] == "independence":
        return contract["modules"][0], contract["modules"][-1]
    forbidden = [m for m in contract["forbidden_modules"] if m.startswith("trainyard")]
    return contract["source_modules"][-1], forbidden[-1]


@pytest.mark.parametrize("contract_id", sorted(contracts()))
def test_each_contract_breaks_on_a_forbidden_import(tmp_path: Path, contract_id: str) -> None:
    """The configured contract (not a copy written for the test) fails on a tree that has every
    module it names and exactly one forbidden import, and passes on the same tree without it."""
    contract = contracts()[contract_id]
    names = {
        _rename(m)
        for key in ("modules", "source_modules", "forbidden_modules")
        for m in contract.get(key, [])
        if m.startswith("trainyard")
    }
    for name in names:
        package = tmp_path.joinpath(*name.split("."))
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").touch()
    # The contract's exceptions name real modules, which the fake tree does not have.
    renamed = {
        key: [_rename(m) for m in value] if isinstance(value, list) else value
        for key, value in contract.items()
        if key != "ignore_imports"
    }
    config = tmp_path / "importlinter.toml"
    lines = ["[tool.importlinter]", 'root_packages = ["fakeyard"]']
    lines += ["include_external_packages = true", "", "[[tool.importlinter.contracts]]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in renamed.items()]
    config.write_text("\n".join(lines) + "\n")

    code, out = lint(config, tmp_path)
    assert code == 0, out

    importer, imported = (_rename(m) for m in _violation(contract))
    tmp_path.joinpath(*importer.split("."), "__init__.py").write_text(f"import {imported}\n")
    code, out = lint(config, tmp_path)
    assert code != 0, out
    assert "BROKEN" in out and imported in out, out


def test_the_database_ban_reaches_third_party_packages(tmp_path: Path) -> None:
    """sqlalchemy in the workload contract is a real package, not only a name: a trainer that
    imports it breaks the contract."""
    contract = contracts()["workload-code"]
    assert "sqlalchemy" in contract["forbidden_modules"]
    for name in ("fakeyard.trainers", "fakeyard.workload"):
        package = tmp_path.joinpath(*name.split("."))
        package.mkdir(parents=True)
        (package / "__init__.py").touch()
    (tmp_path / "fakeyard" / "trainers" / "__init__.py").write_text("import sqlalchemy.orm\n")
    config = tmp_path / "importlinter.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["fakeyard"]\n'
        "include_external_packages = true\n\n"
        "[[tool.importlinter.contracts]]\n"
        'name = "workload"\n'
        'type = "forbidden"\n'
        'source_modules = ["fakeyard.trainers", "fakeyard.workload"]\n'
        'forbidden_modules = ["sqlalchemy", "alembic"]\n'
    )
    code, out = lint(config, tmp_path)
    assert code != 0, out
    assert "fakeyard.trainers -> sqlalchemy" in out, out


# What `python -m trainyard.<service>` loads to serve: its argument parser, then (serve) the
# service's builder and settings from the catalogue and the server runtime. One process loads the
# services one after another (a process each costs seconds of imports): the first service whose
# list is not empty is the one that brought the CLI in.
_PROBE = """
import json, runpy, sys
from trainyard import services
from trainyard.runtime.server import main_for
cli_only = {cli_only!r}
loaded = {{}}
for name in {names!r}:
    sys.argv = [f"python -m trainyard.{{name}}", "--help"]
    try:
        runpy.run_module(f"trainyard.{{name}}", run_name="__main__")
    except SystemExit:
        pass
    services.builder(name), services.settings_class(name)
    loaded[name] = {{
        "app": f"trainyard.{{name}}.app" in sys.modules,
        "cli": sorted(
            m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in cli_only)
        ),
    }}
print(json.dumps(loaded))
"""

_CLI_ONLY = ("typer", "click", "trainyard.cli", "trainyard.suite", "trainyard.gateway")


def test_a_service_alone_does_not_load_the_cli() -> None:
    names = [s.name for s in CATALOGUE]
    run = subprocess.run(
        [sys.executable, "-c", _PROBE.format(cli_only=_CLI_ONLY, names=names)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = json.loads(run.stdout.splitlines()[-1])  # after the --help texts
    # The probe really loaded each service: its app module is there.
    assert {name: entry["app"] for name, entry in loaded.items()} == dict.fromkeys(names, True)
    assert {name: entry["cli"] for name, entry in loaded.items()} == {name: [] for name in names}
