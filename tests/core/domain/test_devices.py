"""Device configurators: PCI devices as placed, multiqueue, disks with their files."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from kubevisor.core.domain import converter
from kubevisor.core.domain.document import DomainError
from kubevisor.core.domain.host import HostEnvironment, Nic
from kubevisor.core.network import mac

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


def test_an_interface_on_a_network_is_refused_in_a_system_container() -> None:
    """Not a veth on no bridge: a clear refusal."""
    spec: dict[str, object] = {
        "memory": {"size": "64Mi"},
        "container": {"rootfs": "/srv/web"},
        "networks": [{"name": "eth0", "network": "blue"}],
    }
    with pytest.raises(DomainError, match="networks 'eth0': interfaces on a Network are not"):
        converter.render(vm(spec), host=HostEnvironment(domain_type="lxc"))


NIC = Nic(bridge="kvbr-0a1b2c3d", mac="02:00:00:00:00:05", tap="kvt-0123456789a")
ON_BLUE = {
    "memory": {"size": "64Mi"},
    "networks": [{"name": "nat"}, {"name": "eth0", "network": "blue"}],
}


def test_an_interface_on_a_network_is_a_tap_on_its_bridge() -> None:
    """The MAC the controller allocated and the tap name the port security rules match."""
    host = HostEnvironment(domain_type="kvm", vhost_net=True, nics={"eth0": NIC})
    root = ET.fromstring(converter.render(vm(ON_BLUE), host=host))
    nat, eth0 = root.findall("devices/interface")
    assert nat.get("type") == "user"
    assert nat.find("driver") is None
    assert eth0.get("type") == "bridge"
    assert [(e.tag, e.attrib) for e in eth0] == [
        ("mac", {"address": "02:00:00:00:00:05"}),
        ("source", {"bridge": "kvbr-0a1b2c3d"}),
        ("target", {"dev": "kvt-0123456789a"}),
        ("model", {"type": "virtio"}),
        ("driver", {"name": "vhost"}),
        ("alias", {"name": "ua-net-eth0"}),
    ]


def test_an_interface_on_a_network_the_agent_did_not_attach_is_refused() -> None:
    """Not silently QEMU's user-mode NAT: a clear refusal naming the interface."""
    with pytest.raises(DomainError, match="interface 'eth0' on Network 'blue': not attached"):
        converter.render(vm(ON_BLUE), host=HostEnvironment(domain_type="kvm"))


@pytest.mark.parametrize("domain_type", ["qemu", "kvm"])
def test_the_vnc_display_listens_on_a_unix_socket_only(domain_type: str) -> None:
    machine = vm({"memory": {"size": "64Mi"}})
    root = ET.fromstring(converter.render(machine, host=HostEnvironment(domain_type=domain_type)))
    graphics = root.findall("devices/graphics")
    assert [g.get("type") for g in graphics] == ["vnc"]
    # No address anywhere: not as a listen attribute, not as a listen element.
    assert graphics[0].get("listen") is None
    assert [dict(listen.attrib) for listen in graphics[0].findall("listen")] == [{"type": "socket"}]
    assert [m.get("type") for m in root.findall("devices/video/model")] == ["vga"]


def test_a_system_container_has_no_display() -> None:
    machine = vm({"memory": {"size": "64Mi"}, "container": {"rootfs": "/srv/c/root"}})
    root = ET.fromstring(converter.render(machine, host=HostEnvironment(domain_type="lxc")))
    assert root.findall("devices/graphics") == []


def test_an_interface_off_networks_keeps_one_mac_its_own_or_the_derived() -> None:
    # libvirt would pick a random MAC at each define: a restart or a migration (whose
    # target renders the domain again) would change it, and libvirt refuses the latter.
    nets = [
        {"name": "lan", "type": "bridge", "source": "br0", "macAddress": "02:00:00:00:00:07"},
        {"name": "nat"},
    ]
    machine = vm({"memory": {"size": "64Mi"}, "networks": nets})
    renders = [
        ET.fromstring(converter.render(machine, host=HostEnvironment(domain_type="kvm")))
        for _ in range(2)
    ]
    macs = [[m.get("address") for m in r.iterfind("devices/interface/mac")] for r in renders]
    assert macs[0] == macs[1]
    assert macs[0][0] == "02:00:00:00:00:07"
    assert macs[0][1] == mac.derived("6f1c1f9e-8a3b-4c55-9a55-0d7b5c2d1e01", "nat")
