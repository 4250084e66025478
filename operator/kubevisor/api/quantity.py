"""Kubernetes resource quantities ("64Mi", "1.5Gi", "2G", "500m") as exact numbers.

The API models keep memory and disk sizes as the strings users wrote; the placement
engine, the agent and the status writers call these pure functions to do arithmetic on
them and to write sizes back in Kubernetes' canonical binary form.

kubevisor accepts one grammar, here and in the CRD schemas alike (`kubevisor.api.schema`
turns PATTERN and MAX into CEL rules): the strings k8s.io/apimachinery's
resource.ParseQuantity accepts, narrowed so that every accepted string is cheap to
evaluate, both here and in the API server's CEL quantity(). The narrowing:

- no sign (sizes are never negative) and at least one digit (ParseQuantity reads "Mi",
  "." and "+" as zero);
- at most MAX_LENGTH characters, and an exponent of at most two digits (e0..e99):
  ParseQuantity and Python's exact arithmetic both compute 10**exponent, and
  "1e999999999" kept the API server busy for minutes;
- a value of at most MAX (4Ei): every accepted value is exact in Go's int64, so CEL's
  isInteger()/asInteger() agree with Python, and ParseQuantity's silent cap of binary
  values at 2**63-1 never applies.

tests/api/test_quantity_oracle.py checks that this is exactly ParseQuantity's set (and
its values) within those bounds, on generated strings.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Final

# The grammar, as a regular expression both Python's re and RE2 (CEL's matches()) read
# the same way. Anchored for RE2; Python matches it with fullmatch (no "$\n" slack).
PATTERN: Final = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]{1,2}))?$"
)
MAX_LENGTH: Final = 64
MAX_TEXT: Final = "4Ei"
MAX: Final = 4 * 1024**6

# What a refusal says, in the API server's messages and in Python's alike.
FORMAT_MESSAGE: Final = (
    "must be a size such as 512Mi or 2Gi: a number with an optional suffix "
    "(Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, or an exponent such as e9)"
)
MAX_MESSAGE: Final = f"must be at most {MAX_TEXT}"

_GRAMMAR = re.compile(PATTERN)
_PARTS = re.compile(r"(?P<number>[0-9.]+)(?P<suffix>.*)")

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

MI = 1024**2
GI = 1024**3


class QuantityError(ValueError):
    """A string that is not a quantity kubevisor accepts."""


def _shown(text: str) -> str:
    # Error messages quote the input, but never all of a megabyte of it.
    return repr(text if len(text) <= MAX_LENGTH else text[:MAX_LENGTH] + "...")


def parse(text: str) -> Fraction:
    """The exact value of `text` ("1.5Gi" -> 1610612736); raises QuantityError.

    Takes time bounded by MAX_LENGTH whatever `text` is: the length is checked before
    the regular expression (which has no nested repetition), and the exponent has at
    most two digits."""
    if len(text) > MAX_LENGTH:
        raise QuantityError(f"{_shown(text)} is longer than {MAX_LENGTH} characters")
    if _GRAMMAR.fullmatch(text) is None:
        raise QuantityError(f"{_shown(text)} {FORMAT_MESSAGE}")
    parts = _PARTS.fullmatch(text)
    assert parts is not None  # the grammar starts with [0-9.]+
    value = Fraction(parts["number"])
    suffix = parts["suffix"]
    if suffix in _BINARY:
        value *= 1024 ** _BINARY[suffix]
    elif suffix in _DECIMAL:
        value *= Fraction(10) ** _DECIMAL[suffix]
    else:
        value *= Fraction(10) ** int(suffix[1:])
    if value > MAX:
        raise QuantityError(f"{_shown(text)} {MAX_MESSAGE}")
    return value


def is_quantity(text: str) -> bool:
    """True when `text` parses as a quantity."""
    try:
        parse(text)
    except QuantityError:
        return False
    return True


def to_bytes(text: str) -> int:
    """`text` as whole bytes, rounded up as resource.Quantity.Value() does."""
    return math.ceil(parse(text))


def to_mib(text: str) -> int:
    """`text` in whole MiB, rounded up: a guest that asks for part of a MiB gets all of it."""
    return math.ceil(parse(text) / MI)


def to_kib(text: str) -> int:
    """`text` in whole KiB, rounded up (libvirt's <memory unit='KiB'>)."""
    return math.ceil(parse(text) / 1024)


def format_bytes(count: int) -> str:
    """`count` bytes in canonical binary form: the largest of Ki..Ei that divides it exactly.

    Status writers call this so that sizes they report read like the ones users write
    (1073741824 -> "1Gi", 1610612736 -> "1536Mi", 1000 -> "1000").
    """
    if count < 0:
        raise ValueError(f"byte count must not be negative, got {count}")
    for suffix, power in sorted(_BINARY.items(), key=lambda item: -item[1]):
        unit = 1024**power
        if count and count % unit == 0:
            return f"{count // unit}{suffix}"
    return str(count)


def format_mib(mib: int) -> str:
    """A MiB amount for tables, compact (1536 -> 1.5Gi); placement explanations use the
    exact `core.placement.units.mib`."""
    if mib != 0 and mib % (1024 * 1024) == 0:
        return f"{mib // (1024 * 1024)}Ti"
    if mib != 0 and mib % 1024 == 0:
        return f"{mib // 1024}Gi"
    if mib >= 1024:
        return f"{mib / 1024:.1f}Gi"
    return f"{mib}Mi"


def in_mib(count: int) -> str:
    """`count` bytes as MiB with one decimal (12.3 MiB): download progress and cache sizes."""
    return f"{count / (1 << 20):.1f} MiB"
