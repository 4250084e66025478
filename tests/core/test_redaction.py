"""Secrets out of diagnose bundles: the pieces of a VM's secrets, scrubbing text with
them, and secret attributes of domain XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from kubevisor.core import redaction
from kubevisor.core.redaction import REDACTED

SECRET = "hunter2-do-not-leak"
VM = {
    "metadata": {"name": "db", "annotations": {redaction.LAST_APPLIED: '{"spec": {}}'}},
    "spec": {
        "cloudInit": {
            "userData": f"#cloud-config\nchpasswd:\n  list: |\n    root:{SECRET}\n"
            "ssh_authorized_keys:\n  - ssh-ed25519 AAAAC3Nza-key alice@laptop\n",
            "metaData": "instance-id: i-0042-db\n",
        },
        "memory": {"size": "128Mi"},
    },
}


def test_secret_values_holds_each_piece_of_the_secrets() -> None:
    pieces = redaction.secret_values(VM)
    assert SECRET in pieces  # the value after `root:`
    assert f"root:{SECRET}" in pieces
    assert "ssh-ed25519 AAAAC3Nza-key alice@laptop" in pieces
    assert "i-0042-db" in pieces
    assert "128Mi" not in pieces  # not under a secret field
    assert all(len(piece) >= redaction.MIN_SECRET for piece in pieces)


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        pytest.param(f"login: root:{SECRET}\n", f"login: {REDACTED}\n", id="whole-line-first"),
        pytest.param(f"echo {SECRET} > /dev/ttyS0", f"echo {REDACTED} > /dev/ttyS0", id="value"),
        pytest.param("booting, root on vda\n", "booting, root on vda\n", id="short-words-stay"),
    ],
)
def test_scrub(text: str, wanted: str) -> None:
    assert redaction.scrub(text, redaction.secret_values(VM)) == wanted


def test_redact_xml_replaces_secret_attributes_only() -> None:
    xml = (
        "<domain><name>default_db</name><devices>"
        "<graphics type='vnc' passwd='vnc-pass-1' port='-1'/>"
        "<disk type='network'><auth username='admin'><secret type='ceph' usage='x'/></auth>"
        "</disk></devices></domain>"
    )
    root = ET.fromstring(redaction.redact_xml(xml))
    graphics = root.find("devices/graphics")
    assert graphics is not None and graphics.get("passwd") == REDACTED
    assert graphics.get("port") == "-1"
    auth = root.find("devices/disk/auth")
    assert auth is not None and auth.get("username") == "admin"
    assert root.findtext("name") == "default_db"


def test_redact_xml_leaves_what_does_not_parse() -> None:
    assert redaction.redact_xml("<domain") == "<domain"
