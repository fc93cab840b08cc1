"""LACE engine: orchestrator, pipeline, Deterministic Apply and storage. Knows nothing of gRPC."""
