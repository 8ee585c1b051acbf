"""What a user may put in a workload's environment: the one definition of the rules.

Every route that lets a caller choose environment variables (the /training-jobs hyperparameters,
SubmitJob's spec.env) checks them here before anything is stored. The rules:

- a name is a valid environment variable name (letters, digits, '_', not starting with a digit);
- a name is not reserved: names that change how a process starts (the dynamic loader, shells,
  interpreters) or that the platform sets itself are refused (RESERVED_NAMES, RESERVED_PREFIXES);
  matched exactly, as Linux does: `path` is an ordinary name, `PATH` is refused;
- no name or value contains a NUL byte (it cannot be part of an environment);
- each value is at most MAX_VALUE_BYTES (Linux's MAX_ARG_STRLEN: a longer one makes exec fail);
- all of them together (`NAME=value\\0` each) are at most MAX_TOTAL_BYTES.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from trainyard.runtime.errors import FieldViolation

#: Exact names that are refused.
RESERVED_NAMES: tuple[str, ...] = (
    "PATH",
    "HOME",
    "SHELL",
    "IFS",
    "ENV",
    "BASH_ENV",
    "CDPATH",
    "LANG",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "NLSPATH",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "_JAVA_OPTIONS",
)
#: Name prefixes that are refused (`PYTHON` covers PYTHONPATH, PYTHONHOME, PYTHONSTARTUP, ...).
RESERVED_PREFIXES: tuple[str, ...] = (
    "PYTHON",
    "LD_",
    "DYLD_",
    "MALLOC_",
    "PERL5",
    "RUBY",
    "TRAINYARD_",
    "KUBERNETES_",
    "OPENAI_",
    "AWS_",
)
#: The most bytes one value may have (Linux MAX_ARG_STRLEN, 32 pages).
MAX_VALUE_BYTES = 128 * 1024
#: The most bytes all user variables may have together, counted as `NAME=value\0` each.
MAX_TOTAL_BYTES = 1024 * 1024

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def reserved(name: str) -> bool:
    """Whether `name` is one the platform keeps for itself."""
    return name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES)


def reserved_rule() -> str:
    """The reserved names, as the error messages and docs list them."""
    return ", ".join([*RESERVED_NAMES, *(p + "*" for p in RESERVED_PREFIXES)])


def env_violations(
    env: Mapping[str, str],
    field: Callable[[str], str] = lambda name: name,
    total_field: str = "env",
) -> list[FieldViolation]:
    """Every rule `env` breaks, one violation per variable and rule; `field` names the field
    of a variable in the request (e.g. `spec.env['X']`), `total_field` the whole map."""
    problems: list[FieldViolation] = []
    total = 0
    for name, value in env.items():
        if "\0" in name:
            problems.append(FieldViolation(field(name), "contains a NUL byte"))
        elif not _ENV_NAME.fullmatch(name):
            problems.append(
                FieldViolation(
                    field(name),
                    "is not a valid environment variable name "
                    "(letters, digits, '_', not starting with a digit)",
                )
            )
        elif reserved(name):
            problems.append(
                FieldViolation(
                    field(name),
                    "is a reserved name: names that change how a process starts or that the "
                    f"platform sets are refused ({reserved_rule()})",
                )
            )
        if "\0" in value:
            problems.append(FieldViolation(field(name), "its value contains a NUL byte"))
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_VALUE_BYTES:
            problems.append(
                FieldViolation(
                    field(name),
                    f"its value is {size} bytes; at most {MAX_VALUE_BYTES} (128 KiB) are allowed",
                )
            )
        total += len(name.encode("utf-8", "surrogatepass")) + 1 + size + 1
    if total > MAX_TOTAL_BYTES:
        problems.append(
            FieldViolation(
                total_field,
                f"all variables together are {total} bytes (NAME=value plus one byte each); "
                f"at most {MAX_TOTAL_BYTES} (1 MiB) are allowed",
            )
        )
    return problems
