"""statecar's sidecar: the Dapr state HTTP API on localhost, backed by the namespace's components."""

from statecar_contract import __version__ as __version__
