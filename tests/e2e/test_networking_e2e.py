"""Networks end to end, real packets: the shared stack's control plane and controller, two
hosts in network namespaces whose agents build the data plane (`--host-network=linux`:
bridges, VXLAN over the testbed's underlay, dnsmasq, nftables), real QEMU guests that take
their addresses by DHCP and talk over HTTP and ping (tests/netstack.py,
docs/testbed-network.md).

Three VMs for most of the module: `a` on host one and `b` on host two, each with eth0 on the
overlay Network `blue` and eth1 on the provider Network `phys` (physnet1, the hosts'
`eth1`); `c` on the overlay `red`, the same subnet as blue, on host one. The tests run in
order and later ones build on what earlier ones did (b restarts, then migrates to host
one; then the VMs are deleted). The last test starts a fourth VM and kills its host.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Interface
from typing import Any

import pytest

from harness import eventually
from kubevisor.core.network import hostinputs, hostplan
from kubevisor.testbed import guest as guest_image
from kubevisor.testbed.guestshell import GuestShell
from netstack import NetStack
from stacks import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd, pytest.mark.netns]

NAMESPACE = "e2e-networking"
BOOT_TIMEOUT = 180.0
BLUE_CIDR = "10.10.0.0/24"
A_FIXED = "10.10.0.50"
PHYS_CIDR = "10.211.0.0/24"
PREFIX = 24
"""Every Network here is a /24."""
RED_POOL = ("10.10.0.200", "10.10.0.201")
"""Two addresses: c's and the DHCP server's on c's host; a second VM finds none."""


def network(name: str, cidr: str, pool: tuple[str, str], **spec: Any) -> dict[str, Any]:
    gateway = str(IPv4Interface(cidr).network.network_address + 1)
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "Network",
        "metadata": {"name": name},
        "spec": {
            **spec,
            "subnet": {
                "cidr": cidr,
                "gateway": gateway,
                "allocationPools": [{"start": pool[0], "end": pool[1]}],
            },
        },
    }


def vm(name: str, *networks: dict[str, Any], pin: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"memory": {"size": "128Mi"}, "networks": list(networks)}
    if pin is not None:
        spec["placement"] = {"hostSelector": {pin: "yes"}}
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": spec,
    }


def pin_label(vm_name: str) -> str:
    return f"e2e-net-{vm_name}"


