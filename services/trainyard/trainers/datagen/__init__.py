"""The datagen trainer: `python -m trainyard.trainers.datagen` generates labelled data and
trains an nlp-token or nlp-text model on it, in the same workload.

nlp-datagen: from the request's `task_prompt`, `token_options` (tags with examples and
descriptions, sample sentences, `num_sentences_to_generate` (default 1000, raised to
`num_samples_per_tag` x tags when that is more), `templates_per_sample` (default 10)) or
`text_options` (labels with examples and descriptions, `samples_per_label`), a provider
generates rows (`offline`: templates + Faker values, seeded; `openai`: the chat-completions
API through the official SDK); they are shuffled (seeded) and `test_size` of them (default
0.1, rounded down) held out; the nlp-token or nlp-text trainer's own `train_and_write` trains
the model on the rest (evaluated on the held-out rows; `base_model` honoured), and the
generated rows are kept as the artifact `generated-data` (`train.csv`, `test.csv`; columns
source/target for tokens, text/label for text), downloadable from the model.

nlp-token-retrain: the base model's feedback sentences (exported by the orchestrator), each
counted `feedback_weight` times, plus `generate_sentences` generated from them when an
`llm_provider` is named, with `test_size` of each held out, train a new nlp-token model that
starts again from the base model's data (see nlp_token's doc).

The model's attributes say where its data came from: `datagen` (provider, rows, seed, split)
and, for a retraining, `feedback` (sentences, weight).
"""
