"""
Test helper (not a test module): one sidecar as an app sees it, daprd or statecar alike.

`Side` speaks the Dapr state API to one running sidecar over HTTP (httpx) and gRPC (grpcio with
statecar's generated stubs, the Dapr protos every SDK uses), with the same method for the same
call on either sidecar, so a test reads as "daprd writes, statecar reads".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import httpx

from statecar_sidecar._protos.dapr.proto.common.v1 import common_pb2
from statecar_sidecar._protos.dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2

STORE = "statestore"


@dataclass(frozen=True)
class Got:
    """One key as read back: the value bytes, its ETag and its TTL metadata (None when absent)."""

    data: bytes | None
    etag: str | None
    ttl_expire_time: str | None


class Side:
    """The state API of one sidecar at `url` (HTTP) and `grpc_address`."""

    def __init__(self, name: str, url: str, grpc_address: str, store: str = STORE) -> None:
        self.name = name
        self.store = store
        self.http = httpx.Client(base_url=url, timeout=10)
        self._channel = grpc.insecure_channel(grpc_address)
        self.stub = dapr_pb2_grpc.DaprStub(self._channel)

    def close(self) -> None:
        self.http.close()
        self._channel.close()

    def __enter__(self) -> Side:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return self.name

    # -- HTTP --------------------------------------------------------------------------------

    def save_raw(self, body: bytes, **params: str) -> httpx.Response:
        """POST /v1.0/state/{store} with `body` exactly as given (JSON formatting kept)."""
        return self.http.post(
            f"/v1.0/state/{self.store}",
            content=body,
            params=params,
            headers={"Content-Type": "application/json"},
        )

    def save(self, items: Sequence[Mapping[str, Any]]) -> None:
        reply = self.save_raw(json.dumps(list(items)).encode())
        assert reply.status_code == 204, f"{self}: {reply.status_code} {reply.text}"

    def get(self, key: str) -> Got:
        reply = self.http.get(f"/v1.0/state/{self.store}/{key}")
        assert reply.status_code in (200, 204), f"{self}: {reply.status_code} {reply.text}"
        if reply.status_code == 204:
            return Got(None, None, None)
        return Got(
            reply.content, reply.headers.get("etag"), reply.headers.get("metadata.ttlexpiretime")
        )

    def bulk(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        reply = self.http.post(f"/v1.0/state/{self.store}/bulk", json={"keys": list(keys)})
        assert reply.status_code == 200, f"{self}: {reply.status_code} {reply.text}"
        items: list[dict[str, Any]] = reply.json()
        return items

    def transaction(self, operations: Sequence[Mapping[str, Any]]) -> httpx.Response:
        return self.http.post(
            f"/v1.0/state/{self.store}/transaction", json={"operations": list(operations)}
        )

    def delete(self, key: str, etag: str | None = None) -> httpx.Response:
        headers = {"If-Match": etag} if etag else {}
        return self.http.delete(f"/v1.0/state/{self.store}/{key}", headers=headers)

    def query(self, query: Mapping[str, Any]) -> httpx.Response:
        return self.http.post(f"/v1.0-alpha1/state/{self.store}/query", json=query)

    # -- gRPC --------------------------------------------------------------------------------

    def grpc_save(
        self, key: str, value: bytes, *, etag: str | None = None, metadata: Mapping[str, str] = {}
    ) -> None:
        item = common_pb2.StateItem(key=key, value=value, metadata=dict(metadata))
        if etag is not None:
            item.etag.value = etag
        self.stub.SaveState(state_pb2.SaveStateRequest(store_name=self.store, states=[item]))

    def grpc_get(self, key: str) -> Got:
        reply = self.stub.GetState(state_pb2.GetStateRequest(store_name=self.store, key=key))
        if not reply.data and not reply.etag:
            return Got(None, None, None)
        return Got(reply.data, reply.etag or None, reply.metadata.get("ttlExpireTime"))

    def grpc_bulk(self, keys: Sequence[str]) -> dict[str, tuple[bytes, str]]:
        reply = self.stub.GetBulkState(
            state_pb2.GetBulkStateRequest(store_name=self.store, keys=list(keys))
        )
        return {item.key: (item.data, item.etag) for item in reply.items if not item.error}

    def grpc_upsert_transaction(self, values: Mapping[str, bytes]) -> None:
        operations = [
            state_pb2.TransactionalStateOperation(
                operationType="upsert", request=common_pb2.StateItem(key=key, value=value)
            )
            for key, value in values.items()
        ]
        self.stub.ExecuteStateTransaction(
            state_pb2.ExecuteStateTransactionRequest(storeName=self.store, operations=operations)
        )
