"""The Linux host network driver with real packets: two "hosts" (network namespaces) joined
by an underlay, guests in namespaces of their own, dnsmasq answering their udhcpc, VXLAN
between the hosts, nftables dropping what a guest spoofs (drivers/hostnet/linux.py).

Needs root, iproute2, nftables, dnsmasq-base and busybox (skipped with one line outside CI
without them; failed under CI=true). Boots no QEMU, so it takes no heavy lock.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from drivers.hostnet.lab import Guest, Lab, ip, run
from kubevisor.core.network import hostplan
from kubevisor.core.network.hostplan import HostFacts, HostPlan, Interface, Network, NetworkType
from kubevisor.drivers.hostnet import netlink
from kubevisor.drivers.hostnet.base import Converged
from kubevisor.drivers.hostnet.linux import LinuxHostNetwork

pytestmark = pytest.mark.netns

A = IPv4Address
SUBNET = IPv4Network("10.20.0.0/24")
BLUE = Network(
    name="team/blue",
    uid="b1b1b1b1-0000-4000-8000-000000000001",
    type=NetworkType.OVERLAY,
    subnet=SUBNET,
    gateway=A("10.20.0.1"),
    dns_servers=(A("10.20.0.2"),),
    vni=100,
)
# The same subnet on another overlay: isolation must come from the segments, not addresses.
GREEN = replace(BLUE, name="team/green", uid="9e9e9e9e-0000-4000-8000-000000000002", vni=200)
FLAT = Network(
    name="ops/flat",
    uid="f1a7f1a7-0000-4000-8000-000000000003",
    type=NetworkType.PROVIDER,
    subnet=IPv4Network("10.30.0.0/24"),
    physical_network="physnet1",
)


def facts(lab: Lab, n: int, *, peers: tuple[int, ...] = (1, 2)) -> HostFacts:
    networks = (BLUE, GREEN, FLAT, replace(FLAT, vlan=100))
    return HostFacts(
        mappings={"physnet1": "eth1"},
        tunnel_ip=A(f"172.31.255.{n}"),
        peers=frozenset(A(f"172.31.255.{p}") for p in peers),
        dhcp_addresses={net.uid: net.subnet[250 + n] for net in networks},
        namespace_prefix=f"{lab.prefix}d{n}-",
    )


@contextmanager
def driver(lab: Lab, n: int) -> Iterator[LinuxHostNetwork]:
    network = LinuxHostNetwork(
        state_dir=lab.state / f"h{n}", netns=lab.host(n), namespace_prefix=f"{lab.prefix}d{n}-"
    )
    try:
        yield network
    finally:
        network.close()


def nic(guest: Guest, network: Network, address: str) -> Interface:
    return Interface(
        vm=f"test/{guest.name}", network=network, mac=guest.mac, ip=A(address), tap=guest.tap
    )


def converge(network: LinuxHostNetwork, plan: HostPlan) -> float:
    """Converge and return how long it took, failing on any failed change."""
    started = time.perf_counter()
    result = asyncio.run(network.converge(plan))
    elapsed = time.perf_counter() - started
    assert result.failed == (), result.failed
    return elapsed


def nothing_left(lab: Lab, n: int) -> None:
    host = lab.host(n)
    assert {
        name for name in lab.links(host) if name.startswith("kv") and "kvt-" not in name
    } == set()
    assert [
        name for name in Path("/run/netns").iterdir() if name.name.startswith(f"{lab.prefix}d{n}-")
    ] == []
    assert (
        run("nft", "list", "table", "bridge", "kubevisor", netns=host, check=False).returncode != 0
    )
    assert list((lab.state / f"h{n}" / "dhcp").iterdir()) == []
    assert run("pgrep", "-f", str(lab.state / f"h{n}"), check=False).stdout == ""


def test_overlay_between_two_hosts(lab: Lab, record_property: pytest.RecordProperty) -> None:
    g1 = lab.guest("g1", host=lab.host(1), mac="02:00:00:00:01:05")
    g2 = lab.guest("g2", host=lab.host(2), mac="02:00:00:00:01:06")
    plans = {
        1: hostplan.desired([nic(g1, BLUE, "10.20.0.5")], facts(lab, 1)),
        2: hostplan.desired([nic(g2, BLUE, "10.20.0.6")], facts(lab, 2)),
    }
    with driver(lab, 1) as h1, driver(lab, 2) as h2:
        first = converge(h1, plans[1])
        converge(h2, plans[2])
        record_property("realise_network_seconds", first)
        lab.plug(g1, "kvbr-b1b1b1b1")
        lab.plug(g2, "kvbr-b1b1b1b1")

        assert lab.dhcp(g1) == ["10.20.0.5", "10.20.0.1", "10.20.0.2", "1450"]
        assert lab.dhcp(g2)[0] == "10.20.0.6"
        assert lab.ping(g1, "10.20.0.6", count=3)
        assert tcp(lab, g2, g1, "10.20.0.6") == "hello"

        # Flood entries follow the peers: one more, then h2 gone.
        def fdb() -> str:
            return run("bridge", "fdb", "show", "dev", "kvvx-b1b1b1b1", netns=lab.host(1)).stdout

        assert "dst 172.31.255.2" in fdb() and "dst 172.31.255.1" not in fdb()
        converge(h1, hostplan.desired([nic(g1, BLUE, "10.20.0.5")], facts(lab, 1, peers=(1, 2, 3))))
        assert "dst 172.31.255.3" in fdb()
        converge(h1, plans[1])
        assert "dst 172.31.255.3" not in fdb()

        # A second VM on a network the host already has: a port rule and a SIGHUP.
        g3 = lab.guest("g3", host=lab.host(1), mac="02:00:00:00:01:07")
        second_plan = hostplan.desired(
            [nic(g1, BLUE, "10.20.0.5"), nic(g3, BLUE, "10.20.0.7")], facts(lab, 1)
        )
        second = converge(h1, second_plan)
        record_property("second_vm_seconds", second)
        lab.plug(g3, "kvbr-b1b1b1b1")
        assert lab.dhcp(g3)[0] == "10.20.0.7"
        assert lab.ping(g3, "10.20.0.6")
        print(
            f"\nhost side: network realised in {first * 1000:.1f} ms, "
            f"second VM on it in {second * 1000:.1f} ms"
        )

        for network, plan in ((h1, second_plan), (h2, plans[2])):
            assert asyncio.run(network.converge(plan)).changed is False
            assert asyncio.run(network.observe()) == replace(plan, problems=())

    # An agent that restarts adopts what it finds: nothing changes, the guests keep talking.
    with driver(lab, 1) as h1, driver(lab, 2) as h2:
        assert asyncio.run(h1.converge(second_plan)).changed is False
        assert asyncio.run(h2.converge(plans[2])).changed is False
        assert lab.ping(g1, "10.20.0.6")
        assert lab.dhcp(g1)[0] == "10.20.0.5"  # dnsmasq kept serving (and its leases)

        asyncio.run(h1.remove())
        asyncio.run(h2.remove())
    nothing_left(lab, 1)
    nothing_left(lab, 2)


def tcp(lab: Lab, server: Guest, client: Guest, address: str) -> str:
    listener = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{server.netns}", "--", "busybox", "nc", "-l", "-p", "8080"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sent = subprocess.run(
                [
                    "nsenter",
                    f"--net=/run/netns/{client.netns}",
                    "--",
                    "busybox",
                    "nc",
                    "-w",
                    "2",
                    address,
                    "8080",
                ],
                input="hello\n",
                capture_output=True,
                text=True,
                timeout=10,
            )
            if sent.returncode == 0:
                break
            time.sleep(0.1)  # the listener may not be bound yet: retry until the deadline
        out, _ = listener.communicate(timeout=10)
        return out.strip()
    finally:
        listener.kill()
        listener.wait()


def test_port_security_and_isolation(lab: Lab) -> None:
    g1 = lab.guest("g1", host=lab.host(1), mac="02:00:00:00:01:05")
    g2 = lab.guest("g2", host=lab.host(2), mac="02:00:00:00:01:06")
    g3 = lab.guest("g3", host=lab.host(2), mac="02:00:00:00:01:07")
    g4 = lab.guest("g4", host=lab.host(1), mac="02:00:00:00:02:08")
    g5 = lab.guest("g5", host=lab.host(2), mac="02:00:00:00:02:09")
    on = {
        1: [nic(g1, BLUE, "10.20.0.5"), nic(g4, GREEN, "10.20.0.8")],
        2: [nic(g2, BLUE, "10.20.0.6"), nic(g3, BLUE, "10.20.0.7"), nic(g5, GREEN, "10.20.0.9")],
    }
    with driver(lab, 1) as h1, driver(lab, 2) as h2:
        for n, network in ((1, h1), (2, h2)):
            converge(network, hostplan.desired(on[n], facts(lab, n)))
        for guest, bridge in ((g1, "b1b1"), (g2, "b1b1"), (g3, "b1b1"), (g4, "9e9e"), (g5, "9e9e")):
            lab.plug(guest, f"kvbr-{bridge}{bridge}")
        for guest, address in ((g1, "5"), (g2, "6"), (g3, "7"), (g4, "8"), (g5, "9")):
            assert lab.dhcp(guest)[0] == f"10.20.0.{address}"

        # Two overlays with one subnet: each reaches its own, never the other's.
        assert lab.ping(g4, "10.20.0.9")
        assert lab.ping(g1, "10.20.0.6")
        assert not lab.ping(g4, "10.20.0.5")
        assert not lab.ping(g1, "10.20.0.9")

        # g3 talks to g1 as itself; neighbours pinned so only the source decides.
        ip("neigh", "replace", "10.20.0.5", "lladdr", g1.mac, "dev", "eth0", netns=g3.netns)
        ip("neigh", "replace", "10.20.0.99", "lladdr", g3.mac, "dev", "eth0", netns=g1.netns)
        assert lab.ping(g3, "10.20.0.5")

        # Another address: nothing gets through (ARP nor IP).
        ip("addr", "flush", "dev", "eth0", netns=g3.netns)
        ip("addr", "add", "10.20.0.99/24", "dev", "eth0", netns=g3.netns)
        ip("neigh", "replace", "10.20.0.5", "lladdr", g1.mac, "dev", "eth0", netns=g3.netns)
        assert not lab.ping(g3, "10.20.0.5")
        ip("addr", "flush", "dev", "eth0", netns=g3.netns)
        ip("addr", "add", "10.20.0.6/24", "dev", "eth0", netns=g3.netns)  # g2's address
        ip("neigh", "replace", "10.20.0.5", "lladdr", g1.mac, "dev", "eth0", netns=g3.netns)
        assert not lab.ping(g3, "10.20.0.5")

        # Its own address from another MAC: dropped too.
        ip("addr", "flush", "dev", "eth0", netns=g3.netns)
        ip("addr", "add", "10.20.0.7/24", "dev", "eth0", netns=g3.netns)
        ip("link", "set", "eth0", "address", "02:00:00:00:01:ee", netns=g3.netns)
        ip("neigh", "replace", "10.20.0.5", "lladdr", g1.mac, "dev", "eth0", netns=g3.netns)
        ip(
            "neigh",
            "replace",
            "10.20.0.7",
            "lladdr",
            "02:00:00:00:01:ee",
            "dev",
            "eth0",
            netns=g1.netns,
        )
        assert not lab.ping(g3, "10.20.0.5")

        # It is the rules that drop it: without the table the spoof passes; converge
        # (which sees the table gone) puts them back.
        run("nft", "delete", "table", "bridge", "kubevisor", netns=lab.host(2))
        assert lab.ping(g3, "10.20.0.5")
        plan2 = hostplan.desired(on[2], facts(lab, 2))
        repaired = asyncio.run(h2.converge(plan2))
        assert {c.element for c in repaired.applied} == plan2.ports
        assert not lab.ping(g3, "10.20.0.5")

        # Back to itself: through again (the rules drop the spoof, not the guest).
        ip("link", "set", "eth0", "address", g3.mac, netns=g3.netns)
        ip("neigh", "replace", "10.20.0.7", "lladdr", g3.mac, "dev", "eth0", netns=g1.netns)
        assert lab.ping(g3, "10.20.0.5")

        asyncio.run(h1.remove())
        asyncio.run(h2.remove())
    nothing_left(lab, 1)
    nothing_left(lab, 2)


def vlan_supported(lab: Lab) -> bool:
    """Whether this kernel has 802.1Q (some VM kernels, CI's included, are built without)."""
    probe = run(
        "ip",
        "link",
        "add",
        "link",
        "eth1",
        "name",
        "eth1.4000",
        "type",
        "vlan",
        "id",
        "4000",
        netns=lab.host(1),
        check=False,
    )
    run("ip", "link", "del", "eth1.4000", netns=lab.host(1), check=False)
    return probe.returncode == 0


@pytest.mark.parametrize("vlan", [pytest.param(None, id="flat"), pytest.param(100, id="vlan")])
def test_provider_network_between_two_hosts(lab: Lab, vlan: int | None) -> None:
    network = replace(FLAT, vlan=vlan)
    g6 = lab.guest("g6", host=lab.host(1), mac="02:00:00:00:03:05")
    g7 = lab.guest("g7", host=lab.host(2), mac="02:00:00:00:03:06")
    plans = {
        1: hostplan.desired([nic(g6, network, "10.30.0.5")], facts(lab, 1)),
        2: hostplan.desired([nic(g7, network, "10.30.0.6")], facts(lab, 2)),
    }
    with driver(lab, 1) as h1, driver(lab, 2) as h2:
        if vlan is not None and not vlan_supported(lab):
            # Without 802.1Q the kernel cannot tag: the driver says so, and realises nothing
            # that would carry the network untagged.
            result = asyncio.run(h1.converge(plans[1]))
            assert [f.reason for f in result.failed] == [
                "VLAN eth1.100: this kernel has no 802.1Q VLAN support (module 8021q)"
            ]
            assert "eth1.100" not in lab.links(lab.host(1))
            assert asyncio.run(h1.remove()).failed == ()
            nothing_left(lab, 1)
            return
        converge(h1, plans[1])
        converge(h2, plans[2])
        lab.plug(g6, "kvbr-f1a7f1a7")
        lab.plug(g7, "kvbr-f1a7f1a7")
        assert lab.dhcp(g6) == ["10.30.0.5"]  # no router, no DNS, no MTU: none configured
        assert lab.dhcp(g7) == ["10.30.0.6"]
        assert lab.ping(g6, "10.30.0.6", count=3)
        assert tcp(lab, g7, g6, "10.30.0.6") == "hello"
        assert asyncio.run(h1.converge(plans[1])).changed is False

        asyncio.run(h1.remove())
        asyncio.run(h2.remove())
    # The uplink is the admin's: released, not deleted.
    assert "eth1" in lab.links(lab.host(1))
    assert "master" not in ip("link", "show", "eth1", netns=lab.host(1))
    nothing_left(lab, 1)
    nothing_left(lab, 2)


def test_close_waits_for_the_converge_in_progress(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent that stops cancels a converge's coroutine, not its worker thread: closing
    the netlink socket under that thread left it waiting for a reply forever, and the
    agent's exit waiting for it (issue 18, found by the agent-tier netns test)."""
    g1 = lab.guest("g1", host=lab.host(1), mac="02:00:00:00:01:05")
    plan = hostplan.desired([nic(g1, BLUE, "10.20.0.5")], facts(lab, 1))
    with driver(lab, 1) as cleaner:
        network = LinuxHostNetwork(
            state_dir=lab.state / "h1", netns=lab.host(1), namespace_prefix=f"{lab.prefix}d1-"
        )
        inside, release = threading.Event(), threading.Event()
        observe = network.links.observe

        def held() -> netlink.Observed:
            inside.set()
            release.wait(30)
            return observe()

        monkeypatch.setattr(network.links, "observe", held)
        converged: list[Converged] = []
        converging = background(lambda: converged.append(asyncio.run(network.converge(plan))))
        assert inside.wait(30)
        closing = background(network.close)
        closing.join(0.5)
        assert closing.is_alive(), "close() did not wait for the converge in its thread"
        release.set()
        converging.join(30)
        closing.join(30)
        assert [result.failed for result in converged] == [()]
        assert not closing.is_alive()
        asyncio.run(cleaner.remove())
    nothing_left(lab, 1)


def background(work: Callable[[], object]) -> threading.Thread:
    """`work` in a daemon thread: one that hangs fails the test instead of pytest's exit."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread
