"""dnsmasq's command line and hosts file, written and read back (drivers/hostnet/dnsmasq.py)."""

from __future__ import annotations

import shutil
import tempfile
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from kubevisor.core.network.hostplan import DhcpHost, DhcpServer
from kubevisor.drivers.hostnet import dnsmasq
from kubevisor.drivers.hostnet.base import HostNetworkError

A = IPv4Address
HOSTS = frozenset(
    {DhcpHost("02:00:00:00:00:05", A("10.20.0.5")), DhcpHost("02:00:00:00:00:06", A("10.20.0.6"))}
)
FULL = DhcpServer(
    "kvdhcp-0a1b2c3d",
    IPv4Network("10.20.0.0/24"),
    A("10.20.0.1"),
    (A("10.20.0.2"), A("9.9.9.9")),
    1450,
    HOSTS,
)
BARE = DhcpServer("kvdhcp-feedbeef", IPv4Network("192.168.0.0/16"), None, (), None, frozenset())


@pytest.mark.parametrize(
    "server", [pytest.param(FULL, id="all-options"), pytest.param(BARE, id="none")]
)
def test_argv_reads_back_as_the_same_server(server: DhcpServer) -> None:
    args = dnsmasq.argv(server, Path("/state/dhcp") / server.namespace)
    assert dnsmasq.parse(server.namespace, args, server.hosts) == server


def test_argv_serves_only_static_known_hosts() -> None:
    args = dnsmasq.argv(FULL, Path("/s"))
    assert "--dhcp-range=10.20.0.0,static,255.255.255.0,86400s" in args
    assert "--dhcp-ignore=tag:!known" in args
    assert "--port=0" in args and "--conf-file=/dev/null" in args
    assert "--dhcp-option-force=option:mtu,1450" in args
    assert "--dhcp-hostsfile=/s/hosts" in args and "--pid-file=/s/pid" in args


def test_without_gateway_or_dns_dnsmasq_offers_neither_itself() -> None:
    args = dnsmasq.argv(BARE, Path("/s"))
    assert "--dhcp-option=3" in args and "--dhcp-option=6" in args


def test_hosts_file_round_trip() -> None:
    text = dnsmasq.hosts_file(HOSTS)
    assert text == "02:00:00:00:00:05,10.20.0.5\n02:00:00:00:00:06,10.20.0.6\n"
    assert dnsmasq.parse_hosts(text) == HOSTS
    assert dnsmasq.parse_hosts("") == frozenset()


def test_a_command_line_with_two_ranges_is_not_ours() -> None:
    args = [*dnsmasq.argv(BARE, Path("/s")), "--dhcp-range=10.0.0.0,static"]
    with pytest.raises(HostNetworkError, match="2 DHCP ranges"):
        dnsmasq.parse("x", args, frozenset())


def test_a_state_dir_dnsmasq_cannot_reach_is_refused_with_the_directory(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    supervisor = dnsmasq.Supervisor(closed / "agent" / "dhcp")
    with pytest.raises(HostNetworkError, match=f"{closed} \\(mode 0700\\) is not searchable"):
        supervisor.check()


def test_a_reachable_state_dir_passes() -> None:
    # Not tmp_path: pytest makes its base 0700, which the check would rightly refuse.
    state = Path(tempfile.mkdtemp(prefix="kubevisor-dnsmasq-"))
    try:
        state.chmod(0o755)
        dnsmasq.Supervisor(state / "dhcp").check()
        assert (state / "dhcp").is_dir()
    finally:
        shutil.rmtree(state)
