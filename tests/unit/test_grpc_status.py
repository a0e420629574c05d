"""
daprd's gRPC codes for statecar's errors (research/dapr-state-spec.md §8.2), including the ones
no backend triggers today (every statecar store has transactions and query).
"""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2, status_pb2

from statecar_sidecar.api import errors
from statecar_sidecar.api.errors import DaprError
from statecar_sidecar.grpcapi.status import DETAILS_TRAILER, StatusCode, basic, from_dapr_error


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (errors.store_not_found("s", "app", ["t"]), "INVALID_ARGUMENT", "DAPR_STATE_NOT_FOUND"),
        (
            errors.store_not_configured("s", "app"),
            "FAILED_PRECONDITION",
            "DAPR_STATE_NOT_CONFIGURED",
        ),
        (errors.illegal_key("s", "a||b"), "INVALID_ARGUMENT", "DAPR_STATE_ILLEGAL_KEY"),
        (errors.malformed("bad ttl"), "INVALID_ARGUMENT", "ERR_MALFORMED_REQUEST"),
        (
            errors.transactions_not_supported("s"),
            "UNIMPLEMENTED",
            "DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED",
        ),
        (errors.query_not_supported("s"), "INTERNAL", "DAPR_STATE_QUERYING_NOT_SUPPORTED"),
        (errors.query_failed("s", "bad"), "INTERNAL", "DAPR_STATE_QUERY_FAILED"),
        (DaprError(409, "ERR_STATE_SAVE", "mismatch"), "ABORTED", "ERR_STATE_SAVE"),
        (DaprError(413, "ERR_BODY_TOO_LARGE", "big"), "RESOURCE_EXHAUSTED", "ERR_BODY_TOO_LARGE"),
        (DaprError(500, "ERR_STATE_TRANSACTION", "no"), "INTERNAL", "ERR_STATE_TRANSACTION"),
    ],
)
def test_each_error_gets_daprds_code_and_an_error_info_reason(
    error: DaprError, code: str, reason: str
) -> None:
    converted = from_dapr_error(error)
    assert converted.code.name == code
    assert converted.message == error.message
    ((key, value),) = converted.trailer()
    assert key == DETAILS_TRAILER
    status = status_pb2.Status.FromString(value)
    assert status.code == int(converted.code)
    infos = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            infos.append(info)
    assert [(i.reason, i.domain) for i in infos] == [(reason, "dapr.io")]


def test_details_keep_daprds_order_and_content() -> None:
    status = status_pb2.Status.FromString(
        from_dapr_error(errors.illegal_key("s", "a||b")).trailer()[0][1]
    )
    kinds = [d.type_url.rsplit(".", 1)[-1] for d in status.details]
    assert kinds == ["BadRequest", "ResourceInfo", "ErrorInfo"]
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "a||b"


def test_basic_is_daprds_apierrors_basic() -> None:
    error = basic(StatusCode.INVALID_ARGUMENT, "ERR_STATE_SAVE", "state key cannot be empty")
    status = status_pb2.Status.FromString(error.trailer()[0][1])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == ("ERR_STATE_SAVE", "dapr.io", {})


@pytest.mark.parametrize(
    ("error", "code", "category"),
    [
        (errors.store_not_found("s", "app", []), "ERR_STATE_STORE_NOT_FOUND", "state"),
        (errors.illegal_key("s", "a||b"), "ERR_MALFORMED_REQUEST", "state"),
        (errors.malformed("bad json"), "ERR_MALFORMED_REQUEST", "common"),
        (DaprError(409, "ERR_STATE_SAVE", "mismatch"), "ERR_STATE_SAVE", "state"),
    ],
)
def test_the_grpc_error_keeps_the_dapr_error_code_and_daprds_category(
    error: DaprError, code: str, category: str
) -> None:
    """What dapr_error_code_total counts on the gRPC side (daprd's RecordErrorCode)."""
    rpc = from_dapr_error(error)
    assert (rpc.error_code, rpc.category) == (code, category)
    plain = basic(StatusCode.INTERNAL, "ERR_STATE_GET", "no")
    assert (plain.error_code, plain.category) == ("ERR_STATE_GET", "state")
