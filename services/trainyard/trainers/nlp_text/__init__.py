"""The nlp-text trainer: `python -m trainyard.trainers.nlp_text` trains a text classifier.

Data: CSV files (`model_options.text_column`, `label_column`, `delimiter`; read row by row with
the csv module: quoted fields, `\\r\\n`, a BOM), or with `doc_classification: true` documents in
category folders (`<category>/<file>`: txt, pdf, docx, html; or a zip whose members are
`<category>/<file>`). More distinct labels than `model_options.n_target_classes` fail the run.

Model (`model.py`): hashed word uni+bigram TF-IDF (sublinear tf, smoothed IDF, L2) and one
linear layer whose softmax gives the predicted probabilities. Two ways to fit it:
- data that fits in memory (at most batch_size * max_in_memory_batches training rows), no base
  model: NB-SVM (one-vs-rest LinearSVC on features scaled by naive-Bayes log-count ratios, an
  exact optimum: epochs and learning_rate do not apply), margins calibrated by one softmax
  temperature. In the bench it beats TF-IDF + LinearSVC and fastText on macro-F1.
- larger data, or a `base_model` to continue: softmax regression by mini-batch (lazy) Adam,
  warm-started from the base model's weights (same features; new labels added with zero
  weights, IDF statistics summed).

Train options and how they map (Adam; the in-memory fit uses only the memory bound):
    epochs                 passes over the training data (default 5)
    learning_rate          per-sample step: Adam's step size is learning_rate * batch_size, as
                           the gradient is a batch mean (default 0.0001 -> 0.1 at batch 1000)
    batch_size             rows per Adam step (default 1000)
    max_in_memory_batches  data of at most batch_size * max_in_memory_batches rows is trained
                           in memory; larger data is read again for each epoch, that many rows
                           at a time (default 20)
    test_split             fraction of the supervised rows held out (seeded hash of the row's
                           position) for the report (default 0); test_files are evaluated too

Artifacts under `models/<model_id>/`: `model` (model.json + .npy arrays, data only; see
`inference.py`) and `report` (report.json: data, parameters, time and, with test data,
accuracy, macro and per-class precision/recall/F1, confusion matrix, misclassified examples).
"""
