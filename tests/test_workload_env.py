"""The rules of what a user may put in a workload's environment (workload_env), and that both
routes that accept one (hyperparameters, SubmitJob's spec.env) apply them."""

from __future__ import annotations

import pytest

from tests.support.jobs import job_spec
from trainyard.jobrunner.runner import validate_spec
from trainyard.jobrunner.training_jobs import env_from
from trainyard.jobrunner.workload_env import (
    MAX_TOTAL_BYTES,
    MAX_VALUE_BYTES,
    RESERVED_NAMES,
    RESERVED_PREFIXES,
    env_violations,
    reserved,
)
from trainyard.runtime.errors import InvalidArgument

REFUSED = [
    "PATH",
    "HOME",
    "SHELL",
    "IFS",
    "ENV",
    "BASH_ENV",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "NODE_OPTIONS",
    "JAVA_TOOL_OPTIONS",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUNBUFFERED",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "DYLD_INSERT_LIBRARIES",
    "MALLOC_CHECK_",
    "PERL5LIB",
    "PERL5OPT",
    "RUBYOPT",
    "RUBYLIB",
    "TRAINYARD_AUTH_SECRET",
    "TRAINYARD_JOB_ID",
    "KUBERNETES_SERVICE_HOST",
    "OPENAI_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
]


@pytest.mark.parametrize("name", REFUSED)
def test_every_reserved_family_is_refused_by_name(name: str) -> None:
    assert reserved(name)
    with pytest.raises(InvalidArgument) as err:
        env_from({name: "x", "epochs": 3})
    assert [v.field for v in err.value.violations] == [name]
    assert "reserved" in err.value.violations[0].description
    assert repr(name) in err.value.message and "PYTHON*" in err.value.message


@pytest.mark.parametrize(
    "name", ["epochs", "learning_rate", "path", "home", "python_version", "MY_PATH", "XPYTHON"]
)
def test_ordinary_names_pass(name: str) -> None:
    """Names are matched exactly, as Linux's loader, shells and interpreters read them."""
    assert not reserved(name)
    assert env_from({name: 1}) == {name: "1"}


def test_the_lists_hold_the_brief_minimum() -> None:
    for name in ("PATH", "HOME", "SHELL", "IFS", "ENV", "BASH_ENV", "GCONV_PATH"):
        assert name in RESERVED_NAMES
    for name in ("NODE_OPTIONS", "JAVA_TOOL_OPTIONS"):
        assert name in RESERVED_NAMES
    for prefix in ("PYTHON", "LD_", "DYLD_", "MALLOC_", "PERL5", "RUBY", "TRAINYARD_"):
        assert prefix in RESERVED_PREFIXES
    for prefix in ("KUBERNETES_", "OPENAI_", "AWS_"):
        assert prefix in RESERVED_PREFIXES


def test_every_refused_key_is_named_at_once() -> None:
    with pytest.raises(InvalidArgument) as err:
        env_from({"PYTHONPATH": "/tmp", "LD_PRELOAD": "/x.so", "ok": 1, "bad name": 2})
    assert sorted(v.field for v in err.value.violations) == ["LD_PRELOAD", "PYTHONPATH", "bad name"]


def test_nul_bytes_are_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        env_from({"epochs": "3\0rm -rf"})
    assert err.value.violations[0].field == "epochs"
    assert "NUL" in err.value.violations[0].description
    assert env_violations({"A\0B": "x"})[0].description == "contains a NUL byte"


def test_a_value_may_have_128_kib_and_not_one_byte_more() -> None:
    assert env_from({"big": "x" * MAX_VALUE_BYTES})["big"] == "x" * MAX_VALUE_BYTES
    with pytest.raises(InvalidArgument) as err:
        env_from({"big": "x" * (MAX_VALUE_BYTES + 1)})
    assert err.value.violations[0].field == "big"
    assert "128 KiB" in err.value.violations[0].description
    # Bytes, not characters: 2-byte characters count twice.
    with pytest.raises(InvalidArgument):
        env_from({"big": "é" * (MAX_VALUE_BYTES // 2 + 1)})


def test_the_total_is_limited() -> None:
    each = MAX_VALUE_BYTES - 100
    count = MAX_TOTAL_BYTES // each + 1
    with pytest.raises(InvalidArgument) as err:
        env_from({f"v{i}": "x" * each for i in range(count)})
    assert [v.field for v in err.value.violations] == ["hyperparameters"]
    assert "1 MiB" in err.value.message
    fits = MAX_TOTAL_BYTES // each
    assert len(env_from({f"v{i}": "x" * each for i in range(fits)})) == fits


def test_submit_job_specs_obey_the_same_rules() -> None:
    """SubmitJob (service tokens) cannot bypass the rules the training-jobs API applies."""
    with pytest.raises(InvalidArgument) as err:
        validate_spec(
            job_spec(
                {"command": ["true"], "env": {"LD_PRELOAD": "/x.so", "A": "1\0", "GOOD": "1"}}
            ),
            "local",
        )
    assert sorted(v.field for v in err.value.violations) == [
        "spec.env['A']",
        "spec.env['LD_PRELOAD']",
    ]
    validate_spec(job_spec({"command": ["true"], "env": {"GOOD": "1"}}), "local")


def test_the_contract_and_the_readme_state_the_same_list() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proto = (root / "protos/trainyard/api/jobrunner/v1/messages.proto").read_text()
    readme = (root / "README.md").read_text()
    for name in RESERVED_NAMES:
        assert name in proto and f"`{name}`" in readme, name
    for prefix in RESERVED_PREFIXES:
        assert prefix in proto and f"`{prefix}`" in readme, prefix
    assert "131072 bytes" in proto and "1048576 bytes" in proto
