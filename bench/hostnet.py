"""Host-side cost of a VM's network: the Linux HostNetwork driver, timed.

    .venv/bin/python bench/hostnet.py [--rounds 20]        (root: network namespaces)

In a network namespace of its own (the "host", removed afterwards), each round converges
three plans and times each converge (observe + diff + apply, as the agent calls it):
`realise` takes a host with nothing to one overlay network with one VM (bridge, VXLAN
device with a flood entry, DHCP namespace and veth, dnsmasq, port rules: what a VM start
costs when it is the first on its network); `second` adds a second VM on that network (a
port rule and a dnsmasq SIGHUP); `noop` converges the same plan again; `remove` takes it
all away. Prints the median and p90 of each (target for `realise`: <= 100 ms).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from kubevisor.core.network import hostplan
from kubevisor.core.network.hostplan import HostFacts, HostPlan, Interface, Network, NetworkType
from kubevisor.drivers.hostnet.linux import LinuxHostNetwork

A = IPv4Address
NETWORK = Network(
    name="bench/blue",
    uid="b1b1b1b1-0000-4000-8000-000000000001",
    type=NetworkType.OVERLAY,
    subnet=IPv4Network("10.20.0.0/24"),
    gateway=A("10.20.0.1"),
    vni=100,
)


def nic(n: int) -> Interface:
    return Interface(
        f"bench/vm{n}", NETWORK, f"02:00:00:00:00:{n:02x}", A(f"10.20.0.{n}"), f"kvt-{n}"
    )


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
    finally:
        network.converge_now(HostPlan())
        network.close()
        subprocess.run(["ip", "netns", "del", host], check=False)
        shutil.rmtree(state, ignore_errors=True)
    for name, samples in times.items():
        ordered = sorted(samples)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(
            f"{name:8} median {statistics.median(samples) * 1000:6.1f} ms"
            f"   p90 {p90 * 1000:6.1f} ms   ({len(samples)} rounds)"
        )


if __name__ == "__main__":
    main()
