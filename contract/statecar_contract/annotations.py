"""
Every pod annotation and label statecar reads or writes, defined once.

The injector reads the `statecar.io/*` annotations of a pod to decide what to inject; the
names follow Dapr's injector (`dapr.io/app-id`, `dapr.io/sidecar-cpu-limit`, ...) so users find
what they expect. Validation lives with the injector; only the names and defaults live here.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "statecar.io/"

ENABLED: Final = PREFIX + "enabled"
APP_ID: Final = PREFIX + "app-id"
HTTP_PORT: Final = PREFIX + "http-port"
GRPC_PORT: Final = PREFIX + "grpc-port"  # the Dapr gRPC API, on the pod's loopback
METRICS_PORT: Final = PREFIX + "metrics-port"
LOG_LEVEL: Final = PREFIX + "log-level"
LOG_AS_JSON: Final = PREFIX + "log-as-json"
API_TOKEN_SECRET: Final = PREFIX + "api-token-secret"
SIDECAR_IMAGE: Final = PREFIX + "sidecar-image"
SIDECAR_CPU_REQUEST: Final = PREFIX + "sidecar-cpu-request"
SIDECAR_CPU_LIMIT: Final = PREFIX + "sidecar-cpu-limit"
SIDECAR_MEMORY_REQUEST: Final = PREFIX + "sidecar-memory-request"
SIDECAR_MEMORY_LIMIT: Final = PREFIX + "sidecar-memory-limit"
MAX_BODY_SIZE: Final = PREFIX + "http-max-request-size"
COMPONENTS: Final = PREFIX + "components"  # comma-separated subset of the namespace's components
ENV: Final = PREFIX + "env"  # extra sidecar env, "NAME=value,NAME2=value2"

#: Written by the injector: what was injected, the image and the wiring's config hash.
STATUS: Final = PREFIX + "status"

#: Every annotation a user may set; an unknown `statecar.io/*` key is reported (typos are common).
USER_ANNOTATIONS: Final = frozenset(
    {
        ENABLED,
        APP_ID,
        HTTP_PORT,
        GRPC_PORT,
        METRICS_PORT,
        LOG_LEVEL,
        LOG_AS_JSON,
        API_TOKEN_SECRET,
        SIDECAR_IMAGE,
        SIDECAR_CPU_REQUEST,
        SIDECAR_CPU_LIMIT,
        SIDECAR_MEMORY_REQUEST,
        SIDECAR_MEMORY_LIMIT,
        MAX_BODY_SIZE,
        COMPONENTS,
        ENV,
    }
)

#: Written by the operator on the wiring Secret: the keyed hash of its content, which the injector
#: copies into each pod's status annotation (a plain hash of secret values would let anyone who can
#: read pods test password guesses offline, so the hash is an HMAC keyed by `WIRING_SALT`).
WIRING_CONFIG_HASH: Final = PREFIX + "config-hash"
#: Random per-namespace key of that HMAC, kept on the wiring Secret (readable only with Secret access).
WIRING_SALT: Final = PREFIX + "wiring-salt"

#: The label the injector puts on injected pods (selectors, `kubectl get pods -l`).
INJECTED_LABEL: Final = "statecar.io/injected"
SIDECAR_CONTAINER_NAME: Final = "statecar"
DEFAULT_HTTP_PORT: Final = 3500
DEFAULT_GRPC_PORT: Final = 50001  # daprd's, where the Dapr SDKs look without DAPR_GRPC_PORT
DEFAULT_METRICS_PORT: Final = 9090

#: Dapr's annotations (https://docs.dapr.io/reference/arguments-annotations-overview/, Dapr's
#: pkg/injector/annotations/annotations.go) that the injector honours when the operator runs with
#: the Dapr-annotations option, each read exactly like its `statecar.io/*` counterpart. Dapr's
#: values have the same shapes: ports, quantities, `NAME=value,...` env, a Secret name whose key
#: is `token` (Dapr's patcher/sidecar_container.go), log levels (Dapr's `warn` included).
#: `dapr.io/http-port` is not Dapr's (daprd's HTTP port is fixed in Kubernetes); it is honoured
#: for manifests that set it anyway.
DAPR_PREFIX: Final = "dapr.io/"
DAPR_EQUIVALENTS: Final = {
    DAPR_PREFIX + "enabled": ENABLED,
    DAPR_PREFIX + "app-id": APP_ID,
    DAPR_PREFIX + "http-port": HTTP_PORT,
    DAPR_PREFIX + "grpc-port": GRPC_PORT,
    DAPR_PREFIX + "log-level": LOG_LEVEL,
    DAPR_PREFIX + "log-as-json": LOG_AS_JSON,
    DAPR_PREFIX + "metrics-port": METRICS_PORT,
    DAPR_PREFIX + "sidecar-cpu-request": SIDECAR_CPU_REQUEST,
    DAPR_PREFIX + "sidecar-cpu-limit": SIDECAR_CPU_LIMIT,
    DAPR_PREFIX + "sidecar-memory-request": SIDECAR_MEMORY_REQUEST,
    DAPR_PREFIX + "sidecar-memory-limit": SIDECAR_MEMORY_LIMIT,
    DAPR_PREFIX + "env": ENV,
    DAPR_PREFIX + "http-max-request-size": MAX_BODY_SIZE,
    DAPR_PREFIX + "api-token-secret": API_TOKEN_SECRET,
}
#: Dapr's injector: its MutatingWebhookConfiguration (Dapr's Helm chart,
#: charts/dapr/charts/dapr_sidecar_injector/templates/dapr_sidecar_injector_webhook_config.yaml).
DAPR_INJECTOR_WEBHOOK: Final = "dapr-sidecar-injector"
