"""Which VM a domain belongs to: its metadata round-trips, survives hostile names, and
its hardware fingerprint changes only with the fields a restart applies."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.domain import converter, identity
from kubevisor.core.domain.host import HostEnvironment

from .builders import HOSTILE, vm


def test_metadata_round_trips() -> None:
    machine = vm({"memory": {"size": "64Mi"}})
    xml = converter.render(machine, host=HostEnvironment(domain_type="qemu"))
    ref = identity.read_metadata(xml)
    assert ref == identity.VmRef(
        namespace="prod",
        name="web",
        uid="6f1c1f9e-8a3b-4c55-9a55-0d7b5c2d1e01",
        generation=3,
        hardware=identity.hardware_fingerprint(machine.spec),
    )


@pytest.mark.parametrize(
    ("change", "restart_needed"),
    [
        pytest.param({"cpu": {"vcpus": 2}}, True, id="vcpus"),
        pytest.param({"memory": {"size": "128Mi"}}, True, id="memory"),
        pytest.param({"runStrategy": "Halted"}, False, id="run-strategy"),
        pytest.param({"paused": True}, False, id="paused"),
        pytest.param({"placement": {"group": "g", "policy": "affinity"}}, False, id="placement"),
        pytest.param({"firmware": {"type": "uefi"}}, True, id="firmware"),
        pytest.param({"devices": {"pci": [{"alias": "gpu"}]}}, True, id="pci-devices"),
        pytest.param({"security": {"requireConfinement": True}}, True, id="security"),
        pytest.param({"memory": {"size": "64Mi", "balloon": {}}}, True, id="balloon"),
        pytest.param({"container": {"rootfs": "/srv/web"}}, True, id="container"),
    ],
)
def test_hardware_fingerprint_changes_only_with_restart_requiring_fields(
    change: dict[str, Any], restart_needed: bool
) -> None:
    before = vm({"memory": {"size": "64Mi"}})
    after = vm({"memory": {"size": "64Mi"}, **change})
    changed = identity.hardware_fingerprint(before.spec) != identity.hardware_fingerprint(
        after.spec
    )
    assert changed is restart_needed


def test_foreign_domain_has_no_kubevisor_metadata() -> None:
    assert identity.read_metadata("<domain type='qemu'><name>other</name></domain>") is None


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_cannot_change_the_structure(text: str) -> None:
    machine = VirtualMachine.model_validate(
        {
            "metadata": {"namespace": text, "name": text, "uid": "u", "generation": 1},
            "spec": {"memory": {"size": "64Mi"}, "boot": {"kernel": "/k", "cmdline": text}},
        }
    )
    xml = converter.render(machine, host=HostEnvironment(domain_type="qemu"))
    root = ET.fromstring(xml)
    assert root.find(".//evil") is None
    assert [child.tag for child in root].count("devices") == 1
    assert root.findtext("os/cmdline") == text
    assert root.findtext("name") == f"{text}_{text}"
    ref = identity.read_metadata(xml)
    assert ref is not None and (ref.namespace, ref.name) == (text, text)
