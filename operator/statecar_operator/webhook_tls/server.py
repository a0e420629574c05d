"""
kopf's webhook server with a certificate that can change under it, and the namespace filled in.

kopf's `WebhookServer` re-reads its certificate files when they change by *stopping and
restarting* its listener (kopf `_kits/webhooks.py`: `runner.cleanup()`, then a new site), so
each renewal would close the port for a moment and fail the API server's calls in flight.
`LiveTLS` instead keeps one `ssl.SSLContext` for the life of the process and loads a new
certificate into it in place: OpenSSL copies the certificate into each connection when the
connection is made (`SSL_new`), so new handshakes present the new certificate and connections
already open keep theirs. The load happens on the event loop's thread, which is also where
every handshake of the asyncio server runs, so no handshake can see half of a load; and each
new pair is first loaded into a throwaway context, so a bad pair never replaces a good one.

A pod's `metadata.namespace` may be empty in an admission request (`kubectl create` without
`-n`: the API server only fills it in later); the request carries it in `request.namespace`,
so it is copied into the object before kopf's handlers see it (Istio's injector does the same).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import kopf
from cryptography import x509

from statecar_operator.webhook_tls.issuing import fingerprint


def fill_namespace(request: Any) -> None:
    """Copy `request.namespace` into the admitted object's metadata when that is empty."""
    payload = request.get("request") if isinstance(request, dict) else None
    if not isinstance(payload, dict):
        return
    namespace = payload.get("namespace")
    for key in ("object", "oldObject"):
        obj = payload.get(key)
        if isinstance(obj, dict) and namespace:
            metadata = obj.setdefault("metadata", {})
            if isinstance(metadata, dict) and not metadata.get("namespace"):
                metadata["namespace"] = namespace


class LiveTLS:
    """The webhook server's TLS context, whose certificate is replaced without a restart."""

    def __init__(self, scratch: Path, *, on_change: Callable[[], None] = lambda: None) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._scratch = scratch
        self._on_change = on_change
        self._fingerprint: str | None = None
        self.certificate: x509.Certificate | None = None
        self.loads = 0

    @property
    def loaded(self) -> bool:
        return self.certificate is not None

    def load(self, cert_pem: bytes, key_pem: bytes) -> bool:
        """
        Serve `cert_pem` from the next handshake on; False when it is already being served.
        Raises `ssl.SSLError`/`ValueError` for a pair that does not load (the old one stays).
        """
        identity = fingerprint(cert_pem + key_pem)
        if identity == self._fingerprint:
            return False
        certificate = x509.load_pem_x509_certificate(cert_pem)
        with self._files(cert_pem, key_pem) as (cert_file, key_file):
            # The throwaway context first: a key that does not match, or garbage, fails here.
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
            self.context.load_cert_chain(cert_file, key_file)
        self._fingerprint = identity
        self.certificate = certificate
        self.loads += 1
        self._on_change()
        return True

    @contextlib.contextmanager
    def _files(self, cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
        """`load_cert_chain` reads files only: owner-only files, deleted right after loading."""
        paths: list[str] = []
        try:
            for suffix, data in ((".crt", cert_pem), (".key", key_pem)):
                descriptor, path = tempfile.mkstemp(suffix=suffix, dir=self._scratch)
                paths.append(path)
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(data)
            yield paths[0], paths[1]
        finally:
            for path in paths:
                with contextlib.suppress(OSError):
                    os.unlink(path)


class StatecarWebhookServer(kopf.WebhookServer):
    """
    kopf's server, telling `on_listening` when it listens. With `tls`, it serves from that
    live context (and never restarts); without, kopf loads `certfile`/`pkeyfile` itself.
    """

    def __init__(
        self, *, on_listening: Callable[[], None], tls: LiveTLS | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._on_listening = on_listening
        self._tls = tls

    def _build_ssl(self) -> tuple[bytes | None, ssl.SSLContext | None]:
        # kopf's own hook (kopf `_kits/webhooks.py`, called once per listener start), not part
        # of its documented API: tests/unit/test_operator_certs_runtime.py fails if it changes.
        if self._tls is None:
            built: tuple[bytes | None, ssl.SSLContext | None] = super()._build_ssl()
            return built
        # The configurations' caBundle is not kopf's business here (managed mode is off); with
        # no certificate files for kopf to watch, its restart-on-change loop never fires.
        return None, self._tls.context

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async def with_namespace(
            request: Any,
            *,
            webhook: kopf.HandlerId | None = None,
            headers: kopf.Headers | None = None,
            sslpeer: kopf.SSLPeer | None = None,
        ) -> Any:
            fill_namespace(request)
            return await fn(request, webhook=webhook, headers=headers, sslpeer=sslpeer)

        # The request/response TypedDicts of kopf.WebhookFn are not exported by kopf.
        wrapped = cast(kopf.WebhookFn, with_namespace)
        async for client_config in super().__call__(wrapped):
            self._on_listening()
            yield client_config
