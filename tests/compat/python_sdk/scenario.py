"""
The compat scenario, driven through the official Dapr Python SDK (`dapr` 1.19.0) over gRPC.

    python scenario.py STORE RUN

Run by tests/compat/test_python_sdk.py in the SDK's own venv with only DAPR_GRPC_PORT and
DAPR_HTTP_PORT (and DAPR_API_TOKEN when the sidecar has one) set, exactly as an app would be.
Prints one JSON report: for each step, `{"ok": true, "value": ...}` or
`{"ok": false, "error": {"code": "ABORTED", "reason": "ERR_STATE_SAVE", "message": ...}}`.
Bytes are base64. The Go and Java runners print the same report for the same steps.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from typing import Any

from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions

#: Not JSON, not UTF-8: a NUL, a lone 0xFF, and JSON-looking text whose float must not be rounded.
RAW = b'\x00\xff{"price": 1.10, "html": "<&>"}\n'
FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write)


def b64(data: bytes | str) -> str:
    # The SDK types BulkStateItem.data `bytes | str`; over gRPC it is always the proto's bytes,
    # and re-encoding a str would hide exactly the byte-exactness the scenario checks.
    assert isinstance(data, bytes), f"expected bytes from the SDK, got {type(data).__name__}"
    return base64.b64encode(data).decode()


def main(store: str, run: str) -> dict[str, Any]:
    steps: dict[str, Any] = {}

    def step(name: str, call: Callable[[], Any]) -> Any:
        try:
            value = call()
        except DaprGrpcError as exc:
            steps[name] = {
                "ok": False,
                "error": {
                    "code": exc.code().name,
                    "reason": exc.error_code(),
                    "message": exc.details(),
                },
            }
            return None
        steps[name] = {"ok": True, "value": value}
        return value

    def key(name: str) -> str:
        return f"{run}-{name}"

    def doc(team: str, n: int) -> bytes:
        return f'{{"run":"{run}","team":"{team}","n":{n}}}'.encode()

    def get(client: DaprClient, name: str) -> dict[str, str]:
        state = client.get_state(store, key(name))
        return {"data": b64(state.data), "etag": state.etag}

    def bulk(client: DaprClient, names: list[str]) -> list[dict[str, str]]:
        items = client.get_bulk_state(store, [key(n) for n in names], parallelism=2).items
        return [
            {"key": i.key, "data": b64(i.data), "etag": i.etag, "error": i.error} for i in items
        ]

    with DaprClient() as client:
        # save/get byte-exact
        step("save", lambda: client.save_state(store, key("raw"), RAW) and None)
        first = step("get", lambda: get(client, "raw"))
        stale = first["etag"] if first else ""
        # first-write with the current ETag, then with the now stale one
        step(
            "firstWriteCurrent",
            lambda: (
                client.save_state(store, key("raw"), b'"v2"', etag=stale, options=FIRST_WRITE)
                and None
            ),
        )
        step(
            "firstWriteStale",
            lambda: (
                client.save_state(store, key("raw"), b'"v3"', etag=stale, options=FIRST_WRITE)
                and None
            ),
        )
        step("afterStale", lambda: get(client, "raw"))
        # a malformed ETag
        step(
            "malformedEtag",
            lambda: client.save_state(store, key("raw"), b'"v4"', etag="not-an-etag") and None,
        )
        # bulk save, bulk get with a missing key
        step(
            "bulkSave",
            lambda: (
                client.save_bulk_state(
                    store,
                    [StateItem(key("b1"), b'{"n":1}'), StateItem(key("b2"), b'"two"')],
                )
                and None
            ),
        )
        step("bulkGet", lambda: bulk(client, ["b1", "missing", "b2"]))
        # delete with an ETag: a stale one is refused, the current one deletes
        current = get(client, "raw")["etag"]
        step("deleteStale", lambda: client.delete_state(store, key("raw"), etag=stale) and None)
        step("deleteCurrent", lambda: client.delete_state(store, key("raw"), etag=current) and None)
        step("afterDelete", lambda: get(client, "raw"))
        # a transaction that applies
        step(
            "transaction",
            lambda: (
                client.execute_state_transaction(
                    store,
                    [
                        TransactionalStateOperation(key("t1"), doc("blue", 1)),
                        TransactionalStateOperation(key("t2"), doc("red", 2)),
                        TransactionalStateOperation(
                            key("b1"), operation_type=TransactionOperationType.delete
                        ),
                    ],
                )
                and None
            ),
        )
        step("afterTransaction", lambda: bulk(client, ["t1", "t2", "b1"]))
        # one refused by a stale ETag, which applies nothing
        t1 = get(client, "t1")["etag"]
        step(
            "rewrite",
            lambda: client.save_state(store, key("t1"), doc("blue", 10)) and None,
        )
        step(
            "staleTransaction",
            lambda: (
                client.execute_state_transaction(
                    store,
                    [
                        TransactionalStateOperation(key("t3"), doc("green", 3)),
                        TransactionalStateOperation(key("t2"), doc("red", 20)),
                        TransactionalStateOperation(key("t1"), doc("blue", 11), etag=t1),
                    ],
                )
                and None
            ),
        )
        step("afterStaleTransaction", lambda: bulk(client, ["t1", "t2", "t3"]))
        # metadata
        step(
            "metadata",
            lambda: (
                lambda m: {
                    "id": m.application_id,
                    "components": sorted(
                        (
                            {
                                "name": c.name,
                                "type": c.type,
                                "capabilities": sorted(c.capabilities),
                            }
                            for c in m.registered_components
                        ),
                        key=lambda c: str(c["name"]),
                    ),
                }
            )(client.get_metadata()),
        )
        # a query: this run's documents of team blue or red, highest n first
        query = {
            "filter": {"AND": [{"EQ": {"run": run}}, {"IN": {"team": ["blue", "red"]}}]},
            "sort": [{"key": "n", "order": "DESC"}],
        }
        step(
            "query",
            lambda: [
                {"key": r.key, "data": b64(r.value), "etag": r.etag}
                for r in client.query_state(store, json.dumps(query)).results
            ],
        )
    return {"run": run, "store": store, "steps": steps}


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")  # the SDK warns that the query API is alpha
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
