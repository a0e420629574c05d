"""
Dapr's error responses: `{"errorCode", "message"}` plus `details` where daprd adds them.

Codes and statuses follow dapr/dapr `pkg/messages` and `pkg/api/errors/state.go`
(Dapr docs, state API reference "HTTP Response codes"; docs/state-api.md "Requests and replies"). Handlers raise `DaprError`; the ASGI layer renders it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

_HELP_URL = "https://docs.dapr.io/reference/components-reference/supported-state-stores/"


@dataclass
class DaprError(Exception):
    """A request refused with daprd's answer: the HTTP status, `errorCode` and message."""

    status: int
    code: str
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)
    #: Extra response headers (`Allow` on a 405).
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def body(self) -> bytes:
        document: dict[str, Any] = {"errorCode": self.code, "message": self.message}
        if self.details:
            document["details"] = self.details
        try:
            return orjson.dumps(document)
        except TypeError:
            # A message quoting the client's text may hold a lone surrogate, which orjson
            # refuses; the stdlib writes it as a \uXXXX escape, so the error is still JSON.
            return json.dumps(document).encode()

    @property
    def category(self) -> str:
        return category(self.code, (str(d.get("reason", "")) for d in self.details))

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def _error_info(reason: str, metadata: dict[str, str] | None) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "dapr.io",
        "metadata": metadata,
    }


def _resource_info(store: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ResourceInfo",
        "resource_type": "state",
        "resource_name": store,
        "owner": "",
        "description": "",
    }


def _app(app_id: str) -> dict[str, str] | None:
    # daprd's StateStoreError.NotFound/NotConfigured: metadata {"appID"} only when there is one.
    return {"appID": app_id} if app_id else None


def store_not_found(store: str, app_id: str, known: list[str]) -> DaprError:
    hint = f" (this app's stores: {', '.join(sorted(known))})" if known else ""
    return DaprError(
        400,
        "ERR_STATE_STORE_NOT_FOUND",
        f"state store {store} is not found{hint}",
        [_error_info("DAPR_STATE_NOT_FOUND", _app(app_id))],
    )


def store_not_configured(store: str, app_id: str, reason: str | None = None) -> DaprError:
    """No store of that name is serving; `reason` says why one that was declared is not ready."""
    message = f"state store {store} is not configured"
    if reason is not None:
        message = f"state store {store} is not ready: {reason}"
    return DaprError(
        500,
        "ERR_STATE_STORE_NOT_CONFIGURED",
        message,
        [_error_info("DAPR_STATE_NOT_CONFIGURED", _app(app_id))],
    )


#: errorCode -> daprd's category (pkg/messages/errorcodes), the `category` of dapr_error_code_total.
_CATEGORIES: Final[dict[str, str]] = {
    "ERR_MALFORMED_REQUEST": "common",
    "ERR_MALFORMED_REQUEST_DATA": "common",
    "ERR_BODY_READ": "common",
    "ERR_BAD_REQUEST": "common",
    "ERR_INTERNAL": "common",
    "ERR_API_UNIMPLEMENTED": "common",
    "ERR_NOT_SUPPORTED_STATE_OPERATION": "state",
    "ERR_DIRECT_INVOKE": "service-invocation",
}
#: ErrorInfo reasons of daprd's state kit errors (pkg/api/errors/state.go): category "state",
#: even for ERR_MALFORMED_REQUEST (an illegal key), which is "common" otherwise.
_STATE_REASONS: Final = frozenset(
    {
        "DAPR_STATE_ILLEGAL_KEY",
        "DAPR_STATE_NOT_FOUND",
        "DAPR_STATE_NOT_CONFIGURED",
        "DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED",
        "DAPR_STATE_QUERYING_NOT_SUPPORTED",
        "DAPR_STATE_QUERY_FAILED",
        "DAPR_STATE_TOO_MANY_TRANSACTIONS",
    }
)


def category(code: str, reasons: Iterable[str] = ()) -> str:
    """The category daprd records an errorCode under; statecar's own codes are "common"."""
    if any(r in _STATE_REASONS for r in reasons) or code.startswith("ERR_STATE_"):
        return "state"
    if code.startswith("ERR_HEALTH_"):
        return "health"
    return _CATEGORIES.get(code, "common")


def internal(method: str, route: str, exc: BaseException) -> DaprError:
    """A request that failed in a way no handler foresaw: the sidecar's bug, never the client's.

    The message names the route and the exception's type only; the traceback goes to the log.
    """
    return DaprError(
        500,
        "ERR_INTERNAL",
        f"internal error serving {method} {route} ({type(exc).__name__}); the sidecar logged "
        "the details. Please report it",
    )


def method_not_allowed(method: str, route: str, allowed: tuple[str, ...]) -> DaprError:
    allow = ", ".join(allowed)
    return DaprError(
        405,
        "ERR_METHOD_NOT_ALLOWED",
        f"{route} does not take {method}; it takes {allow}",
        headers=[(b"allow", allow.encode())],
    )


OUTCOME_UNKNOWN = "ERR_STATE_OUTCOME_UNKNOWN"


def outcome_unknown(message: str) -> DaprError:
    """A write was sent to the store and no answer came: it may or may not have been applied.

    statecar's own code (daprd would answer ERR_STATE_SAVE/DELETE/TRANSACTION). 500 as daprd's
    other store failures, not 504: proxies and HTTP clients retry gateway errors on their own
    (Envoy's `retry_on: gateway-error`), and a blind retry is what this error warns against.
    """
    return DaprError(500, OUTCOME_UNKNOWN, message)


def malformed(message: str) -> DaprError:
    return DaprError(400, "ERR_MALFORMED_REQUEST", message)


def illegal_key(store: str, key: str) -> DaprError:
    return DaprError(
        400,
        "ERR_MALFORMED_REQUEST",
        f"input key/keyPrefix '{key}' can't contain '||'",
        [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": [
                    {"field": key, "description": f"input key/keyPrefix '{key}' can't contain '||'"}
                ],
            },
            _resource_info(store),
            _error_info("DAPR_STATE_ILLEGAL_KEY", None),
        ],
    )


def transactions_not_supported(store: str) -> DaprError:
    return DaprError(
        500,
        "ERR_STATE_STORE_NOT_SUPPORTED",
        f"state store {store} doesn't support transactions",
        [
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Check the list of state stores and the features they support",
                        "url": _HELP_URL,
                    }
                ],
            },
            _resource_info(store),
            _error_info("DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED", None),
        ],
    )


def query_not_supported(store: str) -> DaprError:
    return DaprError(
        500,
        "ERR_STATE_STORE_NOT_SUPPORTED",
        f"state store {store} does not support querying",
        [_resource_info(store), _error_info("DAPR_STATE_QUERYING_NOT_SUPPORTED", None)],
    )


def query_encrypted(store: str, detail: str) -> DaprError:
    """A query on an encrypted store. daprd answers 500 `ERR_STATE_QUERY` "cannot query
    encrypted store" (`pkg/api/universal/state_query.go`); the request, not the server, is what
    cannot work, so statecar answers 400 with the same code and a message naming the setting."""
    return DaprError(
        400,
        "ERR_STATE_QUERY",
        f"state store {store} query failed: {detail}",
        [_resource_info(store), _error_info("DAPR_STATE_QUERY_FAILED", None)],
    )


def query_failed(store: str, detail: str) -> DaprError:
    return DaprError(
        500,
        "ERR_STATE_QUERY",
        f"state store {store} query failed: {detail}",
        [_resource_info(store), _error_info("DAPR_STATE_QUERY_FAILED", None)],
    )
