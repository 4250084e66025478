"""Testbed hosts in network namespaces of their own, joined by an underlay: real packets
between real guests (libvirtd + QEMU under TCG) on a provider network, across a live
migration, and nothing left behind (docs/testbed-network.md).

The provider network is wired by hand here (a bridge in each host's namespace enslaving
its uplink, a throwaway dnsmasq on the physical network), as the data plane will do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import re
import shutil
import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from harness import eventually, require
from kubevisor.drivers.base import MigrationRequest
from kubevisor.drivers.libvirt import LibvirtHypervisor
from kubevisor.testbed import guest as guest_image
from kubevisor.testbed import hosts, netns, procfs
from kubevisor.testbed.guestshell import GuestShell

pytestmark = [pytest.mark.libvirtd, pytest.mark.netns]

BRIDGE = "br-phys"
"""The provider bridge in each host's namespace (the data plane will name its own)."""
PROVIDER = ipaddress.IPv4Network("10.211.0.0/24")
DHCP_SERVER = ipaddress.IPv4Interface("10.211.0.1/24")
BOOT_TIMEOUT = 180.0


@dataclasses.dataclass
class Cluster:
    state_dir: Path
    underlay: netns.Underlay
    root_links_before: set[str]
    hosts: list[hosts.LocalHost] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Vm:
    name: str
    uuid: str
    mac: str
    address: ipaddress.IPv4Address
    serial: Path


def root_links() -> set[str]:
    listing = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True)
    return {link["ifname"] for link in json.loads(listing.stdout)}


