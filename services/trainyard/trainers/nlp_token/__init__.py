"""The nlp-token trainer: a linear-chain CRF that tags whitespace-split tokens.

Input: CSVs (`,`-delimited, UTF-8, quoted fields) whose `source_column` holds space-separated
tokens and `target_column` as many space-separated tags. Tags are the `target_labels`, plain
(`PER`) or in BIO form (`B-PER`, `I-PER`), and `default_tag` (default "O") for the rest;
other tags become the default tag (one warning with counts), rows whose counts differ are
skipped (one warning naming the first rows).

Model: python-crfsuite's L-BFGS CRF (c1 = c2 = 0.1) over rich token features (`features`:
word, lowercase, prefixes and suffixes 1-4, shape, title/upper/digit flags, URL/mention/
hashtag kind, neighbours ±2, word bigrams). The artifact the platform serves is data only:
the weights exported to JSON + `.npy` and decoded by NumPy Viterbi (`inference`).

Train options, mapped to the CRF:
    epochs          L-BFGS's max_iterations (one iteration is one pass over the data; crfsuite
                    may stop earlier when it converges). Unset: 100, not the proto's 5, which
                    suits a neural net's epochs but leaves L-BFGS far from converged.
    learning_rate   not used: L-BFGS chooses its step by line search (the report says so).
    batch_size * max_in_memory_batches
                    the most rows held in Python at once; rows stream from the CSV into
                    crfsuite's training set (which crfsuite keeps in its own memory: L-BFGS
                    needs the whole set each iteration), the hold-out streams to disk.
    test_split      fraction of supervised rows held out (seeded) when no test_files are given.

Report: `before_train_metrics` (the base model's on the test data; all zero for a new model),
`after_train_metrics` per target label (token-level precision/recall/F1) plus `overall`
(span-level, seqeval: exact span and type; and token accuracy), `after_train_examples` per
label: up to 5 true positives, false positives and false negatives `{token, sentence}`.

With a base model: training starts again from the base model's training sentences (its `data`
artifact) plus the new data, with the base's columns and labels plus the new labels:
crfsuite cannot start L-BFGS from given weights, and retraining on all data gives the model a
continued training would approximate.
"""
