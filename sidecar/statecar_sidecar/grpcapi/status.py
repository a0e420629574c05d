"""
daprd's gRPC statuses for statecar's errors, with the `google.rpc` details daprd attaches.

The HTTP side raises `api.errors.DaprError` (an HTTP status, a Dapr errorCode, a message and
JSON details); here the same error becomes a gRPC status code, the message, and a
`google.rpc.Status` in the `grpc-status-details-bin` trailer carrying the same details as
protobuf messages (ErrorInfo, ResourceInfo, BadRequest, Help), which the SDKs read
(`DaprGrpcError.status_details()` in the Python SDK). The code per errorCode follows daprd's
`pkg/api/grpc/grpc.go` and `pkg/api/errors` (research/dapr-state-spec.md §8.2).

The codes and `RpcError` import no protobuf: the transport answers with them before the gRPC API
(protobuf and the generated messages, ~12 MiB) is loaded (`grpcapi.port`). Only the details need
protobuf, and it is imported where they are built: whoever builds them has loaded it already.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Final

from statecar_sidecar.api import errors
from statecar_sidecar.api.errors import DaprError


class StatusCode(enum.IntEnum):
    """gRPC's status codes (grpc/grpc doc/statuscodes.md), named as grpcio names them."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


DOMAIN: Final = "dapr.io"
DETAILS_TRAILER: Final = "grpc-status-details-bin"

#: errorCode -> gRPC code where the code alone decides it (daprd's APIError/kit error codes).
_BY_ERROR_CODE: Final[Mapping[str, StatusCode]] = {
    "ERR_STATE_STORE_NOT_FOUND": StatusCode.INVALID_ARGUMENT,
    "ERR_STATE_STORE_NOT_CONFIGURED": StatusCode.FAILED_PRECONDITION,
    "ERR_MALFORMED_REQUEST": StatusCode.INVALID_ARGUMENT,
    "ERR_STATE_GET": StatusCode.INTERNAL,
    "ERR_STATE_BULK_GET": StatusCode.INTERNAL,
    "ERR_STATE_TRANSACTION": StatusCode.INTERNAL,
    "ERR_STATE_QUERY": StatusCode.INTERNAL,
    "ERR_NOT_SUPPORTED_STATE_OPERATION": StatusCode.UNIMPLEMENTED,
}

#: For the rest (the write errors, whose code depends on the ETag failure), the HTTP status.
_BY_HTTP_STATUS: Final[Mapping[int, StatusCode]] = {
    400: StatusCode.INVALID_ARGUMENT,
    401: StatusCode.UNAUTHENTICATED,
    404: StatusCode.NOT_FOUND,
    409: StatusCode.ABORTED,  # ETag mismatch: daprd's "test-and-set failed" (dapr/dapr#2648)
    413: StatusCode.RESOURCE_EXHAUSTED,
    501: StatusCode.UNIMPLEMENTED,
}


class RpcError(Exception):
    """An RPC's failure as daprd would send it: a code, a message, and `google.rpc` details."""

    def __init__(
        self,
        code: StatusCode,
        message: str,
        details: Sequence[Any] = (),
        *,
        error_code: str = "",
        category: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)
        #: The Dapr errorCode and its category, for dapr_error_code_total ("" when not a Dapr
        #: error, which daprd does not count either).
        self.error_code = error_code
        self.category = category

    def trailer(self) -> tuple[tuple[str, bytes], ...]:
        """The `grpc-status-details-bin` trailer; empty when there are no details."""
        if not self.details:
            return ()
        from google.protobuf import any_pb2
        from google.rpc import status_pb2

        status = status_pb2.Status(code=int(self.code), message=self.message)
        for detail in self.details:
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        return ((DETAILS_TRAILER, status.SerializeToString()),)


def error_info(reason: str, metadata: Mapping[str, str] | None = None) -> Any:
    from google.rpc import error_details_pb2

    return error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})


def basic(code: StatusCode, error_code: str, message: str) -> RpcError:
    """daprd's `apierrors.Basic`: the message and one ErrorInfo whose reason is the errorCode."""
    return RpcError(
        code,
        message,
        [error_info(error_code)],
        error_code=error_code,
        category=errors.category(error_code),
    )


def _detail(document: Mapping[str, Any]) -> Any:
    from google.rpc import error_details_pb2

    kind = str(document.get("@type", "")).rsplit("/", 1)[-1]
    if kind == "google.rpc.ErrorInfo":
        return error_info(str(document["reason"]), document.get("metadata"))
    if kind == "google.rpc.ResourceInfo":
        return error_details_pb2.ResourceInfo(
            resource_type=document.get("resource_type", ""),
            resource_name=document.get("resource_name", ""),
            owner=document.get("owner", ""),
            description=document.get("description", ""),
        )
    if kind == "google.rpc.BadRequest":
        return error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.get("field", ""), description=v.get("description", "")
                )
                for v in document.get("field_violations", [])
            ]
        )
    if kind == "google.rpc.Help":
        return error_details_pb2.Help(
            links=[
                error_details_pb2.Help.Link(
                    description=v.get("description", ""), url=v.get("url", "")
                )
                for v in document.get("links", [])
            ]
        )
    return None


def _has_reason(error: DaprError, reason: str) -> bool:
    return any(d.get("reason") == reason for d in error.details)


def from_dapr_error(error: DaprError) -> RpcError:
    """The gRPC form of an error the shared policy (or a store lookup) raised."""
    if _has_reason(error, "DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED"):
        code = StatusCode.UNIMPLEMENTED
    else:
        code = _BY_ERROR_CODE.get(error.code) or _BY_HTTP_STATUS.get(
            error.status, StatusCode.INTERNAL
        )
    details = [d for d in (_detail(doc) for doc in error.details) if d is not None]
    if not details:
        details = [error_info(error.code)]
    return RpcError(code, error.message, details, error_code=error.code, category=error.category)
