"""Kubernetes resource quantities ("250m", "1.5", "512Mi", "1G", "1200n") -> float base units.

kubernetes_asyncio 36 does not ship ``kubernetes.utils.quantity.parse_quantity`` (the sync
client does); this is the same algorithm (Decimal, binary and decimal SI suffixes).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIX = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
    "P": Decimal(10**15), "E": Decimal(10**18),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}
_RE = re.compile(r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def parse_quantity(value: str | int | float | Decimal) -> Decimal:
    """Parse a quantity to a Decimal in base units; ValueError if it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float | Decimal):
        return Decimal(value)
    m = _RE.match(str(value).strip())
    if not m:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = m.group(1), m.group(2) or ""
    try:
        return Decimal(number) * _SUFFIX[suffix]
    except InvalidOperation:
        raise ValueError(f"not a quantity: {value!r}") from None


def quantity(value: object, default: float = 0.0) -> float:
    """Lenient float form for snapshots: missing or unparsable -> ``default``."""
    if value is None:
        return default
    try:
        v = float(parse_quantity(value))  # type: ignore[arg-type]
    except ValueError:
        return default
    return v if v >= 0 else default
