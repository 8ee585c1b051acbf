"""jobrunner: the job-runner: workloads on local processes or Kubernetes Jobs, logs, events, reconcile."""
