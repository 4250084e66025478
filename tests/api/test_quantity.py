"""kubevisor.api.quantity: Kubernetes quantities as exact numbers, and back.

tests/api/test_quantity_oracle.py checks the grammar against Kubernetes' own parser."""

from __future__ import annotations

import re
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        pytest.param("1e+09", Fraction(10**9), id="signed-two-digit-exponent"),
        pytest.param("4e-99", Fraction(4, 10**99), id="smallest-exponent"),
        pytest.param(".5Ki", Fraction(512), id="leading-dot"),
        pytest.param("1.", Fraction(1), id="trailing-dot"),
        pytest.param("128974848", Fraction(128974848), id="plain-bytes"),
        pytest.param("2E", Fraction(2 * 10**18), id="exa-not-an-exponent"),
        pytest.param("4Ei", Fraction(4 * 1024**6), id="the-maximum"),
    ],
)
def test_parse(text: str, value: Fraction) -> None:
    assert quantity.parse(text) == value


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("", "such as 512Mi", id="empty"),
        pytest.param("lots", "such as 512Mi", id="word"),
        pytest.param("64MB", "such as 512Mi", id="unknown-suffix"),
        pytest.param("64 Mi", "such as 512Mi", id="space-inside"),
        pytest.param(" 64Mi", "such as 512Mi", id="leading-space"),
        pytest.param("64Mi\n", "such as 512Mi", id="trailing-newline"),
        pytest.param("1e1.5", "such as 512Mi", id="fractional-exponent"),
        pytest.param("1e999999999.0", "such as 512Mi", id="fractional-huge-exponent"),
        pytest.param("1e999999999", "such as 512Mi", id="huge-exponent"),
        pytest.param("1e100", "such as 512Mi", id="three-digit-exponent"),
        pytest.param("Mi", "such as 512Mi", id="suffix-only"),
        pytest.param(".", "such as 512Mi", id="dot-only"),
        pytest.param("-1Gi", "such as 512Mi", id="negative"),
        pytest.param("+1Gi", "such as 512Mi", id="plus-sign"),
        pytest.param("1e", "such as 512Mi", id="exponent-without-digits"),
        pytest.param("1K", "such as 512Mi", id="upper-case-k"),
        pytest.param("\u0661\u0662Mi", "such as 512Mi", id="non-ascii-digits"),
        pytest.param("4.000000001Ei", "at most 4Ei", id="just-above-the-maximum"),
        pytest.param("9Ei", "at most 4Ei", id="above-int64"),
        pytest.param("1e99", "at most 4Ei", id="largest-exponent"),
        pytest.param("1" * 65, "longer than 64", id="too-long"),
    ],
)
def test_parse_refuses(text: str, says: str) -> None:
    assert not quantity.is_quantity(text)
    with pytest.raises(quantity.QuantityError, match=says):
        quantity.parse(text)


def test_refusal_quotes_at_most_the_limit() -> None:
    with pytest.raises(quantity.QuantityError) as refused:
        quantity.parse("9" * 1_000_000)
    assert len(str(refused.value)) < 200


@pytest.mark.parametrize(
    "text", ["0", "64Mi", "1.5Gi", "2G", "500m", "1e3", ".5Ki", "128974848", "1."]
)
def test_schema_pattern_accepts_what_parse_accepts(text: str) -> None:
    assert re.fullmatch(quantity.PATTERN, text)
    assert quantity.is_quantity(text)


@pytest.mark.parametrize("text", ["-1Gi", "+1Gi", "lots", "64MB", "", "1e100", "1e1.0"])
def test_schema_pattern_refuses_signs_and_garbage(text: str) -> None:
    assert not re.fullmatch(quantity.PATTERN, text)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.text(alphabet="0123456789.eE+-KMGTPEikmnu", max_size=200),
        st.builds(lambda n, e: f"{n}e{e}", st.integers(0, 10**30), st.integers(0, 10**12)),
    )
)
def test_parse_takes_bounded_time_whatever_the_input(text: str) -> None:
    # CPU time of this process, so a busy machine does not fail it; an unbounded exponent
    # ("1e999999999" computed exactly) would take minutes.
    started = time.process_time()
    quantity.is_quantity(text)
    assert time.process_time() - started < 0.05


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


@pytest.mark.parametrize(
    ("mib", "text"),
    [
        pytest.param(8 * 1024, "8Gi", id="gibibytes"),
        pytest.param(512, "512Mi", id="mebibytes"),
        pytest.param(1536, "1.5Gi", id="fractional"),
        pytest.param(0, "0Mi", id="zero"),
        pytest.param(2 * 1024 * 1024, "2Ti", id="tebibytes"),
    ],
)
def test_format_mib(mib: int, text: str) -> None:
    assert quantity.format_mib(mib) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [
        pytest.param(0, "0.0 MiB", id="nothing-yet"),
        pytest.param(3 * (1 << 20) // 2, "1.5 MiB", id="fraction"),
    ],
)
def test_in_mib(count: int, text: str) -> None:
    assert quantity.in_mib(count) == text
