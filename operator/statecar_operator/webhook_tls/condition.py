"""
The `WebhookCertificateReady` condition a replica reports about the certificate it serves
(in `/readyz`, `/healthz` and the Lease holder's Events). Pure.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, Final

from cryptography import x509

from statecar_operator.cluster.timestamps import format_time
from statecar_operator.webhook_tls.issuing import issued_by

#: Warn (condition reason ExpiringSoon, a Warning Event) when less than this share is left: late
#: enough that a renewal on time never warns, also under cert-manager's chart default of 1/6.
WARN_FRACTION: Final = 1 / 10
CONDITION_TYPE: Final = "WebhookCertificateReady"


def condition(
    serving: x509.Certificate | None,
    trusted: Sequence[x509.Certificate],
    *,
    now: datetime.datetime,
    rotation: str | None = None,
    check_issuer: bool = True,
) -> dict[str, Any]:
    """
    The `WebhookCertificateReady` condition (metav1.Condition's type/status/reason/message)
    of the certificate this replica serves, with the expiry times it is judged on.
    `check_issuer`: whether `trusted` must hold the serving certificate's direct issuer (true
    for the operator's own CA; a certificate from files may chain through intermediates).
    """
    result: dict[str, Any] = {"type": CONDITION_TYPE}
    if serving is None:
        return {
            **result,
            "status": "False",
            "reason": "NotLoaded",
            "message": "no webhook certificate is loaded yet",
        }
    not_after = serving.not_valid_after_utc
    result["servingNotAfter"] = format_time(not_after)
    ca_expiries = [c.not_valid_after_utc for c in trusted]
    if ca_expiries:
        result["caNotAfter"] = format_time(max(ca_expiries))
    lifetime = not_after - serving.not_valid_before_utc
    if now >= not_after:
        return {
            **result,
            "status": "False",
            "reason": "Expired",
            "message": f"the webhook certificate expired at {format_time(not_after)}",
        }
    if check_issuer and trusted and not any(issued_by(serving, ca) for ca in trusted):
        return {
            **result,
            "status": "False",
            "reason": "UntrustedCertificate",
            "message": "the served certificate is not signed by a CA of the caBundle",
        }
    soonest = min([not_after, *ca_expiries])
    if now >= not_after - lifetime * WARN_FRACTION or any(
        now
        >= c.not_valid_after_utc - (c.not_valid_after_utc - c.not_valid_before_utc) * WARN_FRACTION
        for c in trusted
    ):
        return {
            **result,
            "status": "True",
            "reason": "ExpiringSoon",
            "message": f"a webhook certificate expires at {format_time(soonest)} and has not been renewed",
        }
    if rotation is not None:
        return {
            **result,
            "status": "True",
            "reason": "Rotating",
            "message": f"the CA is being rotated ({rotation}); both CAs are trusted",
        }
    return {
        **result,
        "status": "True",
        "reason": "Valid",
        "message": f"valid until {format_time(not_after)}",
    }
