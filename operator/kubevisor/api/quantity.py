"""Kubernetes resource quantities ("64Mi", "1.5Gi", "2G", "500m") as exact numbers.

The API models keep memory and disk sizes as the strings users wrote; the placement
engine, the agent and the status writers call these pure functions to do arithmetic on
them and to write sizes back in Kubernetes' canonical binary form.
The grammar is the one of k8s.io/apimachinery's resource.Quantity, so a string the API
server accepts (see PATTERN) always parses here.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

# resource.Quantity's grammar without the sign: sizes in our schemas are never negative,
# so a "-1Gi" is refused by the schema pattern rather than by a later CEL rule.
PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

_SIGNED = re.compile(r"^(?P<sign>[+-])?(?P<number>([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(?P<suffix>.*)$")

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_EXPONENT = re.compile(r"^[eE](?P<exp>[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+)))$")

MI = 1024**2
GI = 1024**3


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


def parse(text: str) -> Fraction:
    """The exact value of `text` ("1.5Gi" -> 1610612736); raises QuantityError."""
    match = _SIGNED.match(text.strip())
    if match is None:
        raise QuantityError(f"{text!r} is not a quantity (expected e.g. 64Mi, 1Gi, 2G, 500m)")
    value = Fraction(match["number"])
    suffix = match["suffix"]
    if suffix in _BINARY:
        value *= 1024 ** _BINARY[suffix]
    elif suffix in _DECIMAL:
        value *= Fraction(10) ** _DECIMAL[suffix]
    else:
        exponent = _EXPONENT.match(suffix)
        if exponent is None:
            raise QuantityError(f"{text!r} has an unknown suffix {suffix!r}")
        exp = Fraction(exponent["exp"])
        if exp.denominator != 1:
            raise QuantityError(f"{text!r} has a fractional exponent")
        value *= Fraction(10) ** int(exp)
    return -value if match["sign"] == "-" else value


def is_quantity(text: str) -> bool:
    """True when `text` parses as a quantity (signs allowed, like resource.Quantity)."""
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
