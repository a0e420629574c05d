"""
The TLS context a `state.redis` component's settings describe, built once for every program.

The sidecar's connections and the operator's reachability probe must agree on what a component's
TLS means (the system's CAs or `caCert`, the client certificate `clientCert`/`clientKey`, no
checks with `insecureSkipTLSVerify`): a probe that ignored the client certificate would report a
server that demands one as unreachable while the sidecar works.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from statecar_contract.settings.redis import RedisSettings
from statecar_contract.settings.values import SettingValueError

__all__ = ["redis_tls_context"]


def redis_tls_context(settings: RedisSettings) -> ssl.SSLContext:
    """The context for `settings`; bad PEM is a SettingValueError naming the setting."""
    try:
        context = ssl.create_default_context(cadata=settings.ca_cert)
    except (ssl.SSLError, ValueError) as exc:
        raise SettingValueError(f"spec.metadata.caCert: not a PEM CA certificate: {exc}") from None
    if settings.insecure_skip_tls_verify:
        # Explicit opt-in for self-signed in-cluster certificates (daprd's insecureSkipTLSVerify):
        # no hostname or chain check.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.client_cert and settings.client_key:
        # load_cert_chain reads files only: the PEM texts go to a private temporary directory
        # (0700, removed at once), never next to other files. tempfile is imported here, the
        # one use: with random and shutil it is ~3.5 ms of every Redis sidecar's cold start.
        import tempfile

        with tempfile.TemporaryDirectory(prefix="statecar-tls-") as folder:
            cert, key = Path(folder, "cert.pem"), Path(folder, "key.pem")
            cert.write_text(settings.client_cert)
            key.touch(mode=0o600)
            key.write_text(settings.client_key)
            try:
                context.load_cert_chain(cert, key)
            except (ssl.SSLError, ValueError) as exc:
                raise SettingValueError(
                    "spec.metadata.clientCert/clientKey: not a PEM certificate and its unencrypted"
                    f" private key: {exc}"
                ) from None
    return context
