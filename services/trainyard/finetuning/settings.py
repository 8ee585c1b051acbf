"""Settings of the finetuning service (TRAINYARD_FINETUNING_*)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from trainyard.runtime.settings import CommonSettings, ServiceSettings, ensure_local_secret


class FinetuningSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_FINETUNING_", extra="ignore")

    provider_base_url: str | None = Field(
        default=None,
        description="The OpenAI-compatible provider's API base URL (files, fine_tuning.jobs, "
        "chat.completions); default the openai SDK's (OPENAI_BASE_URL, else api.openai.com).",
    )
    provider_api_key: SecretStr | None = Field(
        default=None,
        description="The provider's API key; default the OPENAI_API_KEY variable. Without one, "
        "finetunings are accepted and then fail saying that no provider key is configured.",
    )
    provider_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A read's refresh from the provider gives up after this."
    )
    poll_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often the workload asks the provider about its job."
    )
    encryption_key: SecretStr | None = Field(
        default=None,
        description="The key that encrypts connection URIs at rest (any string of 16+ "
        "characters); unset means a random key kept in DATA_DIR/finetuning-key.",
    )
    user_databases_root: Path | None = Field(
        default=None,
        description="A sqlite connection's file must lie under this folder; default "
        "DATA_DIR/user-databases. The suite's own database files are never allowed.",
    )
    database_hosts: list[str] = Field(
        default_factory=list,
        description="Where a server connection (postgresql, mysql) may point: host names and "
        'CIDR networks, e.g. ["db.internal", "10.20.0.0/16"]; a host must be one of '
        "the names or resolve only inside the networks. Empty allows any host the service "
        "can reach: set it wherever the platform's network holds databases users must not read.",
    )
    eval_share: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description="The share of a finetuning's golden records held out of training to "
        "evaluate the fine-tuned model on (at least eval_min_records; none when that would "
        "leave fewer than the provider's 10 for training).",
    )
    eval_min_records: int = Field(default=2, ge=1, description="The fewest held-out records.")
    eval_row_limit: int = Field(
        default=1000, ge=1, description="Rows read per query when comparing results."
    )
    eval_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A query of the evaluation is stopped after this."
    )
    max_golden_records_per_request: int = Field(
        default=1000, ge=1, description="Most golden records one POST may add."
    )
    max_question_chars: int = Field(default=4000, ge=16)
    max_sql_chars: int = Field(default=20000, ge=16)
    max_workload_attempts: int = Field(
        default=3,
        ge=1,
        description="A workload that ends without finishing its finetuning (killed, lost) is "
        "started again this many times in all; each resumes the same provider job.",
    )
    trainer_image: str = Field(default="trainyard:latest", description="Kubernetes backend.")
    trainer_python: str = Field(
        default="python", description="The interpreter that runs the finetuning workload."
    )
    trainer_cores: float = Field(default=0.5, gt=0)
    trainer_memory_mb: int = Field(default=1000, ge=100)
    training_deadline_seconds: int = Field(
        default=7 * 24 * 3600, ge=10, description="A provider's job may queue for days."
    )
    advertise_address: str | None = Field(
        default=None,
        description="The address the workload calls back (host:port); default the listening "
        "address (0.0.0.0 read as 127.0.0.1).",
    )

    def api_key(self) -> str:
        if self.provider_api_key is not None:
            return self.provider_api_key.get_secret_value()
        return os.environ.get("OPENAI_API_KEY", "")

    def databases_root(self, common: CommonSettings) -> Path:
        if self.user_databases_root is not None:
            return self.user_databases_root
        return common.data_dir / "user-databases"

    def resolved_encryption_key(self, common: CommonSettings) -> str:
        if self.encryption_key is not None:
            value = self.encryption_key.get_secret_value()
            if len(value) < 16:
                raise ValueError("TRAINYARD_FINETUNING_ENCRYPTION_KEY must be 16+ characters")
            return value
        return ensure_local_secret(common.data_dir / "finetuning-key")
