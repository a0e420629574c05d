"""
The Dapr gRPC API (`dapr.proto.runtime.v1.Dapr`) over the same stores and request policy as HTTP.

`service` answers the state, metadata and shutdown RPCs (every other RPC is UNIMPLEMENTED with
a message naming statecar and the RPC); `status` turns statecar's errors into daprd's gRPC
statuses and `google.rpc` details; `server` runs it on grpcio's asyncio server beside gRPC
health and reflection. Only this package imports grpcio (an import-linter contract).
"""
