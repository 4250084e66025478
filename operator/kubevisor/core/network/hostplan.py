"""The data plane one host needs for the VMs bound to it, decided purely.

The agent gathers the interfaces of the VMs bound to its host (each carrying its Network's
identity, its MAC, IP and tap name) and the host's own facts (physical-network mappings,
tunnel endpoint, the DHCP-port address the controller allocated it in each network, the
peer hosts' tunnel endpoints); `desired` turns them into the bridges, VLAN sub-interfaces,
VXLAN devices, DHCP namespaces and servers and port-security rules that realise them, and
`drivers.hostnet` makes the host match (diffing with `hostdiff.changes`). A network is
realised only while an interface here needs it. One that cannot be realised on this host is
left out with a `Problem` saying why (an interface whose own data is bad likewise), so the
rest of the host goes on and the agent can tell the VM's owner.

Names are derived from the Network's uid (`kvbr-`, `kvvx-`, `kvdh-` + 8 hex), never from
what a tenant typed, and fit Linux's 15-character interface names.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

VXLAN_PORT = 4789
"""IANA's VXLAN port (Linux's own default, 8472, predates it)."""
VXLAN_OVERHEAD = 50
"""Outer Ethernet + IPv4 + UDP + VXLAN headers: an overlay's MTU is the underlay's less this."""
DHCP_INTERFACE = "kvdhcp0"
"""The DHCP namespace's end of its veth (the only interface there besides lo)."""
IFNAMSIZ = 15
"""Linux's longest interface name (IFNAMSIZ less the terminating NUL)."""
MAX_VNI = 2**24 - 1

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


class NetworkType(enum.StrEnum):
    PROVIDER = "provider"
    OVERLAY = "overlay"


@dataclass(frozen=True, slots=True)
class Network:
    """What a host needs to know of a kubevisor Network (built by the agent from its object)."""

    name: str
    """`namespace/name`, for messages."""
    uid: str
    type: NetworkType
    subnet: IPv4Network
    gateway: IPv4Address | None = None
    dns_servers: tuple[IPv4Address, ...] = ()
    dhcp: bool = True
    vni: int | None = None
    """Overlay: the VXLAN network identifier (spec, or allocated into status)."""
    physical_network: str | None = None
    """Provider: the physical network's name, mapped to an interface by each host."""
    vlan: int | None = None
    """Provider: the 802.1Q VLAN id, or None for an untagged (flat) network."""


@dataclass(frozen=True, slots=True)
class Interface:
    """One NIC of a VM bound to this host, as the controller allocated it."""

    vm: str
    """`namespace/name` of the VM, for messages."""
    network: Network
    mac: str
    ip: IPv4Address
    tap: str
    """The host-side device libvirt creates for the NIC (port security matches it by name)."""


@dataclass(frozen=True, slots=True)
class HostFacts:
    """This host's side: its mappings, tunnel endpoint, DHCP ports and its peers."""

    mappings: Mapping[str, str] = field(default_factory=dict)
    """Physical network name -> this host's interface (hvh.spec.networkMappings)."""
    tunnel_ip: IPv4Address | None = None
    peers: frozenset[IPv4Address] = frozenset()
    """The other hosts' tunnel endpoints (this host's own is ignored if listed)."""
    dhcp_addresses: Mapping[str, IPv4Address] = field(default_factory=dict)
    """Network uid -> this host's DHCP-port address in it (allocated by the controller)."""
    underlay_mtu: int = 1500
    namespace_prefix: str = "kvdhcp-"
    """Names the DHCP namespaces (`<prefix><8 hex>`); namespaces are machine-wide, so test
    hosts sharing one machine need distinct prefixes."""


@dataclass(frozen=True, slots=True)
class Bridge:
    name: str
    network: str
    """The Network's uid (the owner recorded on the device)."""
    uplink: str | None = None
    """A flat provider network's host interface, enslaved to the bridge."""


@dataclass(frozen=True, slots=True)
class VlanDevice:
    name: str
    uplink: str
    vid: int
    bridge: str
    network: str


@dataclass(frozen=True, slots=True)
class VxlanDevice:
    name: str
    vni: int
    local: IPv4Address
    bridge: str
    network: str
    flood: frozenset[IPv4Address] = frozenset()
    """Head-end replication: broadcast and unknown unicast go to each of these endpoints
    (FDB entries 00:00:00:00:00:00 -> peer); learned entries do the rest."""
    port: int = VXLAN_PORT


Link = VlanDevice | VxlanDevice | None
"""What joins a network's bridge to the other hosts besides a flat uplink."""


@dataclass(frozen=True, slots=True)
class DhcpNamespace:
    """A network namespace for the network's DHCP server, joined to its bridge by a veth
    (`veth` on the bridge, DHCP_INTERFACE inside with `address`): the host itself has no
    address on tenant bridges."""

    name: str
    veth: str
    bridge: str
    address: IPv4Interface
    network: str


@dataclass(frozen=True, slots=True)
class DhcpHost:
    mac: str
    ip: IPv4Address


