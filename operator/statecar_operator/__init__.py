"""
statecar's operator: the StateStoreComponent reconciler and the sidecar injector (kopf).

Layering: the pure decisions (`injection`, `rendering`, `conditions`, `leader.decide`) import
neither kopf nor a Kubernetes client (an import-linter contract enforces it for the first three);
`kube` is the only module that talks to the API server; `handlers` is the only one that registers
kopf handlers; `main` wires them together.
"""

from statecar_contract import __version__ as __version__
