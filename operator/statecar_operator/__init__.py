"""
statecar's operator: the StateStoreComponent reconciler and the sidecar injector (kopf).

The folders say what each part does; `pyproject.toml` `[tool.importlinter]` enforces the layers,
highest first (a layer imports only those below it):

    app             the composition root: settings -> client -> parts -> kopf
    handlers        the kopf handlers (with `app` and `webhook_tls.server`, the only kopf users)
    memo            the shared objects every handler receives
    reconciliation  the Lease holder's loop, component status, reachability, the wiring Secret
    webhook_tls     webhook certificates: issuing, rotation, caBundle, sources, the TLS server
    health_server   /healthz, /readyz and /metrics
    cluster         the API client (the only kubernetes_asyncio user), the Lease, Events
    injection       the injector's pure decisions, also run offline by `statecar inject`
    manifests       RBAC and webhook configurations, as data
    settings        STATECAR_OPERATOR_* read once

Pure decisions (`injection`, `manifests`, the reconciler's `conditions`, `component_index` and
`wiring_secret`, the certificate logic, `cluster.leader.decide`) import neither kopf nor a
Kubernetes client. The command line (`statecar operator`, `statecar inject`) is
`statecar_cli`'s: this package takes typed settings, never argv.
"""

from statecar_contract import __version__ as __version__
