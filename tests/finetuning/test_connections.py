"""The rule that no user connection names the platform's own database, however the URI spells
the same server: another driver, host name or loopback address, the default port written out."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.finetuning.connections import check_uri
from trainyard.runtime.errors import InvalidArgument

SUITE = [
    "postgresql+asyncpg://trainyard:pw@127.0.0.1/platform",
    "mysql+aiomysql://u@db.local/suite",
]


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://trainyard:pw@127.0.0.1/platform",
        "postgresql+psycopg://someone@localhost:5432/platform",
        "postgresql://x@[::1]/platform",
        "postgresql://x@127.0.0.2/platform",
        "postgresql://x@0.0.0.0:5432/platform",
        "postgresql:///platform",  # a local Unix socket
        "postgres://x@LOCALHOST/platform",
    ],
)
def test_the_suites_server_database_is_refused_however_spelled(tmp_path: Path, uri: str) -> None:
    with pytest.raises(InvalidArgument, match="platform's own database"):
        check_uri(uri, databases_root=tmp_path, suite_databases=SUITE)


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://x@127.0.0.1/shop",  # another database on the same server
        "postgresql://x@127.0.0.1:6543/platform",  # another server (port)
        "mysql://x@127.0.0.1/platform",  # another kind of server
    ],
)
def test_other_databases_are_allowed(tmp_path: Path, uri: str) -> None:
    assert check_uri(uri, databases_root=tmp_path, suite_databases=SUITE).database


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("postgresql://x@127.0.0.1/shop", True),  # inside 127.0.0.0/8
        ("postgresql://x@localhost/shop", True),
        ("mysql://x@db.internal/shop", True),  # a name on the list
        ("postgresql://x@10.9.8.7/shop", False),
        ("postgresql://x@[::1]/shop", False),  # ::1 is not in the IPv4 network
        ("postgresql://x@no-such-host.invalid/shop", False),
    ],
)
def test_the_operators_host_list_limits_where_a_connection_points(
    tmp_path: Path, uri: str, allowed: bool
) -> None:
    hosts = ["127.0.0.0/8", "db.internal"]
    if allowed:
        check_uri(uri, databases_root=tmp_path, suite_databases=[], allowed_hosts=hosts)
    else:
        with pytest.raises(InvalidArgument, match="not one this platform may connect to"):
            check_uri(uri, databases_root=tmp_path, suite_databases=[], allowed_hosts=hosts)


def test_without_a_host_list_any_host_is_accepted(tmp_path: Path) -> None:
    assert check_uri("postgresql://x@10.9.8.7/shop", databases_root=tmp_path, suite_databases=[])
