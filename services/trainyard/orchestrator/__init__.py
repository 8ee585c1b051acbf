"""training-orchestrator: the Model Bazaar train API, the model registry and token issuing."""
