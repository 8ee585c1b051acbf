"""Database connections: which URIs a user may register, and their encryption at rest.

A URI is any SQLAlchemy URL of sqlite, postgresql or mysql/mariadb, with the few query options
the workload library allows (`trainyard.trainers.finetuning.schema.sync_url`). On top of that:
- a sqlite file must lie under the configured root for user databases (a path resolved with
  its symbolic links, so a link cannot point out of it), and is never one of the suite's own
  database files;
- a server URI never names the suite's own database (same host, port and database).

The stored URI is encrypted with Fernet under a key derived (HKDF-SHA256) from the
finetuning service's encryption key; answers carry only the masked form.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from trainyard.runtime.errors import FieldViolation, Internal, InvalidArgument
from trainyard.trainers.finetuning import DatabaseUnreachable
from trainyard.trainers.finetuning.schema import sync_url

_HKDF_INFO = b"trainyard finetuning connection uri v1"
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


class UriCipher:
    """Encrypts and decrypts connection URIs."""

    def __init__(self, key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
            key.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, uri: str) -> str:
        return self._fernet.encrypt(uri.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken as exc:
            raise Internal(
                "a stored connection URI cannot be decrypted: the finetuning service's "
                "encryption key changed; register the connection again",
                reason="CONNECTION_KEY_CHANGED",
            ) from exc


def _refuse(message: str) -> InvalidArgument:
    return InvalidArgument(
        message,
        reason="CONNECTION_URI_NOT_ALLOWED",
        violations=[FieldViolation("connection_uri", message)],
    )


_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}

#: What every address of this machine is compared as: 127.0.0.0/8, ::1, 0.0.0.0, localhost and
#: no host at all (a local Unix socket) all reach the same local server.
_LOCAL = "local"


def _resolve(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses a host name (or literal) reaches; OSError when it does not resolve."""
    infos = socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        out.append(ip)
    return out


def _addresses(host: str | None) -> frozenset[str]:
    """The addresses a host name reaches, loopback ones folded into one."""
    if not host or host.lower() in ("localhost", "localhost."):
        return frozenset({_LOCAL})
    try:
        found = _resolve(host)
    except (OSError, UnicodeError):
        return frozenset({host.lower()})
    return frozenset(_LOCAL if ip.is_loopback or ip.is_unspecified else str(ip) for ip in found)


def _check_host(url: URL, allowed: Sequence[str]) -> None:
    """With an operator's list of allowed hosts and networks, the URL's host must be one of the
    names, or resolve only to addresses inside the networks."""
    if not allowed:
        return
    host = (url.host or "localhost").lower()
    names = {a.lower() for a in allowed if not _is_network(a)}
    if host in names:
        return
    networks = [ipaddress.ip_network(a, strict=False) for a in allowed if _is_network(a)]
    try:
        found = _resolve("127.0.0.1" if host == "localhost" else host)
    except (OSError, UnicodeError):
        found = []
    if not found or not all(any(ip in net for net in networks) for ip in found):
        raise _refuse(
            f"database host {host[:100]!r} is not one this platform may connect to "
            "(TRAINYARD_FINETUNING_DATABASE_HOSTS); ask the operator which hosts are allowed"
        )


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _same_database(a: URL, b: URL) -> bool:
    """Whether two server URLs name the same database on the same server, however spelled
    (driver, host name or address, default port)."""
    families = []
    for url in (a, b):
        backend = url.get_backend_name()
        families.append("mysql" if backend in ("mysql", "mariadb") else backend)
    if families[0] != families[1] or (a.database or "") != (b.database or ""):
        return False
    default = _DEFAULT_PORTS.get(families[0])
    if (a.port or default) != (b.port or default):
        return False
    return bool(_addresses(a.host) & _addresses(b.host))


def check_uri(
    uri: str,
    *,
    databases_root: Path,
    suite_databases: Iterable[str],
    allowed_hosts: Sequence[str] = (),
) -> URL:
    """The parsed URL of a URI a user may register; INVALID_ARGUMENT saying why otherwise.
    `allowed_hosts` (host names and CIDR networks; empty: any) limits where a server URI may
    point."""
    try:
        url = sync_url(uri)
    except DatabaseUnreachable as exc:
        raise _refuse(str(exc)) from exc
    own: list[URL] = []
    for text in suite_databases:
        try:
            own.append(make_url(text))
        except (ArgumentError, ValueError):
            continue
    if url.get_backend_name() == "sqlite":
        _check_sqlite(url, databases_root, own)
        return url
    _check_host(url, allowed_hosts)
    for suite in own:
        if suite.get_backend_name() != "sqlite" and _same_database(suite, url):
            raise _refuse("the connection URI names the platform's own database")
    return url


def _check_sqlite(url: URL, root: Path, own: list[URL]) -> None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise _refuse("a sqlite connection needs the absolute path of a database file")
    path = Path(database)
    if not path.is_absolute():
        raise _refuse("a sqlite path must be absolute (sqlite:////folder/file.db)")
    resolved = path.resolve()
    top = root.resolve()
    if resolved == top or not resolved.is_relative_to(top):
        raise _refuse(
            "a sqlite database must lie in the folder for user databases "
            "(TRAINYARD_FINETUNING_USER_DATABASES_ROOT); ask the operator where that is"
        )
    for suite in own:
        if suite.get_backend_name() != "sqlite" or not suite.database:
            continue
        theirs = Path(suite.database).resolve()
        if any(resolved == Path(f"{theirs}{suffix}") for suffix in SQLITE_SUFFIXES):
            raise _refuse("the connection URI names one of the platform's own database files")
