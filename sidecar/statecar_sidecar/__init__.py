"""statecar's sidecar: the Dapr state HTTP API on localhost, backed by the namespace's components."""

__version__ = "0.1.0"
