"""Host-side cost of a VM's network: the Linux HostNetwork driver, and the agent's wait
for it before a VM starts, timed.

    .venv/bin/python bench/hostnet.py [--rounds 20]        (root: network namespaces)

In a network namespace of its own (the "host", removed afterwards), each round converges
three plans and times each converge (observe + diff + apply, as the agent calls it):
`realise` takes a host with nothing to one overlay network with one VM (bridge, VXLAN
device with a flood entry, DHCP namespace and veth, dnsmasq, port rules: what a VM start
costs when it is the first on its network); `second` adds a second VM on that network (a
port rule and a dnsmasq SIGHUP); `noop` converges the same plan again; `remove` takes it
all away.

Then the same through the agent: `attach first` and `attach second` time the agent's
`HostNetworking.attach` for a VM start (the first VM on the network, then a second one):
what its reconciler waits for before it defines the domain, with the plan built from the
VM, Network and host objects and the driver in its worker thread, as in the agent. This
is the extra time a VM start costs for its network on the host side. Prints the median and
p90 of each (target for `realise` and `attach first`: <= 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, cast

from kubevisor.agent.network import HostNetworking
from kubevisor.agent.vms import BoundVms
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.network import hostinputs, hostplan
from kubevisor.core.network.hostplan import HostFacts, HostPlan, Interface, Network, NetworkType
from kubevisor.drivers.hostnet.linux import LinuxHostNetwork
from kubevisor.kube.client import Kube, Object

A = IPv4Address
NETWORK = Network(
    name="bench/blue",
    uid="b1b1b1b1-0000-4000-8000-000000000001",
    type=NetworkType.OVERLAY,
    subnet=IPv4Network("10.20.0.0/24"),
    gateway=A("10.20.0.1"),
    vni=100,
)
HOST = "bench-host"
TARGET_MS = 100.0


def nic(n: int) -> Interface:
    return Interface(
        f"bench/vm{n}", NETWORK, f"02:00:00:00:00:{n:02x}", A(f"10.20.0.{n}"), f"kvt-{n}"
    )


class Listing:
    """The API as the agent's `HostNetworking` lists it: the Network (its DHCP port on this
    host) and one other host with its tunnel endpoint; nothing changes while it runs."""

    async def list_networks(self) -> tuple[list[Object], str]:
        network = {
            "metadata": {"namespace": "bench", "name": "blue", "uid": NETWORK.uid},
            "spec": {"type": "overlay", "subnet": {"cidr": "10.20.0.0/24", "gateway": "10.20.0.1"}},
            "status": {
                "vni": NETWORK.vni,
                "dhcpPorts": [{"host": HOST, "ipAddress": "10.20.0.250"}],
            },
        }
        return [network], "1"

    async def list_hosts_at(self) -> tuple[list[Object], str]:
        peer = {"metadata": {"name": "peer"}, "spec": {}}
        return [{**peer, "status": {"network": {"tunnelEndpoint": "172.31.255.2"}}}], "1"


def vm(n: int) -> Object:
    """VM `n` bound to HOST with its interface on the Network, as the controller leaves it."""
    metadata: dict[str, Any] = {"namespace": "bench", "name": f"vm{n}", "uid": f"uid-vm{n}"}
    interface = {"name": "eth0", "network": "blue", "macAddress": f"02:00:00:00:00:{n:02x}"}
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {**metadata, "generation": 1},
        "spec": {"memory": {"size": "96Mi"}, "networks": [{"name": "eth0", "network": "blue"}]},
        "status": {
            "host": HOST,
            "phase": "Scheduled",
            "interfaces": [{**interface, "ipAddresses": [f"10.20.0.{n}"]}],
        },
    }


async def attach_round(network: LinuxHostNetwork, prefix: str) -> dict[str, float]:
    """One VM start after another on an empty host, through the agent's `attach`; then the
    VMs go and one converge removes it all (not timed: the driver's `remove` row is)."""
    side = hostinputs.HostSide(HOST, tunnel_ip=A("172.31.255.1"), namespace_prefix=f"{prefix}d-")
    vms = BoundVms()
    networking = HostNetworking(side=side, kube=cast(Kube, Listing()), driver=network, vms=vms)
    await networking.load()
    times: dict[str, float] = {}
    for name, n in (("attach first", 5), ("attach second", 6)):
        obj = vm(n)
        key = vms.remember(obj)
        started = time.perf_counter()
        nics = await networking.attach(VirtualMachine.model_validate(obj), obj["metadata"]["uid"])
        times[name] = time.perf_counter() - started
        assert list(nics) == ["eth0"], (key, nics)
    for key in vms:
        vms.unbound(key)
        vms.forget(key)
    _, removed = await networking.converge()
    assert removed.failed == () and removed.applied, removed
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    prefix = f"kvbench{os.getpid() % 10000}-"
    host = f"{prefix}host"
    facts = HostFacts(
        tunnel_ip=A("172.31.255.1"),
        peers=frozenset({A("172.31.255.1"), A("172.31.255.2")}),
        dhcp_addresses={NETWORK.uid: A("10.20.0.250")},
        namespace_prefix=f"{prefix}d-",
    )
    plans = {
        "realise": hostplan.desired([nic(5)], facts),
        "second": hostplan.desired([nic(5), nic(6)], facts),
        "noop": hostplan.desired([nic(5), nic(6)], facts),
        "remove": HostPlan(),
    }
    state = Path(tempfile.mkdtemp(prefix="kubevisor-bench-"))
    state.chmod(0o755)
    subprocess.run(["ip", "netns", "add", host], check=True)
    times: dict[str, list[float]] = {name: [] for name in plans}
    network = LinuxHostNetwork(state_dir=state, netns=host, namespace_prefix=f"{prefix}d-")
    try:
        for _ in range(rounds):
            for name, plan in plans.items():
                started = time.perf_counter()
                result = network.converge_now(plan)
                times[name].append(time.perf_counter() - started)
                assert result.failed == (), result.failed
                assert result.changed is (name != "noop"), (name, result)
        for _ in range(rounds):
            for name, seconds in asyncio.run(attach_round(network, prefix)).items():
                times.setdefault(name, []).append(seconds)
    finally:
        network.converge_now(HostPlan())
        network.close()
        subprocess.run(["ip", "netns", "del", host], check=False)
        shutil.rmtree(state, ignore_errors=True)
    for name, samples in times.items():
        ordered = sorted(samples)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        median = statistics.median(samples) * 1000
        verdict = ""
        if name in ("realise", "attach first"):
            verdict = (
                f"   target <= {TARGET_MS:.0f} ms: {'met' if median <= TARGET_MS else 'MISSED'}"
            )
        print(
            f"{name:13} median {median:6.1f} ms   p90 {p90 * 1000:6.1f} ms"
            f"   ({len(samples)} rounds){verdict}"
        )


if __name__ == "__main__":
    main()
