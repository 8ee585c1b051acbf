"""Workload backends: local processes (embedded default) and Kubernetes Jobs."""
