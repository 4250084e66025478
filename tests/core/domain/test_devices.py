"""Device configurators: PCI devices as placed, multiqueue, disks with their files."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from kubevisor.core.domain import converter
from kubevisor.core.domain.document import DomainError
from kubevisor.core.domain.host import HostEnvironment

from .builders import vm


@pytest.mark.parametrize(
    ("pci_devices", "message"),
    [
        pytest.param([], "2 requested, placement assigned 0", id="not-placed"),
        pytest.param(
            [{"alias": "gpu", "address": "0000:af:00.0"}],
            "2 requested, placement assigned 1",
            id="one-short",
        ),
        pytest.param(
            [{"alias": "gpu", "address": f"0000:af:00.{f}"} for f in range(3)],
            "2 requested, placement assigned 3",
            id="one-too-many",
        ),
    ],
)
def test_pci_devices_must_match_the_placement(
    pci_devices: list[dict[str, str]], message: str
) -> None:
    machine = vm(
        {"memory": {"size": "64Mi"}, "devices": {"pci": [{"alias": "gpu", "count": 2}]}},
        status={"placement": {"pciDevices": pci_devices}},
    )
    with pytest.raises(DomainError, match=message):
        converter.render(machine, host=HostEnvironment(domain_type="kvm"))


@pytest.mark.parametrize(
    ("vcpus", "queues"),
    [
        pytest.param(1, None, id="one-vcpu-no-queues"),
        pytest.param(4, "4", id="one-queue-per-vcpu"),
        pytest.param(256, "16", id="capped"),
    ],
)
def test_multiqueue_queues_follow_vcpus_up_to_the_cap(vcpus: int, queues: str | None) -> None:
    machine = vm(
        {
            "cpu": {"vcpus": vcpus},
            "memory": {"size": "64Mi"},
            "networks": [{"name": "n", "type": "bridge", "source": "br0", "multiqueue": True}],
        }
    )
    root = ET.fromstring(converter.render(machine, host=HostEnvironment(domain_type="kvm")))
    driver = root.find("devices/interface/driver")
    assert (driver.get("queues") if driver is not None else None) == queues


def test_disk_without_a_file_on_the_host_is_refused() -> None:
    machine = vm({"memory": {"size": "64Mi"}, "disks": [{"name": "root", "size": "1Gi"}]})
    with pytest.raises(DomainError, match="root"):
        converter.render(machine, host=HostEnvironment(domain_type="qemu"))


@pytest.mark.parametrize("domain_type", ["kvm", "lxc"])
def test_an_interface_on_a_network_is_refused_until_the_agent_passes_its_plan(
    domain_type: str,
) -> None:
    """Not silently QEMU's user-mode NAT (or a veth on no bridge): a clear refusal."""
    spec: dict[str, object] = {
        "memory": {"size": "64Mi"},
        "networks": [{"name": "nat"}, {"name": "eth0", "network": "blue"}],
    }
    if domain_type == "lxc":
        spec["container"] = {"rootfs": "/srv/web"}
        spec["networks"] = [{"name": "eth0", "network": "blue"}]
    with pytest.raises(DomainError, match="networks 'eth0': interfaces on a Network are not"):
        converter.render(vm(spec), host=HostEnvironment(domain_type=domain_type))