@dataclass(frozen=True, slots=True)
class DhcpServer:
    """dnsmasq in `namespace`, answering only `hosts` (static entries; no dynamic pool)."""

    namespace: str
    subnet: IPv4Network
    gateway: IPv4Address | None
    dns_servers: tuple[IPv4Address, ...]
    mtu: int | None
    hosts: frozenset[DhcpHost]


@dataclass(frozen=True, slots=True)
class PortSecurity:
    """What may enter the bridge from `tap`: frames from `mac`, IPv4 from `ip` (or 0.0.0.0
    for DHCP), ARP claiming only `mac`/`ip`; nothing else."""

    tap: str
    mac: str
    ip: IPv4Address


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a network (or one interface) is not realised, or only partly, on this host."""

    network: str
    reason: str
    message: str
    vm: str | None = None
    """Set when the problem is one interface's, not the network's."""


@dataclass(frozen=True, slots=True)
class HostPlan:
    """A host's data plane: what `desired` wants, or what `HostNetwork.observe` found."""

    bridges: frozenset[Bridge] = frozenset()
    vlans: frozenset[VlanDevice] = frozenset()
    vxlans: frozenset[VxlanDevice] = frozenset()
    dhcp_namespaces: frozenset[DhcpNamespace] = frozenset()
    dhcp_servers: frozenset[DhcpServer] = frozenset()
    ports: frozenset[PortSecurity] = frozenset()
    problems: tuple[Problem, ...] = ()


def short_id(uid: str) -> str:
    """8 hex characters naming a network's devices: the uid's first, or a hash of it."""
    digits = re.sub(r"[^0-9a-f]", "", uid.lower())
    return digits[:8] if len(digits) >= 8 else hashlib.sha256(uid.encode()).hexdigest()[:8]


def bridge_name(uid: str) -> str:
    return f"kvbr-{short_id(uid)}"


def vxlan_name(uid: str) -> str:
    return f"kvvx-{short_id(uid)}"


def dhcp_veth_name(uid: str) -> str:
    return f"kvdh-{short_id(uid)}"


def vlan_name(uplink: str, vid: int) -> str:
    """`uplink.vid` as Linux admins name it, or a hashed stand-in when that is too long."""
    name = f"{uplink}.{vid}"
    if len(name) <= IFNAMSIZ:
        return name
    return f"kvvl{hashlib.sha256(uplink.encode()).hexdigest()[:5]}.{vid}"


def interface_problem(interface: Interface) -> Problem | None:
    """What is wrong with one interface's own data, if anything."""
    network = interface.network
    if not _MAC.match(interface.mac):
        message = f"MAC address {interface.mac!r} is not six lower-case hex octets"
        return Problem(network.name, "InvalidMAC", message, interface.vm)
    if not _IFNAME.match(interface.tap):
        message = f"tap name {interface.tap!r} is not a Linux interface name"
        return Problem(network.name, "InvalidTap", message, interface.vm)
    if interface.ip not in network.subnet:
        message = f"address {interface.ip} is outside the subnet {network.subnet}"
        return Problem(network.name, "AddressOutsideSubnet", message, interface.vm)
    return None


def segment(network: Network, host: HostFacts) -> Problem | tuple[Bridge, Link]:
    """The bridge of `network` on this host and what joins it to the other hosts (a VLAN
    or VXLAN device, or None when the bridge enslaves a flat uplink), or why it cannot."""
    bridge = bridge_name(network.uid)
    if network.type is NetworkType.OVERLAY:
        return _overlay(network, host, bridge)
    return _provider(network, host, bridge)


def _overlay(network: Network, host: HostFacts, bridge: str) -> Problem | tuple[Bridge, Link]:
    if network.vni is None or not 1 <= network.vni <= MAX_VNI:
        return Problem(network.name, "NoVNI", f"overlay network has no valid VNI ({network.vni})")
    if host.tunnel_ip is None:
        message = "this host has no tunnel endpoint (agent flag --tunnel-ip) for overlay networks"
        return Problem(network.name, "NoTunnelEndpoint", message)
    flood = frozenset(host.peers) - {host.tunnel_ip}
    vxlan = VxlanDevice(
        name=vxlan_name(network.uid),
        vni=network.vni,
        local=host.tunnel_ip,
        bridge=bridge,
        network=network.uid,
        flood=flood,
    )
    return Bridge(bridge, network.uid), vxlan


def _provider(network: Network, host: HostFacts, bridge: str) -> Problem | tuple[Bridge, Link]:
    physical = network.physical_network
    uplink = host.mappings.get(physical) if physical else None
    if uplink is None:
        message = f"this host maps no interface to physical network {physical!r}"
        return Problem(network.name, "NoMapping", message)
    if network.vlan is None:
        return Bridge(bridge, network.uid, uplink=uplink), None
    if not 1 <= network.vlan <= 4094:
        return Problem(network.name, "InvalidVLAN", f"VLAN {network.vlan} is outside 1-4094")
    vlan = VlanDevice(vlan_name(uplink, network.vlan), uplink, network.vlan, bridge, network.uid)
    return Bridge(bridge, network.uid), vlan


