"""Secrets out of what `kubevisor diagnose` gathers: objects, domain XML and log text.

Pure. `redact` is applied by the CLI to every object it writes; the agent applies
`redact_xml` and `scrub_xml` to the live domain XML and `scrub` with the VM's
`secret_values` to every log it serves (the QEMU, serial and agent log lines), so a
secret the guest or QEMU echoes (a cloud-init password printed on the serial console) is
cut out too.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any, Final
from xml.sax.saxutils import escape

REDACTED: Final = "<redacted>"
# Fields whose values are secrets wherever they appear (matched on the camelCase name).
SECRET_FIELD: Final = re.compile(
    r"(?i)^(userData|metaData|networkConfig|password|passwd|token|secret|credentials?"
    r"|privateKey|.*Password|.*Token|.*PrivateKey)$"
)
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
# Domain XML attributes that hold secrets (<graphics passwd=...>, iSCSI/RBD auth usage).
SECRET_ATTRIBUTE: Final = re.compile(r"(?i)^(passwd|password|secret|key|token)$")
MIN_SECRET: Final = 6
"""Shorter pieces of a secret text are not scrubbed from logs: `yes`, `true`, `root`
would cut ordinary words out of every line."""


def redact(node: Any) -> Any:
    """A copy of `node` with every secret value replaced by REDACTED (a field named as in
    SECRET_FIELD holding text or data, and the last-applied annotation), and no
    managedFields."""
    if isinstance(node, list):
        return [redact(item) for item in node]
    if not isinstance(node, dict):
        return node
    copy: dict[str, Any] = {}
    for key, value in node.items():
        if key == "managedFields":
            continue
        if key == LAST_APPLIED or (SECRET_FIELD.match(key) and not isinstance(value, dict)):
            copy[key] = REDACTED
        else:
            copy[key] = redact(value)
    return copy


def _secret_texts(node: Any) -> Iterable[str]:
    """Every text value under a secret field of `node` (and the last-applied annotation)."""
    if isinstance(node, list):
        for item in node:
            yield from _secret_texts(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            secret = key == LAST_APPLIED or SECRET_FIELD.match(key)
            if secret and isinstance(value, str):
                yield value
            elif not isinstance(value, str):
                yield from _secret_texts(value)


def secret_values(vm: Any) -> frozenset[str]:
    """The pieces of `vm`'s secrets worth cutting out of text: each whole secret, each of
    its lines, and each line's value after a `key:` or `key=` (a `password: hunter2`
    line of cloud-config yields `hunter2`), MIN_SECRET characters or longer."""
    pieces: set[str] = set()
    for text in _secret_texts(vm):
        pieces.add(text.strip())
        for line in text.splitlines():
            line = line.strip().strip("-").strip()
            pieces.add(line)
            for separator in (":", "="):
                if separator in line:
                    pieces.add(line.split(separator, 1)[1].strip().strip("\"'"))
    return frozenset(p for p in pieces if len(p) >= MIN_SECRET)


def scrub(text: str, secrets: Iterable[str], *, replacement: str = REDACTED) -> str:
    """`text` with every occurrence of each secret replaced by REDACTED, longest first
    (so a whole secret goes before a piece of it)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, replacement)
    return text


def scrub_xml(xml: str, secrets: Iterable[str]) -> str:
    """`scrub` for XML text: the secrets as they are and as XML escapes them, replaced
    by REDACTED escaped, so the XML stays well-formed and reads REDACTED when parsed."""
    pieces = set(secrets)
    escaped = pieces | {escape(piece, {'"': "&quot;"}) for piece in pieces}
    return scrub(xml, escaped, replacement=escape(REDACTED))


def redact_xml(xml: str) -> str:
    """Domain XML with every secret attribute's value (SECRET_ATTRIBUTE) replaced; XML
    that does not parse is returned as it is (scrub still applies to it)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return xml
    for element in root.iter():
        for name in element.attrib:
            if SECRET_ATTRIBUTE.match(name):
                element.set(name, REDACTED)
    return ET.tostring(root, encoding="unicode")
