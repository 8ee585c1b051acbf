"""Child processes that never outlive their parent (Linux PR_SET_PDEATHSIG).

The parent death signal is set by `setpriv --pdeathsig` (util-linux) between our fork and the
child's program, never by Python code in the child: a `preexec_fn` makes subprocess fork the
whole multithreaded interpreter and run Python there, and with gRPC's threads about that child
crashed now and then before its exec (Envoy "exited with -6/-11"). Without preexec_fn,
subprocess uses vfork/posix_spawn and runs nothing of ours in between.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence

_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def with_parent_death(command: Sequence[str], signal_name: str = "TERM") -> list[str]:
    """`command`, started so that it gets SIG<signal_name> when its parent dies (Linux with
    util-linux's setpriv; elsewhere the command as it is, and the parent's own shutdown
    stops its children)."""
    if _SETPRIV is None:
        return list(command)
    return [_SETPRIV, "--pdeathsig", signal_name, "--", *command]
