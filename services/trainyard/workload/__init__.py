"""What code running *inside* a workload (a trainer) uses to talk to the platform.

`config` loads the job's config (TRAINYARD_CONFIG file, TRAINYARD_CONFIG_JSON inline or
TRAINYARD_CONFIG_URI blob URI),
`reporter` reports status, progress, warnings and errors to the orchestrator with the job's
token, `inputs` makes the job's input files readable on local disk, `relay` reads inputs and
artifacts through the orchestrator for a trainer it started (`storage_for`), `artifacts` writes
and reads the workload's artifacts in blob storage, all or nothing; `entry.run_trainer` is the
skeleton every trainer's entry point shares.

A workload is an untrusted neighbour of the platform, run the same as a local process or in a
Kubernetes pod: this package imports nothing from any service (upload, orchestrator,
jobrunner, finetuning, clustering) nor any database module, only the blob library and the
generated contracts (tests/workload/test_isolation.py checks it).
"""

from trainyard.workload.artifacts import (
    ArtifactCorrupt,
    ArtifactFile,
    ArtifactNotFound,
    Artifacts,
    ArtifactWriter,
    Manifest,
)
from trainyard.workload.config import (
    CONFIG_JSON_VAR,
    CONFIG_PATH_VAR,
    CONFIG_URI_VAR,
    ConfigError,
    load_config,
    parse_config,
    read_config_file,
    read_config_uri,
)
from trainyard.workload.entry import Preload, Written, publish_model, run_trainer
from trainyard.workload.inputs import InputError, InputFile, fetch_inputs
from trainyard.workload.relay import OrchestratorBlobStorage, RelayError, storage_for
from trainyard.workload.reporter import (
    JOB_TOKEN_VAR,
    ORCHESTRATOR_ADDRESS_VAR,
    Reporter,
    ReportError,
    ThrottledProgress,
)

__all__ = [
    "CONFIG_JSON_VAR",
    "CONFIG_PATH_VAR",
    "CONFIG_URI_VAR",
    "JOB_TOKEN_VAR",
    "ORCHESTRATOR_ADDRESS_VAR",
    "ArtifactCorrupt",
    "ArtifactFile",
    "ArtifactNotFound",
    "ArtifactWriter",
    "Artifacts",
    "ConfigError",
    "InputError",
    "InputFile",
    "Manifest",
    "OrchestratorBlobStorage",
    "Preload",
    "RelayError",
    "ReportError",
    "Reporter",
    "ThrottledProgress",
    "Written",
    "fetch_inputs",
    "load_config",
    "parse_config",
    "publish_model",
    "read_config_file",
    "read_config_uri",
    "run_trainer",
    "storage_for",
]
