"""Building blocks the API models share: the camelCase base model, schema annotations
that only Kubernetes understands (CEL rules, list types) and the constrained string types.

`kubevisor.api.crd` turns the annotations they leave in the pydantic JSON schema into a
structural CRD schema. GROUP/VERSION and the wire form of timestamps are used by every
layer that writes objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from kubevisor.api import cpuset, quantity
from kubevisor.api.wire import API_VERSION


def timestamp(moment: datetime) -> str:
    """A time as status fields and Events carry it: RFC 3339, whole seconds, UTC (a naive
    `moment` is taken to be UTC already)."""
    utc = moment if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime:
    """A wire timestamp (`...Z` or with an offset, fractions allowed) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class ApiModel(BaseModel):
    """Base of every spec and status model: snake_case in Python, camelCase on the wire.

    Unknown fields are ignored rather than refused so an older agent can still read an
    object written by a newer controller; the API server's schema is what refuses typos.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict a patch or manifest carries: camelCase, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ApiObject(ApiModel):
    """Base of the whole-object models (a `VirtualMachine`, a `HypervisorHost`, ...), for
    reading manifests and watch events: each narrows `kind` and adds its spec and status."""

    api_version: Literal["kubevisor.io/v1alpha1"] = Field(
        default=API_VERSION, description="kubevisor.io/v1alpha1."
    )
    kind: str = Field(description="The object's kind.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Object metadata.")


def rule(
    expression: str,
    message: str,
    *,
    field_path: str | None = None,
    reason: str | None = None,
) -> dict[str, str]:
    """One `x-kubernetes-validations` entry (a CEL rule the API server evaluates).

    `field_path` (relative, e.g. ".threadPolicy") makes the API server report the error
    at that field instead of at the object holding the rule, so messages name the field.
    """
    entry = {"rule": expression, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` for a model or field carrying CEL rules."""
    return {"x-kubernetes-validations": list(rules)}


