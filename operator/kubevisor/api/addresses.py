"""IPv4 addresses, IPv4 networks (CIDRs), MAC addresses and Linux interface names as the
API carries them.

One grammar each, checked the same way by pydantic here and by a CEL rule in the API
server (with a plain message instead of "should match '^...'"): the format is one
regular expression that Python's `re` and the API server's RE2 read alike, so a string one
side accepts the other accepts too. Arithmetic on them (containment, ordering) is CEL's IP
and CIDR library in the schema and `ipaddress` here, only ever on strings in the grammar.

The Network kind (`api.network`) and a VirtualMachine's interfaces use these types; the
address management in `core.network` works on the `ipaddress` values `ipv4`/`network`
return.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Final

from pydantic import AfterValidator, Field, StringConstraints

from kubevisor.api.schema import cel_matches, pattern_check, rule, validations

# One octet, 0..255, without leading zeros (what Go's netip and Python's ipaddress parse).
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED = rf"{_OCTET}(\.{_OCTET}){{3}}"
IPV4_PATTERN: Final = rf"^{_DOTTED}$"
CIDR_PATTERN: Final = rf"^{_DOTTED}/(3[0-2]|[12]?[0-9])$"
# A unicast MAC (the first octet's lowest bit clear) in lower-case colon form.
MAC_PATTERN: Final = r"^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$"

# A Linux interface name as the kernel accepts it (dev_valid_name): at most 15
# characters, none of '/', ':' or white space, and not "." or "..".
INTERFACE_PATTERN: Final = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}$"

IPV4_LENGTH: Final = len("255.255.255.255")
CIDR_LENGTH: Final = len("255.255.255.255/32")
MAC_LENGTH: Final = len("02:00:00:00:00:00")

# A subnet's prefix length: /8 holds 16 million addresses, /30 two usable ones (smaller
# networks leave no room for a VM beside the DHCP server's own address).
MIN_PREFIX: Final = 8
MAX_PREFIX: Final = 30

IPV4_MESSAGE: Final = "must be an IPv4 address such as 10.0.0.1"
CIDR_MESSAGE: Final = "must be an IPv4 network in CIDR form such as 10.0.0.0/24"
CIDR_HOST_BITS_MESSAGE: Final = (
    "must be the network's own address: no bits set after the prefix (10.0.0.0/24, not 10.0.0.1/24)"
)
PREFIX_MESSAGE: Final = f"the prefix length must be between /{MIN_PREFIX} and /{MAX_PREFIX}"
MAC_MESSAGE: Final = (
    "must be a unicast MAC address in lower-case colon form, such as 02:00:00:ab:cd:ef "
    "(the first octet even)"
)
INTERFACE_MESSAGE: Final = (
    "must be a Linux interface name such as eth1 or bond0.100: at most 15 letters, digits, "
    "'_', '-' and '.', not starting with '.'"
)
MAC_ZERO_MESSAGE: Final = "must not be 00:00:00:00:00:00"
ZERO_MAC: Final = "00:00:00:00:00:00"


def cel_is_ipv4(expression: str) -> str:
    """CEL: `expression` is an IPv4 address in the grammar (safe to pass to ip())."""
    return cel_matches(expression, IPV4_PATTERN)


def cel_is_cidr(expression: str) -> str:
    """CEL: `expression` is an IPv4 CIDR in the grammar (safe to pass to cidr())."""
    return cel_matches(expression, CIDR_PATTERN)


def cel_ipv4_number(expression: str) -> str:
    """CEL: the IPv4 address `expression` (in the grammar) as an int, for ordering (CEL's
    IP type has no `<`)."""
    octets = [f"int({expression}.split('.', 4)[{i}])" for i in range(4)]
    return f"({octets[0]} * 16777216 + {octets[1]} * 65536 + {octets[2]} * 256 + {octets[3]})"


def _check(pattern: str, message: str) -> AfterValidator:
    return AfterValidator(pattern_check(pattern, message))


def _check_prefix(text: str) -> str:
    net = ipaddress.IPv4Interface(text)
    if net.ip != net.network.network_address:
        raise ValueError(f"{text!r} {CIDR_HOST_BITS_MESSAGE}")
    if not MIN_PREFIX <= net.network.prefixlen <= MAX_PREFIX:
        raise ValueError(f"{text!r}: {PREFIX_MESSAGE}")
    return text


def _check_not_zero(text: str) -> str:
    if text == ZERO_MAC:
        raise ValueError(MAC_ZERO_MESSAGE)
    return text


# An IPv4 address ("10.0.0.1").
IPv4Address = Annotated[
    str,
    StringConstraints(min_length=7, max_length=IPV4_LENGTH),
    _check(IPV4_PATTERN, IPV4_MESSAGE),
    Field(json_schema_extra=validations(rule(cel_is_ipv4("self"), IPV4_MESSAGE))),
]

# An IPv4 subnet in CIDR form, its network address and a prefix of /8../30 ("10.0.0.0/24").
IPv4Cidr = Annotated[
    str,
    StringConstraints(min_length=9, max_length=CIDR_LENGTH),
    _check(CIDR_PATTERN, CIDR_MESSAGE),
    AfterValidator(_check_prefix),
    Field(
        json_schema_extra=validations(
            rule(cel_is_cidr("self"), CIDR_MESSAGE),
            rule(
                f"!{cel_is_cidr('self')} || cidr(self).masked() == cidr(self)",
                CIDR_HOST_BITS_MESSAGE,
            ),
            rule(
                f"!{cel_is_cidr('self')} || (cidr(self).prefixLength() >= {MIN_PREFIX}"
                f" && cidr(self).prefixLength() <= {MAX_PREFIX})",
                PREFIX_MESSAGE,
            ),
        )
    ),
]

# A unicast MAC address in lower-case colon form ("02:5e:10:aa:bb:cc").
MacAddress = Annotated[
    str,
    StringConstraints(min_length=MAC_LENGTH, max_length=MAC_LENGTH),
    _check(MAC_PATTERN, MAC_MESSAGE),
    AfterValidator(_check_not_zero),
    Field(
        json_schema_extra=validations(
            rule(cel_matches("self", MAC_PATTERN), MAC_MESSAGE),
            rule(f"self != '{ZERO_MAC}'", MAC_ZERO_MESSAGE),
        )
    ),
]


# A host's network interface ("eth1", "bond0").
InterfaceName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=15),
    _check(INTERFACE_PATTERN, INTERFACE_MESSAGE),
    Field(
        json_schema_extra=validations(
            rule(cel_matches("self", INTERFACE_PATTERN), INTERFACE_MESSAGE)
        )
    ),
]


def ipv4(text: str) -> ipaddress.IPv4Address:
    """The address of an `IPv4Address` string (already validated)."""
    return ipaddress.IPv4Address(text)


def network(text: str) -> ipaddress.IPv4Network:
    """The network of an `IPv4Cidr` string (already validated)."""
    return ipaddress.IPv4Network(text)
