"""finetuning: the finetuning service: database connections, golden records, LLM finetuning jobs."""
