"""Generate gen/python from protos/ (messages, gRPC stubs and .pyi stubs).

    python scripts/gen_protos.py           # regenerate gen/python
    python scripts/gen_protos.py --check   # fail if gen/python differs from what protos/ generate

Proto paths equal Python import paths (protos/trainyard/api/x/v1/y.proto ->
trainyard.api.x.v1.y_pb2), so nothing is rewritten. google/api and google/rpc come from
googleapis-common-protos at run time and are never generated here.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from trainyard.runtime.protoc import run_protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GOOGLEAPIS = ROOT / "third_party" / "googleapis"
OUT = ROOT / "gen" / "python"
BIN = Path(sysconfig.get_path("scripts"))


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run_protoc(
        PROTOS,
        GOOGLEAPIS,
        [
            f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
        ],
    )
    # PEP 561 marker so mypy reads the generated stubs.
    (out / "trainyard" / "api" / "py.typed").write_text("")


def differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out: list[str] = []

    def walk(c: filecmp.dircmp[str], rel: str) -> None:
        out.extend(f"only in gen/python: {rel}{n}" for n in c.left_only)
        out.extend(f"missing from gen/python: {rel}{n}" for n in c.right_only)
        out.extend(f"stale: {rel}{n}" for n in c.diff_files)
        for name, sub in c.subdirs.items():
            walk(sub, f"{rel}{name}/")

    walk(cmp, "")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if gen/python is stale")
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.out:
        generate(ns.out)
        return 0
    if ns.check:
        with tempfile.TemporaryDirectory() as tmp:
            # In a child process: the mypy plugin chatters on stderr for every file.
            done = subprocess.run(
                [sys.executable, __file__, "--out", tmp], capture_output=True, text=True
            )
            if done.returncode != 0:
                print(done.stdout, done.stderr, sep="\n")
                return done.returncode
            diff = differences(OUT, Path(tmp))
        if diff:
            print("gen/python is stale; run ./dev gen and commit:", *diff, sep="\n  ")
            return 1
        print("gen/python is up to date")
        return 0
    if OUT.exists():
        shutil.rmtree(OUT)
    generate(OUT)
    print(f"generated {sum(1 for _ in OUT.rglob('*.py'))} modules into {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
