"""NL-to-SQL finetuning through an OpenAI-compatible provider: the workload's library.

`run(config, report)` builds the training file from golden records and the database's schema
(schema.py, prompt.py), runs the provider's fine-tuning job to its end, and evaluates the fine-
tuned model on held-out records against the user's own database (evaluation.py). sql.py holds
the read-only query check the finetuning service also applies to golden records."""

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