def list_map(*keys: str) -> dict[str, Any]:
    """`json_schema_extra` for a list merged by key (server-side apply, uniqueness)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}


def not_defaulted(schema: dict[str, Any]) -> None:
    """`json_schema_extra` for a field whose default the models apply when they read an
    object but the API server must not store: a VM and its flavor may each set the field,
    and a stored default would count as set (api.effective refuses fields set in both)."""
    schema.pop("default", None)


def cel_matches(expression: str, pattern: str) -> str:
    """CEL: the string `expression` matches `pattern` (RE2 reads our patterns as re does)."""
    if "'" in pattern:
        raise ValueError(f"{pattern!r} cannot be a CEL raw string literal")
    return f"{expression}.matches(r'{pattern}')"


def cel_is_quantity(expression: str) -> str:
    """CEL: `expression` is in kubevisor's quantity grammar, and so safe to pass to CEL's
    quantity(): isQuantity() itself would parse an unbounded exponent for minutes."""
    return cel_matches(expression, quantity.PATTERN)


def quantity_rule(comparison: str, message: str) -> dict[str, str]:
    """A CEL rule on quantity(self), evaluated only for strings in the grammar (the
    format rule reports the others; a failed `pattern` would not stop CEL from running)."""
    return rule(f"!{cel_is_quantity('self')} || quantity(self).{comparison}", message)


QUANTITY_RULES = (
    rule(cel_is_quantity("self"), quantity.FORMAT_MESSAGE),
    quantity_rule(f"compareTo(quantity('{quantity.MAX_TEXT}')) <= 0", quantity.MAX_MESSAGE),
)


def _check_quantity(text: str) -> str:
    quantity.parse(text)
    return text


def _check_positive_quantity(text: str) -> str:
    if quantity.parse(text) <= 0:
        raise ValueError(f"{text!r} must be greater than zero")
    return text


# A non-negative Kubernetes quantity string ("64Mi", "1Gi", "10G") in kubevisor's grammar
# (kubevisor.api.quantity). The schema checks it with CEL rules rather than an OpenAPI
# pattern: their messages are plain ("must be a size such as 512Mi or 2Gi").
Quantity = Annotated[
    str,
    StringConstraints(max_length=quantity.MAX_LENGTH),
    AfterValidator(_check_quantity),
    Field(json_schema_extra=validations(*QUANTITY_RULES)),
]

# A quantity that must be greater than zero ("0" and "0Mi" are quantities).
PositiveQuantity = Annotated[
    str,
    StringConstraints(max_length=quantity.MAX_LENGTH),
    AfterValidator(_check_positive_quantity),
    Field(
        json_schema_extra=validations(
            *QUANTITY_RULES,
            quantity_rule("isGreaterThan(quantity('0'))", "must be greater than zero"),
        )
    ),
]


def pattern_check(pattern: str, message: str) -> Callable[[str], str]:
    """An AfterValidator function: the string must match `pattern` whole (`message` says
    what it must be). Pair it with `rule(cel_matches("self", pattern), message)` so the
    API server refuses with the same plain words instead of "should match '^...'"."""
    compiled = re.compile(pattern)

    def check(text: str) -> str:
        if compiled.fullmatch(text) is None:
            raise ValueError(f"{text[:80]!r} {message}")
        return text

    return check


@dataclass(frozen=True)
class Refuse:
    """A string annotation: refuse strings in which `python` (a Python re) finds a match,
    here and, through a CEL rule with `re2` (the same class in RE2's syntax), in the
    API server, both with `message`."""

    python: str
    re2: str
    message: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        found = re.compile(self.python).search

        def check(text: str) -> str:
            if found(text):
                raise ValueError(f"{text[:80]!r} {self.message}")
            return text

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        refusal = rule(f"!{cel_matches('self', self.re2)}", self.message)
        json_schema.setdefault("x-kubernetes-validations", []).append(refusal)
        return json_schema


@dataclass(frozen=True)
class Matches:
    """A string annotation: the string must match `pattern` whole, here and, through a CEL
    rule, in the API server, both refusing with `message` (`pattern_check` as one piece)."""

    pattern: str
    message: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        check = pattern_check(self.pattern, self.message)
        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault("x-kubernetes-validations", []).append(
            rule(cel_matches("self", self.pattern), self.message)
        )
        return json_schema


# Characters XML 1.0 cannot carry, and that no name, path, argument or CPU model needs:
# a string with one of them that reaches a domain's XML makes the whole XML unreadable.
NO_CONTROL_CHARACTERS = Refuse(
    python=r"[\x00-\x1f\x7f\ufffe\uffff]",
    re2=r"[\x00-\x1f\x7f\x{FFFE}\x{FFFF}]",
    message="must not contain control characters (such as a newline or NUL)",
)

# A host path in normal form: absolute, and no component empty ('//', a trailing '/'),
# '.' or '..', so that it names what it reads as. Where it may point is the agent's to
# judge, after symlinks (core.hostpaths): this only keeps path tricks out of the API.
ABSOLUTE_PATH = Refuse(
    python=r"^[^/]|//|/$|(^|/)\.{1,2}(/|$)",
    re2=r"^[^/]|//|/$|(^|/)\.{1,2}(/|$)",
    message=(
        "must be an absolute path such as /var/lib/kubevisor/boot/vmlinuz, without '.' "
        "or '..' components, '//' or a trailing '/'"
    ),
)

# Bounded text for status fields the agent and controller write: short identifiers
# (libvirt states, versions, UUIDs), object names, URIs and human-readable messages (the
# bound of metav1.Condition's message).
MAX_URL_LENGTH: Final = 2048
ShortText = Annotated[str, StringConstraints(max_length=64)]
NameText = Annotated[str, StringConstraints(max_length=253)]
UriText = Annotated[str, StringConstraints(max_length=MAX_URL_LENGTH)]
Message = Annotated[str, StringConstraints(max_length=32768)]

# An RFC 1123 DNS label: names of disks and networks inside one VM.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL, min_length=1, max_length=63)]

# An object name (RFC 1123 subdomain), e.g. a VM or host referenced by name.
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ObjectName = Annotated[str, StringConstraints(pattern=OBJECT_NAME, min_length=1, max_length=253)]


def cel_is_cpuset(expression: str) -> str:
    """CEL: `expression` is in the cpuset grammar (bounded: safe to split and int())."""
    return cel_matches(expression, cpuset.PATTERN)


def cel_cpuset_ranges(expression: str) -> str:
    """CEL: the ranges of a cpuset list in the grammar, as a list of strings ("2-7", "9").
    The split limit tells the API server's cost estimator how long the list can be."""
    return f"{expression}.split(',', {cpuset.MAX_RANGES})"


def _cpuset_rule(condition: str, message: str) -> dict[str, str]:
    return rule(f"!{cel_is_cpuset('self')} || {condition}", message)


def _check_cpuset(text: str) -> str:
    cpuset.parse(text)
    return text


# A Linux cpuset list as in /sys and libvirt's cpuset attribute ("0-3,8,10-11"), in the
# grammar and bounds of kubevisor.api.cpuset, checked with plain-worded CEL rules.
CpuSet = Annotated[
    str,
    StringConstraints(min_length=1, max_length=cpuset.MAX_LENGTH),
    AfterValidator(_check_cpuset),
    Field(
        json_schema_extra=validations(
            rule(cel_is_cpuset("self"), cpuset.FORMAT_MESSAGE),
            _cpuset_rule(
                f"{cel_cpuset_ranges('self')}.all(r, r.split('-', 2).all(n,"
                f" int(n) < {cpuset.MAX_CPUS}))",
                cpuset.LIMIT_MESSAGE,
            ),
            _cpuset_rule(
                f"{cel_cpuset_ranges('self')}.all(r, !r.contains('-')"
                " || int(r.split('-', 2)[0]) <= int(r.split('-', 2)[1]))",
                cpuset.ORDER_MESSAGE,
            ),
        )
    ),
]

# A PCI address as sysfs and libvirt's nodedev names print it: domain:bus:slot.function.
PCI_ADDRESS = r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$"
PciAddress = Annotated[str, StringConstraints(pattern=PCI_ADDRESS, max_length=12)]

# A PCI vendor or product id: four lower-case hex digits, as in lspci -n ("8086").
PCI_ID = r"^[0-9a-f]{4}$"
PciId = Annotated[str, StringConstraints(pattern=PCI_ID, max_length=4)]
