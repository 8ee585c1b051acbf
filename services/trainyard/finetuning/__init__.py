"""finetuning: the finetuning service: database connections, golden records and LLM finetuning jobs."""
