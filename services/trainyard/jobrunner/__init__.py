"""jobrunner: workloads on local processes or Kubernetes Jobs, logs, events and reconcile."""