def interfaces(obj: dict[str, Any]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """status.interfaces as the guest's page shows NICs: name -> (MAC, (a.b.c.d/prefix,))."""
    return {
        i["name"]: (i["macAddress"], tuple(f"{ip}/{PREFIX}" for ip in i["ipAddresses"]))
        for i in obj["status"]["interfaces"]
    }


def address(obj: dict[str, Any], nic: str) -> str:
    return next(i["ipAddresses"][0] for i in obj["status"]["interfaces"] if i["name"] == nic)


class Vms:
    """The module's VMs by name, re-read on demand (they restart and move)."""

    def __init__(self, net: NetStack) -> None:
        self.net = net
        self.stack: Stack = net.stack

    def get(self, name: str) -> dict[str, Any]:
        obj = self.stack.get("vm", name, NAMESPACE)
        assert obj is not None, f"vm {name} is gone"
        return obj

    def shell(self, name: str) -> GuestShell:
        return self.net.shell(self.get(name))

    def serial(self, obj: dict[str, Any]) -> str:
        host = obj["status"]["host"]
        path = self.net.agent_states[host] / "vms" / obj["metadata"]["uid"] / "serial.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def leased(self, name: str, *, after: int = 0) -> dict[str, Any]:
        """The VM once Running with every interface of its status holding its address by
        DHCP (the guest's `kubevisor-net bound` lines, beyond the first `after`)."""

        def bound() -> dict[str, Any] | None:
            obj = self.get(name)
            if (obj.get("status") or {}).get("phase") != "Running":
                return None
            seen = {
                e.interface: (e.mac, (e.address,))
                for e in guest_image.net_events(self.serial(obj))[after:]
            }
            wanted = interfaces(obj)
            return obj if all(seen.get(n) == v for n, v in wanted.items()) else None

        return eventually(bound, timeout=BOOT_TIMEOUT, what=f"{name} Running, leased")

    def page(self, client: str, server: str, nic: str) -> guest_image.GuestPage:
        """`server`'s web page as `client` fetches it from its address on `nic`."""
        fetched = self.shell(client).fetch(f"http://{address(self.get(server), nic)}/")
        assert fetched.ok, f"{client} -> {server} {nic}: {fetched}"
        return guest_image.parse_page(fetched.output)


@pytest.fixture(scope="module")
def vms(net_stack: NetStack) -> Iterator[Vms]:
    stack = net_stack.stack
    one, two = (h.name for h in net_stack.hosts)
    stack.kubectl("create", "namespace", NAMESPACE)
    stack.kubectl("label", "hvh", one, f"{pin_label('a')}=yes", f"{pin_label('c')}=yes")
    stack.kubectl("label", "hvh", two, f"{pin_label('b')}=yes")
    started = time.monotonic()
    try:
        stack.apply(
            NAMESPACE,
            network("blue", BLUE_CIDR, ("10.10.0.10", "10.10.0.250"), type="overlay"),
            network(
                "phys",
                PHYS_CIDR,
                ("10.211.0.10", "10.211.0.100"),
                type="provider",
                provider={"physicalNetwork": "physnet1"},
            ),
            network("red", BLUE_CIDR, RED_POOL, type="overlay"),
            vm(
                "a",
                {"name": "eth0", "network": "blue", "ipAddress": A_FIXED},
                {"name": "eth1", "network": "phys"},
                pin=pin_label("a"),
            ),
            vm(
                "b",
                {"name": "eth0", "network": "blue"},
                {"name": "eth1", "network": "phys"},
                pin=pin_label("b"),
            ),
            vm("c", {"name": "eth0", "network": "red"}, pin=pin_label("c")),
        )
        found = Vms(net_stack)
        for name in ("a", "b", "c"):
            found.leased(name)
        print(f"\nnetworking: 3 VMs Running and leased in {time.monotonic() - started:.1f}s")
        yield found
    finally:
        stack.kubectl(
            "delete", "vm", "--all", "-n", NAMESPACE, "--wait=true", "--timeout=120s", check=False
        )
        stack.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_vms_on_an_overlay_get_their_addresses_by_dhcp_and_reach_each_other(
    vms: Vms, net_stack: NetStack
) -> None:
    a, b = vms.get("a"), vms.get("b")
    assert a["status"]["host"] != b["status"]["host"]
    assert address(a, "eth0") == A_FIXED
    assert IPv4Interface(f"{address(b, 'eth0')}/24").network == IPv4Interface(BLUE_CIDR).network
    macs = [mac for obj in (a, b) for mac, _ in interfaces(obj).values()]
    assert len(set(macs)) == 4, macs
    # Each guest's page, fetched by the other across the VXLAN: the NICs it has (MAC and
    # address) are what the VM's status says, and it saw the client's own address.
    for client, server in (("a", "b"), ("b", "a")):
        page = vms.page(client, server, "eth0")
        served = vms.get(server)
        assert page.uuid == served["metadata"]["uid"]
        assert page.interfaces == interfaces(served)
        assert page.peer == address(vms.get(client), "eth0")
    assert vms.shell("a").ping(address(b, "eth0"), count=2, seconds=10).ok


def test_the_same_vms_reach_each_other_on_a_provider_network(vms: Vms) -> None:
    a = vms.get("a")
    assert IPv4Interface(f"{address(a, 'eth1')}/24").network == IPv4Interface(PHYS_CIDR).network
    for client, server in (("a", "b"), ("b", "a")):
        page = vms.page(client, server, "eth1")
        assert page.peer == address(vms.get(client), "eth1")
    assert vms.shell("b").ping(address(a, "eth1"), count=2, seconds=10).ok


def test_a_vm_on_another_network_cannot_reach_them(vms: Vms) -> None:
    """c is on red, the same subnet as blue and the same host as a: only the Network
    keeps them apart."""
    a, c = vms.get("a"), vms.get("c")
    assert a["status"]["host"] == c["status"]["host"]
    red = vms.stack.get("network", "red", NAMESPACE)
    (dhcp_port,) = red["status"]["dhcpPorts"]
    # c's own network works: its DHCP server answers.
    assert vms.shell("c").ping(dhcp_port["ipAddress"], count=1, seconds=5).ok
    assert not vms.shell("c").ping(A_FIXED, count=2, seconds=2).ok
    assert vms.shell("c").fetch(f"http://{A_FIXED}/", seconds=2).exit_code != 0
    assert not vms.shell("a").ping(address(c, "eth0"), count=2, seconds=2).ok


def test_a_guest_that_takes_another_address_gets_nothing_through(vms: Vms) -> None:
    b = vms.get("b")
    own = f"{address(b, 'eth0')}/24"
    shell = vms.shell("b")
    assert shell.set_address("10.10.0.99/24").ok
    try:
        assert not shell.ping(A_FIXED, count=2, seconds=2).ok
        assert not vms.shell("a").ping("10.10.0.99", count=2, seconds=2).ok
    finally:
        assert shell.set_address(own).ok
    # Back on its own address it is let through again.
    assert shell.ping(A_FIXED, count=2, seconds=10).ok


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


def test_an_exhausted_pool_and_a_taken_address_leave_a_vm_unplaced(vms: Vms) -> None:
    stack = vms.stack
    stack.apply(
        NAMESPACE,
        vm("no-room", {"name": "eth0", "network": "red"}),
        vm("same-address", {"name": "eth0", "network": "blue", "ipAddress": A_FIXED}),
    )
    try:
        for name, reason, message in (
            ("no-room", "AddressPoolExhausted", "no free address (2 of 2 in use)"),
            ("same-address", "AddressTaken", f"{A_FIXED} is taken by"),
        ):
            scheduled = eventually(
                lambda n=name: condition(vms.get(n), "Scheduled"),
                timeout=30,
                what=f"{name}'s Scheduled condition",
            )
            assert (scheduled["status"], scheduled["reason"]) == ("False", reason), scheduled
            assert message in scheduled["message"], scheduled
            assert not vms.get(name)["status"].get("host")
    finally:
        stack.kubectl("delete", "vm", "no-room", "same-address", "-n", NAMESPACE, "--wait=true")
    # Nothing was double-booked: a still holds its address and answers on it.
    assert vms.page("b", "a", "eth0").uuid == vms.get("a")["metadata"]["uid"]


def kubevisor(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The kubevisor CLI against the stack's API server."""
    argv = [sys.executable, "-m", "kubevisor.cli.main", *args]
    argv += ["--kubeconfig", str(stack.plane.kubeconfig)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)


def test_a_restarted_vm_keeps_its_addresses_and_macs(vms: Vms) -> None:
    before = vms.get("b")
    # b runs no DHCP client since it took another address: only a new boot leases again.
    assert vms.shell("b").run("touch /tmp/before-restart").ok
    done = kubevisor(vms.stack, "restart", "b", "-n", NAMESPACE, "--timeout", "120s")
    assert done.returncode == 0, done.stderr
    after = vms.leased("b")
    assert vms.shell("b").run("test -e /tmp/before-restart").exit_code == 1, "not rebooted"
    assert after["status"]["interfaces"] == before["status"]["interfaces"]
    page = vms.page("a", "b", "eth0")
    assert (page.uuid, page.interfaces) == (before["metadata"]["uid"], interfaces(before))


def lost_runs(received: list[int]) -> list[list[int]]:
    """The runs of consecutive sequence numbers missing before the last one received."""
    runs: list[list[int]] = []
    for seq in sorted(set(range(received[-1])) - set(received)):
        if runs and runs[-1][-1] == seq - 1:
            runs[-1].append(seq)
        else:
            runs.append([seq])
    return runs


def test_a_live_migration_keeps_addresses_and_the_peer_reaches_it_throughout(
    vms: Vms, net_stack: NetStack, record_property: pytest.RecordProperty
) -> None:
    """b moves to a's host while a pings it every 0.2 s: over the VXLAN before, on the
    same bridge after (QEMU's announce moves its MAC); the host b left keeps nothing."""
    stack = vms.stack
    before = vms.get("b")
    source = before["status"]["host"]
    target = vms.get("a")["status"]["host"]
    stack.kubectl("label", "hvh", target, f"{pin_label('b')}=yes")
    interval = 0.2
    pinging = vms.shell("a").start(f"ping -c 1000 -i {interval} -W 1 {address(before, 'eth0')}")
    stack.start_migration(NAMESPACE, "move-b", "b", targetHost=target)
    job = stack.wait_migration(NAMESPACE, "move-b")
    assert job["status"]["phase"] == "Succeeded", job["status"]
    moved = eventually(
        lambda: obj if (obj := vms.get("b"))["status"].get("host") == target else None,
        what="b's status on the target",
    )
    assert moved["status"]["interfaces"] == before["status"]["interfaces"]
    page = vms.page("a", "b", "eth0")
    assert (page.uuid, page.interfaces) == (before["metadata"]["uid"], interfaces(before))
    assert vms.shell("a").run("killall ping").ok
    replies = vms.shell("a").result(pinging)
    received = sorted(int(seq) for seq in re.findall(r"seq=(\d+)", replies.output))
    assert received, replies.output
    runs = lost_runs(received)
    gap = max((len(run) for run in runs), default=0) * interval
    record_property("migration_reachability_gap_seconds", gap)
    print(
        f"\nnetworking: migration of b; {len(received)}/{received[-1] + 1} pings answered, "
        f"longest gap {gap:.1f}s (lost {runs})"
    )
    assert gap <= 5.0, runs
    # b left host two, the last VM there: its bridges, VXLAN, DHCP and rules went with it.
    eventually(lambda: not net_stack.data_plane(source), what=f"{source}'s data plane removed")


def test_deleting_the_last_vms_removes_their_networks_from_the_host(
    vms: Vms, net_stack: NetStack
) -> None:
    host = vms.get("c")["status"]["host"]
    red = vms.stack.get("network", "red", NAMESPACE)
    c_tap = hostinputs.tap_name(vms.get("c")["metadata"]["uid"], "eth0")
    red_id = hostplan.short_id(red["metadata"]["uid"])

    def red_there(items: list[str]) -> bool:
        """red's bridge, VXLAN, DHCP namespace or dnsmasq, or a port rule of c's tap."""
        return any(red_id in item or c_tap in item for item in items)

    present = net_stack.data_plane(host)
    assert red_there(present), present
    assert any(c_tap in item for item in present if item.startswith("nft")), present

    # c is the last VM on red here: red goes, blue and phys (a and b) stay.
    vms.stack.kubectl("delete", "vm", "c", "-n", NAMESPACE, "--wait=true", "--timeout=120s")

    def red_gone() -> list[str] | None:
        left = net_stack.data_plane(host)
        return None if red_there(left) else left

    left = eventually(red_gone, what=f"red removed from {host}")
    blue = vms.stack.get("network", "blue", NAMESPACE)
    assert hostplan.bridge_name(blue["metadata"]["uid"]) in left, left

    vms.stack.kubectl("delete", "vm", "a", "b", "-n", NAMESPACE, "--wait=true", "--timeout=120s")
    eventually(lambda: not net_stack.data_plane(host), what=f"{host}'s data plane removed")


def test_a_vm_of_a_lost_host_starts_on_another_with_its_mac_and_address(
    vms: Vms, net_stack: NetStack
) -> None:
    """d runs on host two, which dies (agent, cables, libvirtd and guests): after the
    failover wait d boots on host one and leases the same address there."""
    stack = vms.stack
    one, two = (h.name for h in net_stack.hosts)
    stack.kubectl("label", "hvh", two, f"{pin_label('d')}=yes")
    stack.apply(NAMESPACE, vm("d", {"name": "eth0", "network": "blue"}, pin=pin_label("d")))
    before = vms.leased("d")
    assert before["status"]["host"] == two
    stack.kubectl("label", "hvh", one, f"{pin_label('d')}=yes")
    net_stack.kill(two)
    started = time.monotonic()
    # Leased on host one: its own dnsmasq answered (host two's is cut off with it).
    eventually(
        lambda: vms.get("d")["status"].get("host") == one,
        timeout=120,
        what="d placed on host one after the failover wait",
    )
    after = vms.leased("d")
    took = time.monotonic() - started
    print(f"\nnetworking: d leased again on {one} {took:.1f}s after {two} died")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["status"]["interfaces"] == before["status"]["interfaces"]
    dhcp = next(
        p["ipAddress"]
        for p in stack.get("network", "blue", NAMESPACE)["status"]["dhcpPorts"]
        if p["host"] == one
    )
    assert vms.shell("d").ping(dhcp, count=1, seconds=5).ok
