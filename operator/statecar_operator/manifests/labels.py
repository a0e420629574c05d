"""
The labels on every object the operator creates or prints: who manages it, and what it is.
"""

from __future__ import annotations

from typing import Final

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "statecar"