def claims(bridge: Bridge, link: Link) -> tuple[tuple[object, ...], ...]:
    """What a realised network holds exclusively on the host: its device names, its uplink
    (flat), its uplink's VLAN id, its VNI. Two networks holding one of these conflict."""
    held: list[tuple[object, ...]] = [("name", bridge.name)]
    if bridge.uplink is not None:
        held.append(("uplink", bridge.uplink))
    if isinstance(link, VlanDevice):
        held.append(("vlan", link.uplink, link.vid))
    if isinstance(link, VxlanDevice):
        held.append(("vni", link.vni))
    return tuple(held)


def dhcp(
    network: Network, host: HostFacts, interfaces: Iterable[Interface], bridge: str
) -> Problem | tuple[DhcpNamespace, DhcpServer] | None:
    """The network's DHCP namespace and server on this host (None when the network has
    DHCP off), serving exactly this host's interfaces on it."""
    if not network.dhcp:
        return None
    address = host.dhcp_addresses.get(network.uid)
    if address is None:
        message = "no DHCP-port address allocated for this host: guests get no DHCP answer here"
        return Problem(network.name, "NoDHCPAddress", message)
    if address not in network.subnet or address in (
        network.subnet.network_address,
        network.subnet.broadcast_address,
    ):
        message = f"DHCP-port address {address} is not a host address of {network.subnet}"
        return Problem(network.name, "InvalidDHCPAddress", message)
    namespace = f"{host.namespace_prefix}{short_id(network.uid)}"
    mtu = host.underlay_mtu - VXLAN_OVERHEAD if network.type is NetworkType.OVERLAY else None
    return (
        DhcpNamespace(
            name=namespace,
            veth=dhcp_veth_name(network.uid),
            bridge=bridge,
            address=ipaddress.IPv4Interface((address, network.subnet.prefixlen)),
            network=network.uid,
        ),
        DhcpServer(
            namespace=namespace,
            subnet=network.subnet,
            gateway=network.gateway,
            dns_servers=network.dns_servers,
            mtu=mtu,
            hosts=frozenset(DhcpHost(i.mac, i.ip) for i in interfaces),
        ),
    )


def group(interfaces: Iterable[Interface]) -> tuple[dict[str, list[Interface]], list[Problem]]:
    """Valid interfaces by network uid; the rest as problems. The first interface (by VM,
    tap) names a network's identity; one that disagrees with it, or reuses a tap, is refused."""
    by_network: dict[str, list[Interface]] = {}
    problems: list[Problem] = []
    taps: set[str] = set()
    for interface in sorted(interfaces, key=lambda i: (i.vm, i.tap)):
        problem = interface_problem(interface)
        known = by_network.get(interface.network.uid)
        if problem is None and known and known[0].network != interface.network:
            message = f"network uid {interface.network.uid} is described differently by two VMs"
            problem = Problem(interface.network.name, "ConflictingNetwork", message, interface.vm)
        if problem is None and interface.tap in taps:
            message = f"tap {interface.tap} is used by another interface"
            problem = Problem(interface.network.name, "DuplicateTap", message, interface.vm)
        if problem is not None:
            problems.append(problem)
            continue
        taps.add(interface.tap)
        by_network.setdefault(interface.network.uid, []).append(interface)
    return by_network, problems


def desired(interfaces: Iterable[Interface], host: HostFacts) -> HostPlan:
    """Everything this host's data plane needs for `interfaces` (the NICs of the VMs bound
    to it); networks in uid order, so a conflict always refuses the same one."""
    by_network, problems = group(interfaces)
    held: dict[tuple[object, ...], str] = {}
    bridges: set[Bridge] = set()
    vlans: set[VlanDevice] = set()
    vxlans: set[VxlanDevice] = set()
    namespaces: set[DhcpNamespace] = set()
    servers: set[DhcpServer] = set()
    ports: set[PortSecurity] = set()
    for uid in sorted(by_network):
        members = by_network[uid]
        network = members[0].network
        realised = segment(network, host)
        if isinstance(realised, Problem):
            problems.append(realised)
            continue
        bridge, link = realised
        wanted = claims(bridge, link)
        clash = next((claim for claim in wanted if claim in held), None)
        if clash is not None:
            needed = " ".join(str(part) for part in clash)
            message = f"network {held[clash]} already holds {needed} on this host"
            problems.append(Problem(network.name, "ConflictingNetwork", message))
            continue
        held.update(dict.fromkeys(wanted, network.name))
        bridges.add(bridge)
        if isinstance(link, VlanDevice):
            vlans.add(link)
        if isinstance(link, VxlanDevice):
            vxlans.add(link)
        ports.update(PortSecurity(i.tap, i.mac, i.ip) for i in members)
        server = dhcp(network, host, members, bridge.name)
        if isinstance(server, Problem):
            problems.append(server)
        elif server is not None:
            namespaces.add(server[0])
            servers.add(server[1])
    return HostPlan(
        bridges=frozenset(bridges),
        vlans=frozenset(vlans),
        vxlans=frozenset(vxlans),
        dhcp_namespaces=frozenset(namespaces),
        dhcp_servers=frozenset(servers),
        ports=frozenset(ports),
        problems=tuple(problems),
    )
