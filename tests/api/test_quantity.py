"""kubevisor.api.quantity: Kubernetes quantities as exact numbers, and back."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from kubevisor.api import quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("0", Fraction(0), id="zero"),
        pytest.param("64Mi", Fraction(64 * 1024**2), id="binary-mi"),
        pytest.param("1.5Gi", Fraction(3 * 1024**3, 2), id="fractional-binary"),
        pytest.param("2G", Fraction(2 * 10**9), id="decimal-g"),
        pytest.param("500m", Fraction(1, 2), id="milli"),
        pytest.param("1e3", Fraction(1000), id="exponent"),
        pytest.param("1E-3", Fraction(1, 1000), id="negative-exponent"),
        pytest.param(".5Ki", Fraction(512), id="leading-dot"),
        pytest.param("-1Gi", Fraction(-(1024**3)), id="signed"),
        pytest.param("128974848", Fraction(128974848), id="plain-bytes"),
    ],
)
def test_parse(text: str, value: Fraction) -> None:
    assert quantity.parse(text) == value


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("lots", id="word"),
        pytest.param("64MB", id="unknown-suffix"),
        pytest.param("64 Mi", id="space-inside"),
        pytest.param("1e1.5", id="fractional-exponent"),
        pytest.param("Mi", id="suffix-only"),
    ],
)
def test_parse_refuses(text: str) -> None:
    assert not quantity.is_quantity(text)
    with pytest.raises(quantity.QuantityError):
        quantity.parse(text)


@pytest.mark.parametrize(
    "text", ["0", "64Mi", "1.5Gi", "2G", "500m", "1e3", ".5Ki", "128974848", "1."]
)
def test_schema_pattern_accepts_what_parse_accepts(text: str) -> None:
    assert re.match(quantity.PATTERN, text)
    assert quantity.is_quantity(text)


@pytest.mark.parametrize("text", ["-1Gi", "+1Gi", "lots", "64MB", ""])
def test_schema_pattern_refuses_signs_and_garbage(text: str) -> None:
    assert not re.match(quantity.PATTERN, text)


@pytest.mark.parametrize(
    ("text", "mib", "kib", "count"),
    [
        pytest.param("64Mi", 64, 65536, 67108864, id="exact"),
        pytest.param("1Gi", 1024, 1048576, 1073741824, id="gi"),
        pytest.param("100M", 96, 97657, 100000000, id="decimal-rounds-up"),
        pytest.param("500m", 1, 1, 1, id="fraction-rounds-up"),
    ],
)
def test_conversions_round_up(text: str, mib: int, kib: int, count: int) -> None:
    assert quantity.to_mib(text) == mib
    assert quantity.to_kib(text) == kib
    assert quantity.to_bytes(text) == count


@pytest.mark.parametrize(
    ("count", "text"),
    [
        pytest.param(0, "0", id="zero"),
        pytest.param(1000, "1000", id="not-binary"),
        pytest.param(1024, "1Ki", id="ki"),
        pytest.param(1610612736, "1536Mi", id="largest-exact-unit"),
        pytest.param(1073741824, "1Gi", id="gi"),
        pytest.param(3 * 1024**4, "3Ti", id="ti"),
    ],
)
def test_format_bytes(count: int, text: str) -> None:
    assert quantity.format_bytes(count) == text
    assert quantity.to_bytes(text) == count


def test_format_bytes_refuses_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        quantity.format_bytes(-1)
