"""Files written all at once or not at all.

Imports only the standard library's lightest modules: the job shim, which runs beside workloads
as `python -I` and must start fast and small, uses it too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(path: Path, *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: readers see the old content or the whole new one,
    never a part (a temp file beside it, flushed to disk, renamed over it on success). The temp
    file is new (O_EXCL) and never a link someone planted (O_NOFOLLOW); it gets `mode` (less the
    umask). On an exception it is removed and `path` is left as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
