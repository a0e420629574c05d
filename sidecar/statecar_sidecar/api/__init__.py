"""The Dapr state HTTP API: wire parsing, handlers and the ASGI fast path that serves them."""
