"""The testbed's network namespaces: names, addresses, URIs, and the wiring itself (real
namespaces and veths, no libvirtd: fast)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import eventually, require
from kubevisor.agent import main as agent_main
from kubevisor.testbed import guest as guest_image
from kubevisor.testbed import hosts, netns

PING = [str(guest_image.BUSYBOX), "ping", "-c", "1", "-W", "5"]


def test_underlay_names_come_from_the_state_dir(tmp_path: Path) -> None:
    one, other = netns.underlay_for(tmp_path / "a"), netns.underlay_for(tmp_path / "b")
    assert one == netns.underlay_for(tmp_path / "a")
    assert one.prefix != other.prefix
    assert one.netns == f"{one.prefix}-underlay"
    assert one.host_netns(3) == f"{one.prefix}-h3"
    # Interface names in the underlay stay within the kernel's 15 characters.
    assert all(len(port) <= 15 for port in one.ports(netns.MAX_HOST_INDEX))


@pytest.mark.parametrize(
    ("index", "address"),
    [
        pytest.param(1, "10.210.0.1/24", id="first-host"),
        pytest.param(101, "10.210.0.101/24", id="an-extra-host-numbered-from-101"),
        pytest.param(0, None, id="zero-is-the-network-address"),
        pytest.param(netns.MAX_HOST_INDEX + 1, None, id="past-the-last"),
    ],
)
def test_host_address_is_the_underlays_nth(index: int, address: str | None) -> None:
    underlay = netns.Underlay(prefix="kv-test")
    if address is None:
        with pytest.raises(netns.NetnsError, match=f"host index {index}"):
            underlay.host_address(index)
    else:
        assert underlay.host_address(index) == ipaddress.IPv4Interface(address)


def test_a_host_in_a_namespace_is_reached_by_socket_and_migrates_over_the_underlay(
    tmp_path: Path,
) -> None:
    plain = hosts.LocalHost(
        name="kubevisor-host-1",
        hostname="kubevisor-host-1",
        uuid="u",
        tcp_port=20001,
        migration_ports=(30000, 30049),
        root=tmp_path / "kubevisor-host-1",
    )
    assert plain.uri == "qemu+tcp://127.0.0.1:20001/system"
    assert plain.migration_uri == plain.uri
    assert plain.migrate_uri == "tcp://127.0.0.1"
    assert plain.lxc_uri == "lxc+tcp://127.0.0.1:20001/"

    inside = dataclasses.replace(
        plain, tcp_port=hosts.NETNS_TCP_PORT, netns="kv-x-h1", underlay_address="10.210.0.1"
    )
    socket = tmp_path / "kubevisor-host-1" / "run" / "libvirt-sock"
    assert inside.uri == f"qemu+unix:///system?socket={socket}"
    assert inside.lxc_uri == f"lxc+unix:///?socket={socket}"
    assert inside.migration_uri == "qemu+tcp://10.210.0.1:16509/system"
    assert inside.migrate_uri == "tcp://10.210.0.1"
    [line] = hosts.format_hosts([inside])
    assert line.endswith("\tnetns kv-x-h1 10.210.0.1")


def test_a_host_in_a_namespace_gets_an_agent_for_its_data_plane() -> None:
    flags = agent_main.parse_args(["--host", "h1", *netns.agent_flags("kv-x-h1", "10.210.0.1")])
    assert (flags.host_network, flags.network_netns, str(flags.tunnel_ip)) == (
        "linux",
        "kv-x-h1",
        "10.210.0.1",
    )
    assert flags.dhcp_namespace_prefix == "kv-x-h1-d"


@pytest.fixture
def underlay(tmp_path: Path) -> Iterator[netns.Underlay]:
    require(
        os.geteuid() == 0 and all(shutil.which(t) for t in ("ip", "nsenter")),
        what="network namespaces (root, iproute2, util-linux nsenter)",
        how="run as root with iproute2 and util-linux",
    )
    made = netns.underlay_for(tmp_path)
    try:
        yield made
    finally:
        for name in netns.namespaces(made.prefix):
            netns.remove(name)


@pytest.mark.netns
def test_hosts_reach_each_other_over_the_underlay_and_nothing_stays(
    underlay: netns.Underlay,
) -> None:
    require(guest_image.BUSYBOX.is_file(), what="busybox", how=guest_image.HOW_TO_INSTALL)
    netns.ensure_underlay(underlay)
    netns.ensure_underlay(underlay)  # idempotent
    first = netns.ensure_host(underlay, 1)
    assert netns.ensure_host(underlay, 1) == first  # idempotent: no second address
    netns.ensure_host(underlay, 2)

    ping = netns.run(
        underlay.host_netns(1),
        [str(guest_image.BUSYBOX), "ping", "-c", "1", "-W", "5", "10.210.0.2"],
    )
    assert ping.returncode == 0, ping.stdout + ping.stderr
    addresses = netns.run(underlay.host_netns(1), ["ip", "-4", "-o", "addr", "show"]).stdout
    assert addresses.count(" inet ") == 2, addresses  # lo and eth0, once each

    # The uplinks share an L2 segment (br-provider) and nothing else: a bridge in each host
    # over its uplink carries frames from one host to the other.
    for index, address in ((1, "10.99.0.1/24"), (2, "10.99.0.2/24")):
        name = underlay.host_netns(index)
        netns.add_bridge(name, "br-test", ports=[netns.UPLINK_IFNAME])
        subprocess.run(netns.command(name, ["ip", "addr", "add", address, "dev", "br-test"]))
    assert netns.links(underlay.host_netns(2))[netns.UPLINK_IFNAME] == "br-test"
    ping = netns.run(
        underlay.host_netns(2),
        [str(guest_image.BUSYBOX), "ping", "-c", "1", "-W", "5", "10.99.0.1"],
    )
    assert ping.returncode == 0, ping.stdout + ping.stderr

    inodes = [netns.inode(name) for name in netns.namespaces(underlay.prefix)]
    assert len(inodes) == 3
    netns.remove(underlay.host_netns(1))
    # The host's veths die with its namespace, their underlay ends with them (the kernel
    # does it asynchronously).
    eventually(
        lambda: "ul-h1" not in netns.links(underlay.netns),
        timeout=10,
        what="ul-h1 to go with its host's namespace",
    )
    for name in netns.namespaces(underlay.prefix):
        netns.remove(name)
    assert netns.namespaces(underlay.prefix) == []
    assert all(ns is not None and netns.processes(ns) == [] for ns in inodes)