def root_addresses() -> list[str]:
    listing = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True)
    return [a["local"] for link in json.loads(listing.stdout) for a in link["addr_info"]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = hosts.missing_prerequisites()
    missing += [tool for tool in ("ip", "nsenter", "dnsmasq") if shutil.which(tool) is None]
    require(
        not missing,
        what=f"hosts in network namespaces (missing {missing})",
        how=f"{hosts.HOW_TO_INSTALL}; dnsmasq-base too",
    )
    state_dir = tmp_path_factory.mktemp("nethosts")
    found = Cluster(state_dir, netns.underlay_for(state_dir), root_links())
    try:
        found.hosts = hosts.start_hosts(2, state_dir=state_dir, netns=True)
        yield found
    finally:
        hosts.stop_hosts(state_dir)


class Dnsmasq:
    """A DHCP server on the provider physical network (in the underlay's namespace), handing
    out fixed addresses by MAC, as a provider network's own router would."""

    def __init__(self, underlay: netns.Underlay, directory: Path, vms: list[Vm]) -> None:
        subprocess.run(
            netns.command(
                underlay.netns, ["ip", "addr", "add", str(DHCP_SERVER), "dev", "br-provider"]
            ),
            check=True,
        )
        argv = [
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",  # no DNS
            "--bind-interfaces",
            f"--interface={netns.PROVIDER_BRIDGE}",
            "--user=root",
            f"--pid-file={directory / 'dnsmasq.pid'}",
            f"--dhcp-leasefile={directory / 'dnsmasq.leases'}",
            f"--dhcp-range={PROVIDER.network_address},static,{PROVIDER.netmask}",
            "--log-dhcp",
            f"--log-facility={directory / 'dnsmasq.log'}",
            *(f"--dhcp-host={vm.mac},{vm.address},{vm.name}" for vm in vms),
        ]
        self.process = subprocess.Popen(netns.command(underlay.netns, argv))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def vms(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> list[Vm]:
    directory = tmp_path_factory.mktemp("vms")
    return [
        Vm(
            name=name,
            uuid=str(uuidlib.uuid4()),
            mac=f"52:54:00:0a:00:{index:02x}",
            address=PROVIDER.network_address + 10 + index,
            serial=directory / f"{name}.log",
        )
        for index, name in enumerate(("guest-a", "guest-b"), start=1)
    ]


@pytest.fixture(scope="module")
def dhcp(
    cluster: Cluster, vms: list[Vm], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dnsmasq]:
    server = Dnsmasq(cluster.underlay, tmp_path_factory.mktemp("dnsmasq"), vms)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def booted(cluster: Cluster, vms: list[Vm], dhcp: Dnsmasq) -> list[Vm]:
    """Guest A on host 1, guest B on host 2, each on its host's bridge over the uplink."""
    require(
        bool(guest_image.installed_kernels()) and guest_image.BUSYBOX.is_file(),
        what="the guest kernel and busybox",
        how=guest_image.HOW_TO_INSTALL,
    )
    tiny = guest_image.build_guest(Path.home() / ".cache" / "kubevisor" / "guest")
    for host, vm in zip(cluster.hosts, vms, strict=True):
        netns.add_bridge(host.netns or "", BRIDGE, ports=[netns.UPLINK_IFNAME])
        xml = tiny.domain_xml(
            name=vm.name,
            uuid=vm.uuid,
            serial_log=vm.serial,
            memory_mib=128,
            nics=[guest_image.Nic(bridge=BRIDGE, mac=vm.mac)],
            console=True,
        )
        conn = libvirt.open(host.uri)
        try:
            conn.defineXML(xml).create()
        finally:
            conn.close()
    for vm in vms:
        eventually(
            lambda vm=vm: bound(vm),
            timeout=BOOT_TIMEOUT,
            what=f"{vm.name} to get {vm.address} by DHCP (see {vm.serial})",
        )
    return vms


def bound(vm: Vm) -> bool:
    text = vm.serial.read_text(errors="replace") if vm.serial.exists() else ""
    return any(
        event.mac == vm.mac and event.address == f"{vm.address}/{PROVIDER.prefixlen}"
        for event in guest_image.net_events(text)
    )


def test_each_host_runs_in_its_own_namespace_on_the_underlay(cluster: Cluster) -> None:
    first, second = cluster.hosts
    for index, host in enumerate(cluster.hosts, start=1):
        assert host.netns == cluster.underlay.host_netns(index)
        assert host.uri.startswith("qemu+unix:///system?socket=")
        assert procfs.namespace_of(host.pid or 0, "net") == f"net:[{netns.inode(host.netns)}]"
        conn = libvirt.open(host.uri)  # the UNIX socket, from the machine's namespace
        try:
            assert conn.getHostname() == host.hostname
        finally:
            conn.close()
        assert netns.links(host.netns) == {
            "lo": None,
            netns.UNDERLAY_IFNAME: None,
            netns.UPLINK_IFNAME: None,
        }
    assert (first.underlay_address, second.underlay_address) == ("10.210.0.1", "10.210.0.2")
    # libvirt over TCP on the underlay: what the source's libvirtd uses in a migration.
    remote = netns.run(
        first.netns or "", ["virsh", "-c", second.migration_uri, "hostname"], timeout=60
    )
    assert (remote.returncode, remote.stdout.strip()) == (0, second.hostname), remote.stderr
    # The machine's own namespace got no link and no address of the testbed's.
    assert root_links() == cluster.root_links_before
    assert not [a for a in root_addresses() if a.startswith(("10.210.", "10.211."))]
    assert netns.links(cluster.underlay.netns) == {
        "lo": None,
        netns.UNDERLAY_BRIDGE: None,
        netns.PROVIDER_BRIDGE: None,
        "ul-h1": netns.UNDERLAY_BRIDGE,
        "pv-h1": netns.PROVIDER_BRIDGE,
        "ul-h2": netns.UNDERLAY_BRIDGE,
        "pv-h2": netns.PROVIDER_BRIDGE,
    }


def test_guests_on_a_provider_network_reach_each_other(cluster: Cluster, booted: list[Vm]) -> None:
    a, b = booted
    shell_a = GuestShell(cluster.hosts[0].uri, a.uuid)
    shell_b = GuestShell(cluster.hosts[1].uri, b.uuid)

    assert shell_a.ping(str(b.address), count=3, seconds=10).ok
    fetched = shell_a.fetch(f"http://{b.address}/")
    assert fetched.ok, fetched
    page = guest_image.parse_page(fetched.output)
    assert (page.hostname, page.uuid, page.peer) == (b.name, b.uuid, str(a.address))
    assert page.interfaces == {"eth0": (b.mac, (f"{b.address}/{PROVIDER.prefixlen}",))}
    assert shell_b.fetch(f"http://{a.address}/cgi-bin/peer").output.strip() == str(b.address)


def test_guest_keeps_answering_through_a_live_migration(cluster: Cluster, booted: list[Vm]) -> None:
    """A moves from host 1 to host 2 while B pings it every 0.2 s; afterwards A answers on
    its address from host 2 (QEMU's announce moved its MAC on the provider bridges)."""
    a, b = booted
    source, target = cluster.hosts
    shell_b = GuestShell(target.uri, b.uuid)
    count, interval = 100, 0.2
    pinging = shell_b.start(f"ping -c {count} -i {interval} -W 1 {a.address}")

    async def migrate() -> float:
        async with LibvirtHypervisor(source.uri) as hypervisor:
            started = time.monotonic()
            await hypervisor.migrate(
                a.uuid,
                MigrationRequest(dest_uri=target.migration_uri, migrate_uri=target.migrate_uri),
            )
            return time.monotonic() - started

    took = asyncio.run(migrate())
    conn = libvirt.open(target.uri)
    try:
        assert conn.lookupByUUIDString(a.uuid).isActive()
    finally:
        conn.close()

    replies = shell_b.result(pinging, timeout=count * interval + 60)
    received = sorted(int(seq) for seq in re.findall(r"seq=(\d+)", replies.output))
    lost = sorted(set(range(count)) - set(received))
    print(
        f"migration took {took:.2f}s; {len(received)}/{count} pings answered, lost seq "
        f"{lost} (gap about {len(lost) * interval:.1f}s)"
    )
    assert len(received) >= count - 15, replies.output
    assert received[-1] == count - 1, "A stopped answering after the migration"

    shell_a = GuestShell(target.uri, a.uuid)
    assert shell_a.run("true").ok
    page = guest_image.parse_page(shell_b.fetch(f"http://{a.address}/").output)
    assert (page.uuid, page.peer) == (a.uuid, str(b.address))


def test_stopping_leaves_no_namespace_link_or_process(
    cluster: Cluster, booted: list[Vm], dhcp: Dnsmasq
) -> None:
    names = netns.namespaces(cluster.underlay.prefix)
    assert names == sorted([cluster.underlay.netns, *(h.netns or "" for h in cluster.hosts)])
    inodes = [netns.inode(name) for name in names]
    dhcp.stop()
    stopped = hosts.stop_hosts(cluster.state_dir)
    assert [h.name for h in stopped] == [h.name for h in cluster.hosts]
    assert netns.namespaces(cluster.underlay.prefix) == []
    for ns_inode in inodes:
        assert ns_inode is not None
        assert netns.processes(ns_inode) == []
    assert root_links() == cluster.root_links_before
    assert hosts.stop_hosts(cluster.state_dir) == []
