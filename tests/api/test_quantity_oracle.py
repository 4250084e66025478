"""kubevisor's quantity grammar is Kubernetes' own, within stated bounds (tier 2: needs the
quantity oracle that hack/quantity/build.sh builds over k8s.io/apimachinery).

For every generated string: kubevisor.api.quantity accepts it exactly when
resource.ParseQuantity (what the API server's CEL quantity() runs) accepts it and it is
within kubevisor's bounds (no sign, a digit before the suffix, at most 64 characters, an
exponent of at most two digits, a value of at most 4Ei); and when both accept, both give
the same value. The bounds are written here independently of quantity.PATTERN.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness import quantity_bin, require
from kubevisor.api import quantity

# ParseQuantity computes 10**exponent: beyond this it is slow (the bug this grammar
# avoids), so the oracle is not asked; kubevisor must refuse such strings anyway.
ORACLE_EXPONENT_LIMIT = 100_000
NANO = Fraction(1, 10**9)


@dataclass(frozen=True)
class Answer:
    ok: bool
    text: str  # the exact decimal value ParseQuantity computed, "" when it refused

    @property
    def value(self) -> Fraction:
        """The value, for answers within kubevisor's bounds (at most 64 digits before an
        exponent of at most 99: well within Python's integer-conversion limit)."""
        return Fraction(self.text)


class Oracle:
    """One long-running hack/quantity process: a JSON string in, its verdict out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def ask(self, text: str) -> Answer:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(text) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        return Answer(reply["ok"], reply.get("value", ""))


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    bin_dir = quantity_bin()
    require(
        bin_dir is not None,
        what="the quantity oracle (k8s.io/apimachinery's ParseQuantity)",
        how="build it with hack/quantity/build.sh (or run `make test`)",
    )
    assert bin_dir is not None
    process = subprocess.Popen(
        [str(bin_dir / "quantity")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield Oracle(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


def _split(text: str) -> tuple[str, str, str]:
    """Sign, number and suffix the way ParseQuantity scans them."""
    sign = text[:1] if text[:1] in ("+", "-") else ""
    rest = text[len(sign) :]
    end = 0
    while end < len(rest) and rest[end] in "0123456789.":
        end += 1
    return sign, rest[:end], rest[end:]


def _exponent_digits(suffix: str) -> str:
    if len(suffix) > 1 and suffix[0] in "eE":
        return suffix[1:].lstrip("+-")
    return ""


def within_bounds(text: str) -> bool:
    """kubevisor's narrowing of ParseQuantity's grammar, except the value bound."""
    sign, number, suffix = _split(text)
    return (
        len(text) <= quantity.MAX_LENGTH
        and not sign
        and any(c in "0123456789" for c in number)
        and len(_exponent_digits(suffix)) <= 2
    )


def too_slow_for_the_oracle(text: str) -> bool:
    digits = _exponent_digits(_split(text)[2])
    return digits.isdigit() and digits.isascii() and int(digits) > ORACLE_EXPONENT_LIMIT


def rounded_as_go_does(value: Fraction) -> Fraction:
    """ParseQuantity rounds a value's magnitude up to a whole nano-unit."""
    return Fraction(math.ceil(value / NANO)) * NANO


_SUFFIXES = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E"]
_ODD_SUFFIXES = ["K", "i", "e", "E", "Mi5", "ee", "KiB", "MB", "mi", "\u00b5"]


@st.composite
def quantity_like(draw: st.DrawFn) -> str:
    """Strings near the grammar: signs, dots, leading zeros, every suffix, exponents of
    any length and sign, fractional exponents, trailing junk."""
    sign = draw(st.sampled_from(["", "", "", "+", "-"]))
    whole = draw(st.text(alphabet="0123456789", max_size=25))
    dot = draw(st.sampled_from(["", "", "."]))
    fraction = draw(st.text(alphabet="0123456789", max_size=12)) if dot else ""
    kind = draw(st.sampled_from(["suffix", "exponent", "odd", "none"]))
    if kind == "suffix":
        suffix = draw(st.sampled_from(_SUFFIXES))
    elif kind == "exponent":
        letter = draw(st.sampled_from(["e", "E"]))
        exp_sign = draw(st.sampled_from(["", "+", "-"]))
        digits = draw(st.text(alphabet="0123456789", min_size=0, max_size=12))
        tail = draw(st.sampled_from(["", "", "", ".0", ".5", "."]))
        suffix = f"{letter}{exp_sign}{digits}{tail}"
    elif kind == "odd":
        suffix = draw(st.sampled_from(_ODD_SUFFIXES))
    else:
        suffix = ""
    junk = draw(st.sampled_from(["", "", "", "", " ", "\n", "x", "0", "i"]))
    return f"{sign}{whole}{dot}{fraction}{suffix}{junk}"


STRINGS = st.one_of(
    quantity_like(),
    st.text(alphabet="0123456789.+-eEiKMGTPnumk ", max_size=70),
    st.text(max_size=20),
)


@settings(
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=STRINGS)
@example(text="1e999999999")
@example(text="1e999999999.0")
@example(text="1e4294967296")  # ParseQuantity truncates the exponent to int32: 10**0
@example(text="9Ei")  # ParseQuantity caps binary values at 2**63-1
@example(text="4Ei")
@example(text="Mi")
@example(text=".")
@example(text="0.0000000001")  # ParseQuantity rounds up to 1n
@example(text="1e-99")
def test_kubevisor_accepts_what_kubernetes_accepts_within_the_bounds(
    oracle: Oracle, text: str
) -> None:
    ours = quantity.is_quantity(text)
    if too_slow_for_the_oracle(text):
        assert not ours, f"{text!r}: an exponent this long must be refused"
        return
    theirs = oracle.ask(text)
    expected = theirs.ok and within_bounds(text) and theirs.value <= quantity.MAX
    assert ours == expected, f"{text!r}: kubevisor {ours}, ParseQuantity {theirs}"
    if ours:
        assert rounded_as_go_does(quantity.parse(text)) == theirs.value, text
