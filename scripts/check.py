"""The whole check, as `./dev test` and CI run it: buf lint, buf breaking, generated-code drift,
ruff, mypy, then pytest (last, so its summary closes the output). Extra args go to pytest."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sysconfig.get_path("scripts"))


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


def steps() -> list[tuple[str, list[str]]]:
    out = [("buf lint", [str(BIN / "buf"), "lint"])]
    base = breaking_base()
    if base:
        out.append(
            (
                f"buf breaking against {base[:12]}",
                [str(BIN / "buf"), "breaking", "--against", f".git#ref={base}"],
            )
        )
    else:
        print("== buf breaking: no earlier contract to compare with")
    out += [
        ("generated code drift", [sys.executable, "scripts/gen_protos.py", "--check"]),
        ("OpenAPI drift", [sys.executable, "scripts/gen_openapi.py", "--check"]),
        ("deploy/ drift", [sys.executable, "scripts/gen_deploy.py", "--check"]),
        ("ruff check", [str(BIN / "ruff"), "check", "services", "tests", "scripts", "bench"]),
        (
            "ruff format",
            [str(BIN / "ruff"), "format", "--check", "services", "tests", "scripts", "bench"],
        ),
        ("mypy", [str(BIN / "mypy")]),
    ]
    return out


def main() -> int:
    failed = []
    for name, cmd in steps():
        print(f"== {name}", flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
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
