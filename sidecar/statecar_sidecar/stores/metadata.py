"""
Dapr component metadata values (durations, booleans), parsed one way for every backend.

Dapr accepts Go duration strings (`500ms`, `1m30s`) or a bare integer whose unit the component
decides: seconds for the SQL stores' `timeoutInSeconds`/`busyTimeout` (components-contrib's
decode hook), milliseconds for Redis's `dialTimeout`/`readTimeout` (common/component/redis).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

from statecar_sidecar.stores.errors import StoreError

_GO_DURATION: Final = re.compile(r"(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+")
_GO_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def duration(
    metadata: Mapping[str, str], names: Sequence[str], default: float, *, bare_unit: float = 1.0
) -> float:
    """Seconds from the first of `names` present; a bare integer counts in `bare_unit` seconds."""
    for name in names:
        raw = metadata.get(name)
        if raw is None or raw.strip() == "":
            continue
        text = raw.strip()
        if text.lstrip("-").isdigit():
            return float(int(text)) * bare_unit
        body = text.lstrip("+-")
        if body == "0":
            return 0.0
        if not _GO_DURATION.fullmatch(body):
            raise StoreError(
                f"invalid {name} {raw!r}: use a duration like '500ms', '2s' or '1m', or a whole number"
            )
        total = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _GO_DURATION_PART.findall(body))
        return -total if text.startswith("-") else total
    return default


def flag(metadata: Mapping[str, str], name: str) -> bool:
    """A boolean setting; anything but the usual spellings is an error naming the setting."""
    raw = (metadata.get(name) or "").strip().lower()
    if raw in ("", "false", "0", "no", "off"):
        return False
    if raw in ("true", "1", "yes", "on"):
        return True
    raise StoreError(f"invalid {name} {metadata[name]!r}: use true or false")
