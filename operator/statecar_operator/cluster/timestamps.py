"""
The Kubernetes API's wire format for times (metav1.Time): RFC 3339, UTC, whole seconds.

One writer for every timestamp the operator puts into an object it writes: condition
transitions, Events, the webhook certificate's step annotation and messages.
"""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(moment: datetime) -> str:
    """metav1.Time's wire format: RFC 3339, UTC, whole seconds."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
