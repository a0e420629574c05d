"""
The Dapr gRPC API (`dapr.proto.runtime.v1.Dapr`) over the same stores and request policy as HTTP.

`service` answers the state, metadata and shutdown RPCs (every other RPC is UNIMPLEMENTED with
a message naming statecar and the RPC); `status` turns statecar's errors into daprd's gRPC
statuses and `google.rpc` details; `server` routes them, beside gRPC health and reflection, on
statecar's own transport: `transport` (gRPC framing, trailers, deadlines) over `http2` (an
asyncio HTTP/2 server) and `hpack`/`huffman` (header compression). `port` opens the port at
start-up and imports `server` (protobuf and the generated messages) on its first client only.
Nothing imports grpcio (an import-linter contract): it is the tests' and benchmarks' client only.
"""
