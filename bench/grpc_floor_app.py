#!/usr/bin/env python3
"""
The gRPC floor: grpcio's asyncio server answering GetState with a constant 1 KB value.

What `bench/grpc_vs_http.py` compares the sidecar's gRPC path with: no store, no policy, no
metrics, one registered method, uvloop as in the sidecar. Whatever this costs per call is
grpcio's own price, which no handler code can win back.

    python bench/grpc_floor_app.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import uvloop

from statecar_sidecar._protos.dapr.proto.runtime.v1 import dapr_pb2, state_pb2

SERVICE = dapr_pb2.DESCRIPTOR.services_by_name["Dapr"]
RESPONSE = state_pb2.GetStateResponse(data=b'{"data":"' + b"a" * 1013 + b'"}', etag="1")


async def get_state(request: state_pb2.GetStateRequest, context: object) -> object:
    return RESPONSE


async def main(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.unary_unary_rpc_method_handler(
        get_state,
        request_deserializer=state_pb2.GetStateRequest.FromString,
        response_serializer=state_pb2.GetStateResponse.SerializeToString,
    )
    server.add_registered_method_handlers(SERVICE.full_name, {"GetState": handler})
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main(int(sys.argv[1])))
