from decimal import Decimal

import pytest

from kubetide.quantity import format_cpu, format_memory, parse_decimal, parse_quantity, quantity


@pytest.mark.parametrize(("text", "value"), [
    ("250m", 0.25), ("1.5", 1.5), ("512Mi", 512 * 2**20), ("1G", 1e9), ("1200n", 1.2e-6), ("2", 2.0),
    (".5", 0.5), ("1e3", 1000.0), ("3Ki", 3072.0), (4, 4.0),
])
def test_parse(text: str, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


def test_exact_and_errors() -> None:
    assert parse_decimal("0.1") * 3 == Decimal("0.3")
    assert parse_decimal("-1") == -1
    for bad in ("", "abc", "1.2.3", "5 Mi", True, None, "1Xi"):
        with pytest.raises(ValueError):
            parse_quantity(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        parse_quantity("-1")
    assert quantity(None, 7.0) == 7.0 and quantity("junk") == 0.0 and quantity("-2") == 0.0


def test_format_round_trips() -> None:
    for cores in (0.25, 1.0, 2.5, 0.001):
        assert parse_quantity(format_cpu(cores)) == pytest.approx(cores)
    for b in (512 * 2**20, 32 * 2**30, 1536):
        assert parse_quantity(format_memory(b)) == b
