"""Network namespaces for testbed hosts: each host's data plane in a namespace of its own,
the hosts joined by an underlay the testbed creates in another (docs/testbed-network.md).

For one state directory (one cluster of hosts), with P = `Underlay.prefix`:

    netns P-underlay   br-underlay  (L2 only)  <- ul-h1, ul-h2, ... (one veth per host)
                       br-provider  (L2 only)  <- pv-h1, pv-h2, ...
    netns P-h1         eth0 = peer of ul-h1, 10.210.0.1/24: the host's underlay address
                       eth1 = peer of pv-h1, no address: the uplink of the provider
                              physical network PHYSICAL_NETWORK
    netns P-h2         eth0 10.210.0.2/24, eth1 ...

Host i's libvirtd (so its QEMUs and their taps) runs in P-hi (`hosts.start_hosts(...,
netns=True)`); tunnel endpoints, bridges, DHCP servers and firewall rules that the host's
data plane makes belong there too. No address is ever configured in the machine's own
namespace and no namespace has a route out, so no packet leaves the machine. Namespaces
are named files in /run/netns (`ip netns list` shows them; `ip -n NAME`, `nsenter
--net=/run/netns/NAME` and pyroute2's `IPRoute(netns=NAME)` all work). The state directory's
path picks P, so two clusters on one machine never share a name.

The testbed wires this with iproute2's `ip`, as an admin would cable and address machines
(the same commands docs/testbed-network.md gives for looking at it by hand); netlink in
kubevisor itself is the host network driver's alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubevisor.testbed import procfs

NETNS_DIR = Path("/run/netns")
UNDERLAY_CIDR = ipaddress.IPv4Network("10.210.0.0/24")
UNDERLAY_BRIDGE = "br-underlay"
PROVIDER_BRIDGE = "br-provider"
PHYSICAL_NETWORK = "physnet1"
"""The provider physical network's name, as a HypervisorHost's networkMappings would use it."""
UNDERLAY_IFNAME = "eth0"
"""The host's underlay interface (its management and tunnel address) in its namespace."""
UPLINK_IFNAME = "eth1"
"""The host's uplink into the provider physical network, in its namespace."""
MAX_HOST_INDEX = 250


class NetnsError(RuntimeError):
    """A namespace or link could not be set up; says which and why."""


@dataclasses.dataclass(frozen=True)
class Underlay:
    """The underlay of one cluster of testbed hosts: which names and addresses it uses."""

    prefix: str
    cidr: ipaddress.IPv4Network = UNDERLAY_CIDR

    @property
    def netns(self) -> str:
        return f"{self.prefix}-underlay"

    def host_netns(self, index: int) -> str:
        """The namespace of host `index` (the N of kubevisor-host-N)."""
        return f"{self.prefix}-h{index}"

    def host_address(self, index: int) -> ipaddress.IPv4Interface:
        """Host `index`'s underlay address with its prefix (10.210.0.N/24)."""
        if not 1 <= index <= MAX_HOST_INDEX:
            raise NetnsError(f"host index {index}: a host on the underlay is 1..{MAX_HOST_INDEX}")
        return ipaddress.IPv4Interface(f"{self.cidr.network_address + index}/{self.cidr.prefixlen}")

    def ports(self, index: int) -> tuple[str, str]:
        """Host `index`'s veth ends in the underlay namespace: (underlay, provider)."""
        return f"ul-h{index}", f"pv-h{index}"


def missing_prerequisites() -> list[str]:
    """What this machine lacks for hosts in namespaces (iproute2's ip, util-linux nsenter)."""
    return [tool for tool in ("ip", "nsenter") if shutil.which(tool) is None]


def missing_data_plane_prerequisites() -> list[str]:
    """What this machine lacks for hosts in namespaces whose agents build a data plane
    (`agent_flags`): `missing_prerequisites`, dnsmasq (dnsmasq-base) and nft (nftables)."""
    missing = missing_prerequisites()
    return missing + [tool for tool in ("dnsmasq", "nft") if shutil.which(tool) is None]


def underlay_for(state_dir: Path) -> Underlay:
    """The underlay of the hosts under `state_dir`; its names come from the directory's path."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]
    return Underlay(prefix=f"kv-{digest}")


def path(name: str) -> Path:
    """The namespace's file, for `nsenter --net=` or setns(2)."""
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path(name).exists()


def command(name: str, argv: Sequence[str]) -> list[str]:
    """`argv` run in the network namespace `name` (and the caller's other namespaces: the
    file system is the machine's, so /sys shows the machine's devices; `ip` and every
    netlink tool see the namespace)."""
    nsenter = shutil.which("nsenter") or "nsenter"
    return [nsenter, f"--net={path(name)}", *argv]


