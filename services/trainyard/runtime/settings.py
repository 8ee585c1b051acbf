"""Typed settings. Every variable starts with TRAINYARD_; defaults make the embedded mode work."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainyard.catalogue import CATALOGUE

# Derived from the one list of services (trainyard/catalogue.py).
SERVICE_NAMES = tuple(s.name for s in CATALOGUE)

DEFAULT_PORTS = {s.name: s.default_port for s in CATALOGUE}


class CommonSettings(BaseSettings):
    """Settings every service shares (TRAINYARD_*)."""

    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", extra="ignore")

    data_dir: Path = Field(
        default=Path(".data"),
        description="Directory for SQLite files, local blobs, logs and the embedded auth secret.",
    )
    auth_secret: SecretStr | None = Field(
        default=None,
        description="HS256 key for tokens; unset means a random key kept in DATA_DIR/auth-secret.",
    )
    auth_jwks_url: str | None = Field(
        default=None, description="Verify user tokens against this OIDC JWKS URL as well."
    )
    auth_issuer: str = "trainyard"
    auth_audience: str | None = None
    auth_clients: dict[str, str] = Field(
        default_factory=dict,
        description="OAuth2 clients for POST /connect/token as a JSON object client_id -> secret.",
    )
    token_ttl_seconds: int = 3600
    call_deadline_seconds: float = Field(
        default=15.0,
        gt=0,
        description="Deadline of a service-to-service call with one response (runtime.clients).",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL shared by services without their own."
    )
    database_schema: str | None = Field(
        default=None, description="PostgreSQL schema (search_path) for every service's tables."
    )
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: str = "info"
    # One per catalogue entry (tests/test_catalogue.py checks): typed fields, not generated.
    upload_address: str = f"127.0.0.1:{DEFAULT_PORTS['upload']}"
    orchestrator_address: str = f"127.0.0.1:{DEFAULT_PORTS['orchestrator']}"
    jobrunner_address: str = f"127.0.0.1:{DEFAULT_PORTS['jobrunner']}"
    finetuning_address: str = f"127.0.0.1:{DEFAULT_PORTS['finetuning']}"
    clustering_address: str = f"127.0.0.1:{DEFAULT_PORTS['clustering']}"

    def resolved_auth_secret(self) -> str:
        """The HS256 key: the configured one, or one kept (and created once) in the data dir."""
        if self.auth_secret is not None:
            return self.auth_secret.get_secret_value()
        return ensure_local_secret(self.data_dir / "auth-secret")

    def address_of(self, service: str) -> str:
        value: str = getattr(self, f"{service}_address")
        return value


class ServiceSettings(BaseSettings):
    """Settings of one service process (TRAINYARD_<SERVICE>_*)."""

    model_config = SettingsConfigDict(extra="ignore")

    host: str = "127.0.0.1"
    port: int | None = None
    database_url: str | None = None
    grace_seconds: float = 10.0
    metrics_port: int | None = Field(
        default=None, description="Serve Prometheus metrics on this port (0 = any free port)."
    )


def database_url_for(service: str, common: CommonSettings, own: ServiceSettings) -> str:
    """The service's own URL, else the shared one, else a SQLite file in the data dir."""
    if own.database_url:
        return own.database_url
    if common.database_url:
        return common.database_url
    make_data_dir(common.data_dir)
    return f"sqlite+aiosqlite:///{(common.data_dir / f'{service}.db').resolve()}"


def make_data_dir(path: Path) -> Path:
    """Create the data dir. Others may pass through it (a workload reaches its own work
    directory under jobs/), never list it; what it holds is private to the platform's user."""
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # not ours to change
        path.chmod(0o711)
    return path


def make_private(path: Path) -> None:
    """Make an existing file the platform user's alone (mode 0600), e.g. one an older version
    created readable by all."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)


def ensure_local_secret(path: Path) -> str:
    """Read the secret at path, creating it (mode 0600) on first use."""
    import secrets

    try:
        value = path.read_text().strip()
        make_private(path)
        return value
    except FileNotFoundError:
        pass
    make_data_dir(path.parent)
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value
