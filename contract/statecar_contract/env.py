"""
Environment variable names shared by the injector (which sets them) and the sidecar (which reads them).

Dapr's names are honoured too, so apps and SDKs written for daprd find their port and token.
"""

from __future__ import annotations

from typing import Final

HTTP_PORT: Final = "STATECAR_HTTP_PORT"
GRPC_PORT: Final = "STATECAR_GRPC_PORT"
METRICS_PORT: Final = "STATECAR_METRICS_PORT"
APP_ID: Final = "STATECAR_APP_ID"
NAMESPACE: Final = "STATECAR_NAMESPACE"
COMPONENTS_PATH: Final = "STATECAR_COMPONENTS_PATH"
WIRING_FILE: Final = "STATECAR_WIRING_FILE"  # a wiring file, or a folder of them (merged)
API_TOKEN: Final = "STATECAR_API_TOKEN"
LOG_LEVEL: Final = "STATECAR_LOG_LEVEL"
LOG_JSON: Final = "STATECAR_LOG_JSON"
#: daprd's `spec.metrics.recordErrorCodes` (off by default, as in daprd).
RECORD_ERROR_CODES: Final = "STATECAR_RECORD_ERROR_CODES"
LISTEN_ADDRESS: Final = "STATECAR_LISTEN_ADDRESS"
#: Where the health and metrics port listens (default 0.0.0.0: the kubelet and Prometheus reach
#: it on the pod IP; `::` for IPv6 pods).
METRICS_ADDRESS: Final = "STATECAR_METRICS_ADDRESS"
#: Seconds a client has to send a request's headers, then its body (slow clients are closed).
READ_HEADER_TIMEOUT: Final = "STATECAR_READ_HEADER_TIMEOUT"
READ_BODY_TIMEOUT: Final = "STATECAR_READ_BODY_TIMEOUT"
#: Open connections each listener accepts; more are answered 503 and closed.
MAX_CONNECTIONS: Final = "STATECAR_MAX_CONNECTIONS"
METRICS_MAX_CONNECTIONS: Final = "STATECAR_METRICS_MAX_CONNECTIONS"
MAX_BODY_BYTES: Final = "STATECAR_MAX_BODY_BYTES"
#: µs the sidecar's event loop polls instead of sleeping when an answer is due soon (0: never).
BUSY_POLL_US: Final = "STATECAR_BUSY_POLL_US"
#: Seconds the calls in flight get on SIGTERM (daprd's --dapr-graceful-shutdown-seconds; default 5,
#: 0 no bound).
GRACEFUL_SHUTDOWN_SECONDS: Final = "STATECAR_GRACEFUL_SHUTDOWN_SECONDS"
SECRETS_FILE: Final = "STATECAR_SECRETS_FILE"
#: Comma-separated component names the sidecar opens (from `statecar.io/components`); unset = every
#: component of the wiring file that is in scope for the app id.
COMPONENTS: Final = "STATECAR_COMPONENTS"

DAPR_HTTP_PORT: Final = "DAPR_HTTP_PORT"
DAPR_GRPC_PORT: Final = "DAPR_GRPC_PORT"
DAPR_API_TOKEN: Final = "DAPR_API_TOKEN"
# daprd reads the namespace from NAMESPACE (dapr/dapr#7267); keyPrefix "namespace" needs it.
DAPR_NAMESPACE: Final = "NAMESPACE"
DAPR_APP_ID: Final = "APP_ID"

#: What `statecar.io/env` may set on the sidecar: an allow-list, because nearly every other
#: variable the sidecar, Python or its drivers read changes how it is wired or secured
#: (STATECAR_LISTEN_ADDRESS would put the tokenless state API on the pod IP; a components path or
#: secrets file bypasses the operator's wiring). Only diagnostics and bounds that change neither
#: belong here; a new sidecar tunable a pod may set is added here and to docs/annotations.md.
USER_SETTABLE: Final = frozenset(
    {
        READ_HEADER_TIMEOUT,
        READ_BODY_TIMEOUT,
        MAX_CONNECTIONS,
        METRICS_MAX_CONNECTIONS,
        MAX_BODY_BYTES,
        BUSY_POLL_US,
        LOG_JSON,
        RECORD_ERROR_CODES,
        GRACEFUL_SHUTDOWN_SECONDS,
        "TZ",
        "PYTHONASYNCIODEBUG",
        "PYTHONFAULTHANDLER",
        "PYTHONTRACEMALLOC",
        "PYTHONUNBUFFERED",
    }
)
