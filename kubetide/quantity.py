"""Kubernetes resource quantities, the one parser and formatter every kubetide part uses.

``"250m"``, ``"1.5"``, ``"512Mi"``, ``"1G"``, ``"1200n"`` → base units (cores for CPU, bytes
for memory), with the apiserver's decimal (k, M, G…) and binary (Ki, Mi, Gi…) suffixes,
computed exactly in Decimal. kubernetes_asyncio does not ship the sync client's
``kubernetes.utils.quantity.parse_quantity``; this is the same algorithm.
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


def parse_decimal(value: str | int | float | Decimal) -> Decimal:
    """A quantity as an exact Decimal in base units (may be negative); ValueError if it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float | Decimal):
        return Decimal(value)
    if not isinstance(value, str):
        raise ValueError(f"not a quantity: {value!r}")
    m = _RE.match(value.strip())
    if not m:
        raise ValueError(f"not a quantity: {value!r}")
    try:
        return Decimal(m.group(1)) * _SUFFIX[m.group(2) or ""]
    except InvalidOperation:
        raise ValueError(f"not a quantity: {value!r}") from None


def parse_quantity(value: str | int | float) -> float:
    """A resource amount as a float in base units; ValueError if it is not one or is negative."""
    result = parse_decimal(value)
    if result < 0:
        raise ValueError(f"negative quantity: {value!r}")
    return float(result)


def quantity(value: object, default: float = 0.0) -> float:
    """Lenient form for snapshots of API objects: missing, unparsable or negative → ``default``."""
    if value is None:
        return default
    try:
        return parse_quantity(value)  # type: ignore[arg-type]
    except ValueError:
        return default


def format_cpu(cores: float) -> str:
    """Format cores as millicores ("1250m"), or whole cores ("2") when exact."""
    milli = round(cores * 1000)
    if milli % 1000 == 0:
        return str(milli // 1000)
    return f"{milli}m"


def format_nanocores(cores: float) -> str:
    """metrics-server style CPU usage: "1234567n"."""
    return f"{max(0, round(cores * 1e9))}n"


def format_memory(num_bytes: float) -> str:
    """Format bytes with the largest exact binary suffix ("512Mi", "32Gi"), else Ki-rounded."""
    b = round(num_bytes)
    for suffix, mult in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if b and b % mult == 0:
            return f"{b // mult}{suffix}"
    return str(b)


def format_kibibytes(num_bytes: float) -> str:
    """metrics-server style memory usage: "1634500Ki"."""
    return f"{max(0, round(num_bytes / 1024))}Ki"
