"""Settings of the training-orchestrator (TRAINYARD_ORCHESTRATOR_*).

Artifacts (trained models, reports) live in blob storage: the shared TRAINYARD_STORAGE_BACKEND /
TRAINYARD_S3_* settings, each overridable here (TRAINYARD_ORCHESTRATOR_STORAGE_BACKEND, ...).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from trainyard.blobs import StorageOverrides
from trainyard.runtime.settings import CommonSettings, ServiceSettings


class OrchestratorSettings(ServiceSettings, StorageOverrides):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_ORCHESTRATOR_", extra="ignore")

    token_max_failures: int = Field(
        default=30,
        ge=1,
        description="POST /connect/token: failed attempts allowed per client_id and per source "
        "address within token_failure_window_seconds; more get 429 with Retry-After.",
    )
    token_failure_window_seconds: float = Field(default=60.0, gt=0)
    token_failure_max_keys: int = Field(
        default=10_000, ge=1, description="Clients and sources tracked at once (bounded memory)."
    )

    local_roots: list[Path] = Field(
        default_factory=list,
        description='Folders whose files a train request may name with {"location": "local"} '
        "(a JSON list). Empty by default: local paths are refused until an operator allows a "
        "root. Paths are resolved (symlinks followed) and must stay inside a root.",
    )
    s3_input_locations: list[str] = Field(
        default_factory=list,
        description='S3 buckets or prefixes ("bucket" or "bucket/prefix/", a JSON list) a '
        'train request may name with {"location": "s3"}, read with the orchestrator\'s S3 '
        "settings and credentials. Empty by default: S3 inputs are refused (403). The "
        "platform's own storage (its uploads and artifacts) is never an input.",
    )
    artifacts_root: Path | None = Field(
        default=None,
        description="Local storage backend: where models' artifacts live; default "
        "DATA_DIR/artifacts.",
    )
    max_allocation_cores: int = Field(
        default=16, ge=1, description="Largest job_options.allocation_cores a request may ask."
    )
    max_allocation_memory_mb: int = Field(
        default=65_536, ge=1, description="Largest job_options.allocation_memory (MB)."
    )
    default_allocation_cores: int = Field(default=1, ge=1)
    default_allocation_memory_mb: int = Field(default=2000, ge=1)
    trainer_image: str = Field(
        default="trainyard:latest",
        description="Container image of the trainers (Kubernetes backend): deploy/ builds one "
        "image holding the services and the trainers.",
    )
    trainer_python: str = Field(
        default="python",
        description="The interpreter that runs `-m trainyard.trainers.<kind>`; `python` is the "
        "job-runner's own on the local backend, the image's on Kubernetes.",
    )
    training_deadline_seconds: int = Field(
        default=24 * 3600, ge=60, description="A training workload is stopped after this long."
    )
    advertise_address: str | None = Field(
        default=None,
        description="The address trainers call back (host:port); default the address this "
        "process listens on (0.0.0.0 read as 127.0.0.1). In Kubernetes: the Service's DNS name.",
    )
    log_tail_lines: int = Field(
        default=100, ge=1, le=10_000, description="GET .../logs: lines per allocation."
    )
    predict_cache_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=0,
        description="Memory bound of the loaded-model cache for predict and search (least "
        "recently used models are dropped first; the one used last stays loaded).",
    )
    model_cache_dir: Path | None = Field(
        default=None,
        description="Where loaded ndb models' index files are kept while cached (downloaded "
        "from blob storage, memory-mapped); default DATA_DIR/model-cache. It is emptied when "
        "the orchestrator starts: give it a folder of its own.",
    )
    ndb_max_feedback_per_model: int = Field(
        default=10_000,
        ge=1,
        description="Most feedback entries (upvotes, associations, implicit events) kept per "
        "ndb model; more are refused with 422 until the model is retrained.",
    )
    ndb_retrain_feedback_bytes: int = Field(
        default=768 * 1024,
        ge=1024,
        le=900 * 1024,
        description="Most bytes of feedback (JSON) an ndb-retrain hands its trainer inline (a "
        "workload's config holds at most 1 MiB); beyond it the newest feedback that fits is "
        "used and the new model's status warns how much was left out.",
    )
    predict_workers: int = Field(
        default=2, ge=1, description="Threads that load models and answer predict calls."
    )
    max_model_bytes: int = Field(
        default=2 * 1024 * 1024 * 1024,
        ge=1,
        description="Largest model artifact predict loads (bigger answers 422).",
    )

    # ---- datagen and token feedback (issue 11) ----
    openai_api_key: SecretStr | None = Field(
        default=None,
        # The first alias found wins: the own variable, then OPENAI_API_KEY (which is also
        # how the keyword openai_api_key reads, env names being case-insensitive).
        validation_alias=AliasChoices("TRAINYARD_ORCHESTRATOR_OPENAI_API_KEY", "openai_api_key"),
        description="The key of the OpenAI-compatible provider datagen uses (OPENAI_API_KEY is "
        "honoured too). Unset or empty: datagen uses its offline provider. It reaches a "
        "training workload in the platform's part of its config, never in the model's record.",
    )
    openai_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="Base URL of the OpenAI-compatible chat-completions API.",
    )
    openai_model: str = Field(default="gpt-4o-mini", description="The chat model datagen asks.")
    llm_max_attempts: int = Field(
        default=4, ge=1, le=20, description="Attempts per provider call (429, 5xx, timeouts)."
    )
    llm_retry_initial_seconds: float = Field(
        default=1.0, gt=0, le=60, description="First backoff between attempts (doubling)."
    )
    llm_timeout_seconds: float = Field(default=60.0, gt=0, description="Per provider call.")
    llm_concurrency: int = Field(default=4, ge=1, le=64, description="Provider calls at once.")
    retrain_generated_sentences: int = Field(
        default=200,
        ge=0,
        le=100_000,
        description="nlp-token-retrain with an llm_provider: sentences generated from the "
        "feedback and added to the training data.",
    )
    token_feedback_weight: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="nlp-token-retrain: how many times each feedback sentence counts in the "
        "training data (it corrects a model trained on much more data).",
    )
    max_token_feedback_per_model: int = Field(
        default=10_000, ge=1, description="Feedback sentences kept per nlp-token model."
    )

    def llm_platform(self) -> dict[str, str | int | float]:
        """The LLM settings a datagen workload gets (empty without a key)."""
        key = self.openai_api_key.get_secret_value() if self.openai_api_key else ""
        if not key:
            return {}
        return {
            "provider": "openai",
            "base_url": self.openai_base_url,
            "model": self.openai_model,
            "api_key": key,
            "max_attempts": self.llm_max_attempts,
            "retry_initial_seconds": self.llm_retry_initial_seconds,
            "timeout_seconds": self.llm_timeout_seconds,
            "concurrency": self.llm_concurrency,
        }

    @field_validator("s3_input_locations", mode="after")
    @classmethod
    def _s3_locations(cls, locations: list[str]) -> list[str]:
        for text in locations:
            bucket = text.removeprefix("s3://").partition("/")[0]
            if not bucket or any(c.isspace() for c in text):
                raise ValueError(f"S3 input location {text!r} must be bucket or bucket/prefix/")
        return locations

    @field_validator("local_roots", mode="after")
    @classmethod
    def _absolute_roots(cls, roots: list[Path]) -> list[Path]:
        for root in roots:
            if not root.is_absolute():
                raise ValueError(f"local root {str(root)!r} must be an absolute path")
        return roots

    def model_cache_dir_for(self, common: CommonSettings) -> Path:
        return (
            self.model_cache_dir
            if self.model_cache_dir is not None
            else common.data_dir / "model-cache"
        )

    def artifacts_root_for(self, common: CommonSettings) -> Path:
        return (
            self.artifacts_root
            if self.artifacts_root is not None
            else common.data_dir / "artifacts"
        )
