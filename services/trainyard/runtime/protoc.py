"""The one protoc run of the build scripts (gen/python, the OpenAPI document): every contract
under a proto root, with the vendored googleapis and protobuf's well-known types on the path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc_tools
from grpc_tools import protoc


def contract_files(protos: Path) -> list[str]:
    """Every .proto under `protos`, relative to it (their import paths), in a stable order."""
    return sorted(str(p.relative_to(protos)) for p in protos.rglob("*.proto"))


def run_protoc(protos: Path, googleapis: Path, options: Sequence[str]) -> None:
    """protoc (grpcio-tools' own, so its version is the pinned one) over every contract under
    `protos` with `options` (outputs, plugins); RuntimeError when it fails (it has printed why)."""
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{protos}",
        f"-I{googleapis}",
        f"-I{well_known}",
        *options,
        *contract_files(protos),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; its messages are above")