def run(name: str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run `argv` in namespace `name`; output captured as text; `kwargs` go to subprocess.run."""
    return subprocess.run(command(name, argv), capture_output=True, text=True, **kwargs)


def inode(name: str) -> int | None:
    """The namespace's inode, as /proc/PID/ns/net shows it ("net:[INODE]"); None if gone."""
    try:
        return path(name).stat().st_ino
    except OSError:
        return None


def processes(ns_inode: int) -> list[int]:
    """Live processes in the network namespace with inode `ns_inode` (see `inode`)."""
    return procfs.namespace_processes(f"net:[{ns_inode}]")


def namespaces(prefix: str) -> list[str]:
    """The named namespaces whose name starts with `prefix`."""
    found = NETNS_DIR.iterdir() if NETNS_DIR.is_dir() else iter(())
    return sorted(entry.name for entry in found if entry.name.startswith(prefix))


def create(name: str) -> None:
    """Create the namespace `name` (with its loopback up) unless it exists."""
    if not exists(name):
        _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")


def remove(name: str) -> None:
    """Delete the namespace `name` if it exists. Its veths go with it (and their peers);
    the kernel frees it once no process is left in it."""
    if exists(name):
        _ip("netns", "delete", name)


def ensure_underlay(underlay: Underlay) -> None:
    """Create the underlay namespace and its two bridges (idempotent)."""
    create(underlay.netns)
    for bridge in (UNDERLAY_BRIDGE, PROVIDER_BRIDGE):
        add_bridge(underlay.netns, bridge)


def ensure_host(underlay: Underlay, index: int) -> ipaddress.IPv4Interface:
    """Create host `index`'s namespace with its underlay and uplink veths (idempotent);
    return its underlay address. The underlay must exist."""
    address = underlay.host_address(index)
    host = underlay.host_netns(index)
    create(host)
    present = links(underlay.netns)
    ends = zip(
        underlay.ports(index),
        (UNDERLAY_BRIDGE, PROVIDER_BRIDGE),
        (UNDERLAY_IFNAME, UPLINK_IFNAME),
        strict=True,
    )
    for port, bridge, inside in ends:
        if port not in present:
            # Made in the underlay with the peer straight in the host's namespace: no name
            # ever appears in the machine's own namespace.
            veth = ("link", "add", port, "type", "veth", "peer", "name", inside, "netns", host)
            _ip("-n", underlay.netns, *veth)
        _ip("-n", underlay.netns, "link", "set", port, "master", bridge, "up")
        _ip("-n", host, "link", "set", inside, "up")
    _ip("-n", host, "addr", "replace", str(address), "dev", UNDERLAY_IFNAME)
    return address


def attach_host(underlay: Underlay, index: int) -> tuple[str, str]:
    """(namespace, underlay address) of a new host `index` on `underlay`, wired now
    (`hosts.start_hosts(..., netns=True)`): the underlay first, then the host's end."""
    ensure_underlay(underlay)
    address = ensure_host(underlay, index)
    return underlay.host_netns(index), str(address.ip)


def remove_all(underlay: Underlay, host_namespaces: Sequence[str]) -> None:
    """Delete the hosts' namespaces, then the underlay's (`hosts.stop_hosts`, once no
    process is left in them)."""
    for name in host_namespaces:
        remove(name)
    remove(underlay.netns)


def agent_flags(name: str, underlay_address: str) -> list[str]:
    """The agent's flags for the data plane of the host in namespace `name`: the Linux
    driver there, its underlay address as tunnel endpoint, DHCP namespaces named after it
    (machine-wide names, so each host's stay apart)."""
    return [
        "--host-network=linux",
        f"--network-netns={name}",
        f"--tunnel-ip={underlay_address}",
        f"--dhcp-namespace-prefix={name}-d",
    ]


def remove_dhcp_servers(name: str, *, timeout: float = 10.0) -> list[str]:
    """Stop the DHCP servers the data plane of the host in namespace `name` left and remove
    their namespaces (named by `agent_flags`' prefix; outside the host's namespace, so they
    outlive it); returns the namespaces removed. For after the host's agent stopped: an
    agent keeps its dnsmasq instances running across its own restarts."""
    removed = []
    for server in namespaces(f"{name}-d"):
        found = inode(server)
        running = processes(found) if found is not None else []
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while found is not None and processes(found) and time.monotonic() < deadline:
            time.sleep(0.05)
        remove(server)
        removed.append(server)
    return removed


def add_bridge(name: str, bridge: str, *, ports: Sequence[str] = ()) -> None:
    """Create (or keep) a Linux bridge in namespace `name` enslaving `ports`, all up: for
    the underlay, and for tests that wire guests to a host's uplink by hand (the data plane
    does that for real)."""
    if bridge not in links(name):
        _ip("-n", name, "link", "add", bridge, "type", "bridge")
    for port in ports:
        _ip("-n", name, "link", "set", port, "master", bridge, "up")
    _ip("-n", name, "link", "set", bridge, "up")


def links(name: str) -> dict[str, str | None]:
    """Interface name -> the name of its bridge (None if not enslaved), in namespace `name`."""
    listing: list[dict[str, Any]] = json.loads(_ip("-n", name, "-j", "link", "show"))
    return {link["ifname"]: link.get("master") for link in listing}


def _ip(*args: str) -> str:
    done = subprocess.run(
        [shutil.which("ip") or "ip", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout
