"""
The labels on every object the operator creates or prints: who manages it, and what it is.
"""

from __future__ import annotations

from typing import Final

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "statecar"
#: The type of every wiring Secret: says what it is in `kubectl get secrets`, cannot be confused
#: with a user's Opaque Secret of the same name, and is immutable, so the operator's admission
#: policy (`rbac.secret_policy`) can tell its Secrets from everyone else's.
WIRING_SECRET_TYPE: Final = "statecar.io/wiring"  # noqa: S105  # a Secret type, not a credential
