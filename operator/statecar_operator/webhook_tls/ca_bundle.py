"""
The `caBundle` of the webhook configurations, as pure functions: decode it, say why it is not
the wanted one, and the JSON patch that sets it (only where it differs, only on the version read).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes


def decode_bundle(encoded: object) -> bytes:
    """A `caBundle` as stored (base64 in JSON); anything unreadable counts as empty."""
    if not isinstance(encoded, str) or not encoded:
        return b""
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return b""


def bundle_certificates(bundle: bytes) -> list[x509.Certificate]:
    if not bundle.strip():
        return []
    try:
        return x509.load_pem_x509_certificates(bundle)
    except ValueError:
        return []


def describe_bundle(bundle: bytes, wanted: bytes) -> str:
    """Why a configuration's bundle is not `wanted`, for Events and logs."""
    if not bundle.strip():
        return "empty"
    have = {c.fingerprint(hashes.SHA256()) for c in bundle_certificates(bundle)}
    want = {c.fingerprint(hashes.SHA256()) for c in bundle_certificates(wanted)}
    if not have:
        return "not PEM certificates"
    if have == want:
        return "the right CAs, formatted differently"
    if have < want:
        return "missing the new CA"
    if have > want:
        return "still trusting a CA that was dropped"
    return "a different CA" if not have & want else "a different set of CAs"


def ca_bundle_patch(configuration: Mapping[str, Any], bundle: bytes) -> list[dict[str, Any]] | None:
    """
    A JSON patch (RFC 6902) that sets `bundle` as the caBundle of every webhook of a
    configuration, or None when all already have it.

    The `test` operations make it apply only to the version that was read (resourceVersion)
    and to the webhooks where they were (by name): a configuration re-applied meanwhile makes
    the patch fail instead of writing a bundle into the wrong place; the next pass re-reads.
    Other fields are never touched, so selectors and policies stay whatever the chart (or
    GitOps) says.
    """
    encoded = base64.b64encode(bundle).decode("ascii")
    version = (configuration.get("metadata") or {}).get("resourceVersion")
    operations: list[dict[str, Any]] = []
    for index, hook in enumerate(configuration.get("webhooks") or []):
        client_config = hook.get("clientConfig") or {}
        if decode_bundle(client_config.get("caBundle")) == bundle:
            continue
        operations.append({"op": "test", "path": f"/webhooks/{index}/name", "value": hook["name"]})
        # "add" sets an object member whether or not it exists (RFC 6902 section 4.1).
        operations.append(
            {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": encoded}
        )
    if not operations:
        return None
    if version:
        operations.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
    return operations


def bundle_published(configurations: Sequence[Mapping[str, Any] | None], bundle: bytes) -> bool:
    """Whether every existing configuration already carries `bundle` in all its webhooks."""
    return all(c is None or ca_bundle_patch(c, bundle) is None for c in configurations)
