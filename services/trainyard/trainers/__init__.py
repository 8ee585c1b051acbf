"""Trainers: the programs a training job runs, one module per kind.

Each is a plain entry point, `python -m trainyard.trainers.<kind>`, run by the job-runner as a
local process or in a Kubernetes pod: it loads its config (trainyard.workload.config), reports
status, progress, warnings and errors (trainyard.workload.reporter), writes its artifacts
(trainyard.workload.artifacts) and exits non-zero on failure. Like trainyard.workload, a trainer
imports nothing from any service or database module; its ML core is a library function tested
on small data without a server.

`echo` is the example and the end-to-end check of that path. The real kinds (nlp-text,
nlp-token, ndb, datagen, clustering) come as `trainyard.trainers.nlp_text`, ... beside it.
"""
