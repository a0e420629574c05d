"""
Kubernetes resource quantities (`100m`, `64Mi`, `1.5G`, `2e3`), parsed so the injector can reject
a bad one at admission with a message instead of letting the API server fail later (or, like
Dapr's injector, dropping it with a log line). Pure.

Grammar: k8s.io/apimachinery `pkg/api/resource/quantity.go` (the comment above `type Quantity`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final

_QUANTITY: Final = re.compile(
    r"^(?P<number>[+-]?(\d+\.?\d*|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$"
)

_MULTIPLIERS: Final[dict[str, Decimal]] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


class QuantityError(ValueError):
    pass


#: Longer than any quantity Kubernetes can hold (int64 with a scale); "1" and 400 nines is a typo.
MAX_LENGTH: Final = 32
#: Kubernetes holds nothing beyond 10^18 (E) or below 10^-9 (n); "1e400" is not a size.
_MAX_EXPONENT: Final = 18


def parse_quantity(text: str) -> Decimal:
    """The value of a quantity in base units (cores, bytes); raises QuantityError."""
    stripped = text.strip()
    if len(stripped) > MAX_LENGTH:
        raise QuantityError(
            f"{len(stripped)} characters is not a Kubernetes quantity "
            f"(at most {MAX_LENGTH}; examples: 100m, 0.5, 64Mi, 1Gi)"
        )
    # ASCII only: \d would also take other scripts' digits ("٣٥٠٠"), which Decimal reads.
    match = _QUANTITY.match(stripped) if stripped.isascii() else None
    if match is None:
        shown = repr(text) if len(text) <= MAX_LENGTH else f"{text[:MAX_LENGTH]!r}..."
        raise QuantityError(
            f"{shown} is not a Kubernetes quantity (examples: 100m, 0.5, 64Mi, 1Gi)"
        )
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover  # the pattern only lets decimals through
        raise QuantityError(f"{text!r} is not a number") from None
    suffix = match["suffix"] or ""
    if suffix[:1] in {"e", "E"} and suffix not in _MULTIPLIERS:
        exponent = int(suffix[1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise QuantityError(
                f"{text.strip()!r} is out of range: Kubernetes quantities go up to e18 (E)"
            )
        return number * (Decimal(10) ** exponent)
    return number * _MULTIPLIERS[suffix]
