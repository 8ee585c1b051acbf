"""The finetuning workload library (issue 12): NL-to-SQL fine-tuning through an OpenAI-compatible
provider, evaluated on the user's own database.

`run(config, report)` is the workload's work (the service's `__main__` calls it). config keys:
finetuning_id, connection_uri (with password), schemas (list or None), train_records and
eval_records ([{id, question, sql_query}]), base_llm {model_provider "openai", model_name,
model_parameters {n_epochs, batch_size, learning_rate_multiplier (number or "auto")}}, provider
{base_url, api_key}, poll_interval_seconds (default 5), eval {row_limit (1000), timeout_seconds
(10)}, and optionally context_window_tokens (the per-example token limit; default the base
model's).

`report(update)` receives any subset of: status (validating_files | queued | running | succeeded
| failed | cancelled), provider_file_id, provider_job_id, model_id, error, evaluation
{execution_accuracy, exact_match, total, failures [{question, golden_sql, generated_sql, error}]},
metadata (a dict to merge into the finetuning's metadata).
"""

from trainyard.trainers.finetuning.run import FinetuningError, run
from trainyard.trainers.finetuning.schema import (
    DatabaseSchema,
    DatabaseUnreachable,
    TableInfo,
    describe_database,
    mask_password,
)
from trainyard.trainers.finetuning.sql import check_read_only, normalise, tables_read

__all__ = [
    "DatabaseSchema",
    "DatabaseUnreachable",
    "FinetuningError",
    "TableInfo",
    "check_read_only",
    "describe_database",
    "mask_password",
    "normalise",
    "run",
    "tables_read",
]
