"""Child processes that never outlive their parent (Linux PR_SET_PDEATHSIG)."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    # Looked up once, in the parent: the child between fork and exec of a process with other
    # threads (gRPC's) may only do what is safe there. `ctypes.util.find_library` runs
    # `ldconfig` in a subprocess, which crashed such children (Envoy "exited with -11").
    return ctypes.CDLL("libc.so.6", use_errno=True).prctl


_prctl = _load_prctl()


def die_with_parent() -> None:
    """preexec_fn: deliver SIGTERM to this child when the parent dies (no-op off Linux). It
    does nothing but one system call, so it is safe in the child of a multithreaded parent."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
