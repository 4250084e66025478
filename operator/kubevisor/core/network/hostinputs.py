"""What `hostplan.desired` is computed from, read out of the API's objects, purely.

The agent (`agent.network.HostNetworking`) lists the Networks its VMs use, the
HypervisorHosts and the VMs bound here (and those migrating here), validates them into the
API's models and hands them to these functions: `network` reads a Network object into the
host's view of it, `interfaces` a VM's `status.interfaces` (which the controller wrote
before it bound the VM) into `hostplan.Interface`s, `facts` this host's mappings, tunnel
endpoint, DHCP-port addresses and its peers' tunnel endpoints into `hostplan.HostFacts`,
and `nics` a VM's interfaces into what the domain XML plugs them into
(`core.domain.devices`). The tap name is derived here once, from the VM's uid and the
interface's name, so the domain's `<target dev>` and the port security rules agree, on any
host the VM runs on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address

from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.network import Network as NetworkObject
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.domain.host import Nic
from kubevisor.core.network import hostplan
from kubevisor.core.network.hostplan import HostFacts, Interface, Network, NetworkType, Problem

TAP_PREFIX = "kvt-"


def key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def tap_name(vm_uid: str, interface: str) -> str:
    """`kvt-` and 11 hex of SHA-256 of `uid/interface`: 15 characters, the same on every
    host, never what a tenant typed (libvirt reserves `vnet`/`vif`/`macvtap` names)."""
    digest = hashlib.sha256(f"{vm_uid}/{interface}".encode()).hexdigest()
    return f"{TAP_PREFIX}{digest[: hostplan.IFNAMSIZ - len(TAP_PREFIX)]}"


def network(obj: NetworkObject) -> Network | None:
    """The host's view of a Network object; None without a uid (not from the API server)."""
    meta = obj.metadata
    uid = meta.get("uid")
    if not uid:
        return None
    spec = obj.spec
    status = obj.status
    provider = spec.provider
    vni = status.vni if status is not None and status.vni is not None else spec.requested_vni
    return Network(
        name=key(str(meta.get("namespace", "")), str(meta.get("name", ""))),
        uid=str(uid),
        type=NetworkType(spec.type),
        subnet=spec.subnet.network,
        gateway=IPv4Address(spec.subnet.gateway) if spec.subnet.gateway else None,
        dns_servers=tuple(IPv4Address(a) for a in spec.subnet.dns_servers),
        dhcp=spec.dhcp,
        vni=vni if spec.type == "overlay" else None,
        physical_network=provider.physical_network if provider is not None else None,
        vlan=provider.vlan if provider is not None else None,
    )


def interfaces(
    vm: VirtualMachine, networks: Mapping[str, Network]
) -> tuple[list[Interface], list[Problem]]:
    """The NICs of `vm` on Networks, from its status.interfaces, with `networks` by
    `namespace/name`; an interface whose Network is not known (deleted, or not listed yet)
    or that has no IPv4 address is a Problem instead."""
    found, problems = _attached(vm, networks)
    return [interface for _, interface in found], problems


def nics(vm: VirtualMachine, networks: Mapping[str, Network]) -> dict[str, Nic]:
    """Interface name -> where the domain plugs it in, for the interfaces of `vm` on
    Networks that `interfaces` accepts; the renderer refuses the others by name."""
    found, _ = _attached(vm, networks)
    return {
        name: Nic(bridge=hostplan.bridge_name(i.network.uid), mac=i.mac, tap=i.tap)
        for name, i in found
    }


def _attached(
    vm: VirtualMachine, networks: Mapping[str, Network]
) -> tuple[list[tuple[str, Interface]], list[Problem]]:
    namespace = str(vm.metadata.get("namespace", ""))
    owner = key(namespace, str(vm.metadata.get("name", "")))
    uid = str(vm.metadata.get("uid", ""))
    found: list[tuple[str, Interface]] = []
    problems: list[Problem] = []
    for status in vm.status.interfaces if vm.status is not None else []:
        network_key = key(namespace, status.network)
        known = networks.get(network_key)
        if known is None:
            message = f"interface {status.name}: Network {network_key} is not known on this host"
            problems.append(Problem(network_key, "NetworkNotFound", message, owner))
            continue
        address = _first_ipv4(status.ip_addresses)
        if address is None:
            message = f"interface {status.name}: no IPv4 address in status.interfaces"
            problems.append(Problem(network_key, "NoAddress", message, owner))
            continue
        interface = Interface(
            vm=owner,
            network=known,
            mac=status.mac_address,
            ip=address,
            tap=tap_name(uid, status.name),
        )
        found.append((status.name, interface))
    return found, problems


def _first_ipv4(texts: Iterable[str]) -> IPv4Address | None:
    for text in texts:
        try:
            return IPv4Address(text)
        except AddressValueError:
            continue
    return None


@dataclass(frozen=True, slots=True)
class HostSide:
    """This agent's own settings for its data plane (flags, read once)."""

    host: str
    tunnel_ip: IPv4Address | None = None
    underlay_mtu: int = 1500
    namespace_prefix: str = "kvdhcp-"


def facts(
    side: HostSide, *, hosts: Iterable[HypervisorHost], networks: Iterable[NetworkObject]
) -> HostFacts:
    """This host's `HostFacts`: its physical-network mappings (its own HypervisorHost's
    spec), its tunnel endpoint (the agent's flag), the other hosts' tunnel endpoints (their
    status) and its DHCP-port address in each Network (the Network's status.dhcpPorts)."""
    mappings: dict[str, str] = {}
    peers: set[IPv4Address] = set()
    for host in hosts:
        name = host.metadata.get("name")
        if name == side.host:
            mappings = {m.physical_network: m.interface for m in host.spec.network_mappings}
            continue
        endpoint = (
            host.status.network.tunnel_endpoint if host.status and host.status.network else None
        )
        if endpoint:
            peers.add(IPv4Address(endpoint))
    dhcp_addresses: dict[str, IPv4Address] = {}
    for obj in networks:
        uid = obj.metadata.get("uid")
        ports = obj.status.dhcp_ports if obj.status is not None else []
        address = next((p.ip_address for p in ports if p.host == side.host), None)
        if uid and address:
            dhcp_addresses[str(uid)] = IPv4Address(address)
    return HostFacts(
        mappings=mappings,
        tunnel_ip=side.tunnel_ip,
        peers=frozenset(peers),
        dhcp_addresses=dhcp_addresses,
        underlay_mtu=side.underlay_mtu,
        namespace_prefix=side.namespace_prefix,
    )
