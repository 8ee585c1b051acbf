"""The whole check, as `./dev test` and CI run it: buf lint, buf breaking, generated-code drift,
ruff, mypy, lint-imports, then pytest (last, so its summary closes the output). Extra args go to
pytest."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sysconfig.get_path("scripts"))


def lint_imports_env() -> dict[str, str]:
    """The environment `lint-imports` needs. The editable install maps `trainyard.api` onto
    gen/python with an import hook, which grimp (it scans the namespace's directories) does not
    see: with both roots on PYTHONPATH, `trainyard` spans gen/python and services as a plain
    namespace package. tests/test_layering.py runs it the same way."""
    roots = [str(ROOT / "gen" / "python"), str(ROOT / "services")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(roots)}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def breaking_base() -> str | None:
    """Compare with main's merge base; on main itself, with the previous commit. None when
    there is nothing to compare with (no history, or the base predates the protos)."""
    head = git("rev-parse", "HEAD")
    main = git("rev-parse", "--verify", "-q", "main") or git(
        "rev-parse", "--verify", "-q", "origin/main"
    )
    base = git("merge-base", "HEAD", main) if main else ""
    if not base or base == head:
        base = git("rev-parse", "--verify", "-q", "HEAD~1")
    if not base:
        return None
    if not git("ls-tree", "--name-only", base, "buf.yaml"):
        return None
    return base


Step = tuple[str, list[str], dict[str, str] | None]


def steps() -> list[Step]:
    out: list[Step] = [("buf lint", [str(BIN / "buf"), "lint"], None)]
    base = breaking_base()
    if base:
        out.append(
            (
                f"buf breaking against {base[:12]}",
                [str(BIN / "buf"), "breaking", "--against", f".git#ref={base}"],
                None,
            )
        )
    else:
        print("== buf breaking: no earlier contract to compare with")
    out += [
        ("generated code drift", [sys.executable, "scripts/gen_protos.py", "--check"], None),
        ("OpenAPI drift", [sys.executable, "scripts/gen_openapi.py", "--check"], None),
        ("deploy/ drift", [sys.executable, "scripts/gen_deploy.py", "--check"], None),
        (
            "ruff check",
            [str(BIN / "ruff"), "check", "services", "tests", "scripts", "bench"],
            None,
        ),
        (
            "ruff format",
            [str(BIN / "ruff"), "format", "--check", "services", "tests", "scripts", "bench"],
            None,
        ),
        ("mypy", [str(BIN / "mypy")], None),
        (
            "lint-imports",
            [str(BIN / "lint-imports"), "--no-cache", "--no-logo"],
            lint_imports_env(),
        ),
    ]
    return out


def main() -> int:
    failed = []
    for name, cmd, env in steps():
        print(f"== {name}", flush=True)
        if subprocess.run(cmd, cwd=ROOT, env=env).returncode != 0:
            failed.append(name)
    print(
        f"== static checks: {'FAILED: ' + ', '.join(failed) if failed else 'all passed'}",
        flush=True,
    )
    print("== pytest", flush=True)
    code = subprocess.run([sys.executable, "-m", "pytest", *sys.argv[1:]], cwd=ROOT).returncode
    if failed:
        print(f"static checks failed: {', '.join(failed)}")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
