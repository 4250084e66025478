"""Bridges, VLAN and VXLAN devices, FDB flood entries and DHCP namespaces through pyroute2
(the netlink library OpenStack's agents use), synchronous: the Linux driver calls it from its
worker thread.

Every link kubevisor creates carries an alias (IFLA_IFALIAS) saying so and naming its
Network's uid, and for a bridge the uplink it enslaved, for a DHCP veth its namespace:
the kernel's own objects record what is kubevisor's, so a restarted agent adopts them
without a state file and never touches an interface it did not create (an uplink is only
enslaved and released). Links it creates get no IPv6 link-local address (addr_gen_mode
none): the host has no address on tenant networks.

pyroute2 reaches another namespace through a forked child, which it ends with SIGTERM. The
child inherits the agent's signal set-up: asyncio's SIGTERM handler and, worse, its wakeup
fd, a socket shared with the parent. A SIGTERM that reached the child before it exited
was written into that socket, and the agent's event loop ran its own SIGTERM handler: it
stopped (or hung stopping) at random after a DHCP namespace was made or read. Importing
this module makes every forked child drop the wakeup fd, and pyroute2's children take
SIGTERM's default action (`pyroute2.config.disable_mp_signal`).
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pyroute2.config
from pyroute2 import IPRoute, NetlinkError, netns

from kubevisor.core.network.hostplan import (
    DHCP_INTERFACE,
    Bridge,
    DhcpNamespace,
    VlanDevice,
    VxlanDevice,
)
from kubevisor.drivers.hostnet.base import HostNetworkError
from kubevisor.drivers.hostnet.dnsmasq import NETNS_DIR


def _forget_wakeup_fd() -> None:
    """In a forked child: signals stay the child's own, never the parent's event loop's."""
    signal.set_wakeup_fd(-1)


pyroute2.config.disable_mp_signal = True
os.register_at_fork(after_in_child=_forget_wakeup_fd)

ALIAS = "kubevisor"
FLOOD = "00:00:00:00:00:00"
ADDR_GEN_MODE_NONE = 1
_NO_LINK_LOCAL = {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", 1)]})]}


def alias(network: str, **extra: str) -> str:
    return " ".join([ALIAS, f"network={network}", *(f"{k}={v}" for k, v in extra.items())])


def parse_alias(text: str | None) -> dict[str, str] | None:
    """The fields of a kubevisor alias, or None for a link that is not kubevisor's."""
    words = (text or "").split()
    if not words or words[0] != ALIAS:
        return None
    return dict(word.partition("=")[::2] for word in words[1:])


@dataclass(frozen=True, slots=True)
class Observed:
    bridges: frozenset[Bridge]
    vlans: frozenset[VlanDevice]
    vxlans: frozenset[VxlanDevice]
    veths: dict[str, tuple[str, str, str]]
    """DHCP namespace -> (its veth, the bridge it is in, the Network's uid)."""


class Links:
    """The links of one network namespace: the host's (None: the agent's own)."""

    def __init__(self, namespace: str | None = None) -> None:
        self.namespace = namespace
        self.ipr = IPRoute(netns=namespace) if namespace else IPRoute()

    def close(self) -> None:
        self.ipr.close()

    def observe(self) -> Observed:
        links = list(self.ipr.get_links())
        names = {link["index"]: link.get("ifname") for link in links}
        masters = {link.get("ifname"): link.get("IFLA_MASTER") for link in links}
        bridges, vlans, vxlans, veths = set(), set(), set(), {}
        for link in links:
            fields = parse_alias(link.get("IFLA_IFALIAS"))
            if fields is None:
                continue
            name, network = link.get("ifname"), fields.get("network", "")
            kind = link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
            data = link.get(("IFLA_LINKINFO", "IFLA_INFO_DATA"))
            master = names.get(link.get("IFLA_MASTER"), "")
            if kind == "bridge":
                uplink = fields.get("uplink")
                held = uplink if uplink and masters.get(uplink) == link["index"] else None
                bridges.add(Bridge(name, network, uplink=held))
            elif kind == "vlan":
                vid = data.get("IFLA_VLAN_ID")
                vlans.add(
                    VlanDevice(name, names.get(link.get("IFLA_LINK"), ""), vid, master, network)
                )
            elif kind == "vxlan":
                vxlans.add(self._vxlan(link, data, master, network))
            elif kind == "veth" and "namespace" in fields:
                veths[fields["namespace"]] = (name, master, network)
        return Observed(frozenset(bridges), frozenset(vlans), frozenset(vxlans), veths)

    def _vxlan(self, link: Any, data: Any, master: str, network: str) -> VxlanDevice:
        flood = frozenset(
            IPv4Address(entry.get("NDA_DST"))
            for entry in self.ipr.fdb("dump", ifindex=link["index"])
            if entry.get("NDA_LLADDR") == FLOOD and entry.get("NDA_DST")
        )
        return VxlanDevice(
            name=link.get("ifname"),
            vni=data.get("IFLA_VXLAN_ID"),
            local=IPv4Address(data.get("IFLA_VXLAN_LOCAL") or "0.0.0.0"),
            bridge=master,
            network=network,
            flood=flood,
            port=data.get("IFLA_VXLAN_PORT"),
        )

    def index(self, name: str) -> int:
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            raise HostNetworkError(f"no link {name} on this host")
        return int(found[0])

    def add_bridge(self, bridge: Bridge) -> None:
        extra = {"uplink": bridge.uplink} if bridge.uplink else {}
        with _reason(f"bridge {bridge.name}"):
            self.ipr.link("add", ifname=bridge.name, kind="bridge")
            self._up(bridge.name, label=alias(bridge.network, **extra), master=None)
            if bridge.uplink:
                self._enslave(bridge.uplink, bridge.name)

    def set_uplink(self, before: Bridge, after: Bridge) -> None:
        """Release `before`'s uplink (if still ours) and enslave `after`'s."""
        extra = {"uplink": after.uplink} if after.uplink else {}
        with _reason(f"bridge {after.name}"):
            if before.uplink:
                uplink = self.ipr.link_lookup(ifname=before.uplink)
                if uplink:
                    self.ipr.link("set", index=uplink[0], master=0)
            self.ipr.link(
                "set", index=self.index(after.name), ifalias=alias(after.network, **extra)
            )
            if after.uplink:
                self._enslave(after.uplink, after.name)

    def _enslave(self, uplink: str, bridge: str) -> None:
        found = self.ipr.link_lookup(ifname=uplink)
        if not found:
            raise HostNetworkError(
                f"uplink {uplink} (the physical network's mapping) does not exist"
            )
        self.ipr.link("set", index=found[0], master=self.index(bridge), state="up")

    def add_vlan(self, vlan: VlanDevice) -> None:
        found = self.ipr.link_lookup(ifname=vlan.uplink)
        if not found:
            raise HostNetworkError(
                f"uplink {vlan.uplink} (the physical network's mapping) does not exist"
            )
        try:
            self.ipr.link(
                "add",
                ifname=vlan.name,
                kind="vlan",
                link=found[0],
                vlan_id=vlan.vid,
            )
        except NetlinkError as error:
            if error.code == errno.EOPNOTSUPP:
                raise HostNetworkError(
                    f"VLAN {vlan.name}: this kernel has no 802.1Q VLAN support (module 8021q)"
                ) from error
            raise HostNetworkError(f"VLAN {vlan.name}: {error}") from error
        with _reason(f"VLAN {vlan.name}"):
            self.ipr.link("set", index=found[0], state="up")
            self._up(vlan.name, label=alias(vlan.network), master=vlan.bridge)

    def add_vxlan(self, vxlan: VxlanDevice) -> None:
        with _reason(f"VXLAN {vxlan.name}"):
            self.ipr.link(
                "add",
                ifname=vxlan.name,
                kind="vxlan",
                vxlan_id=vxlan.vni,
                vxlan_local=str(vxlan.local),
                vxlan_port=vxlan.port,
                vxlan_learning=1,
            )
            self.set_flood(vxlan.name, add=vxlan.flood, remove=frozenset())
            self._up(vxlan.name, label=alias(vxlan.network), master=vxlan.bridge)

    def set_flood(
        self, name: str, *, add: frozenset[IPv4Address], remove: frozenset[IPv4Address]
    ) -> None:
        """Head-end replication entries of VXLAN device `name`: one per peer endpoint."""
        index = self.index(name)
        with _reason(f"VXLAN {name} flood entries"):
            for peer in sorted(remove):
                self.ipr.fdb("del", ifindex=index, lladdr=FLOOD, dst=str(peer))
            for peer in sorted(add):
                self.ipr.fdb("append", ifindex=index, lladdr=FLOOD, dst=str(peer))

    def delete(self, name: str) -> None:
        found = self.ipr.link_lookup(ifname=name)
        if found:
            with _reason(f"deleting {name}"):
                self.ipr.link("del", index=found[0])

    def add_dhcp_namespace(self, space: DhcpNamespace) -> None:
        """The namespace, its veth (one end in the bridge, DHCP_INTERFACE inside with the
        DHCP-port address) and lo, all up."""
        with _reason(f"DHCP namespace {space.name}"):
            if space.name not in netns.listnetns():
                netns.create(space.name)
            self.ipr.link(
                "add",
                ifname=space.veth,
                kind="veth",
                peer={"ifname": DHCP_INTERFACE, "net_ns_fd": space.name},
            )
            label = alias(space.network, namespace=space.name)
            self._up(space.veth, label=label, master=space.bridge)
            with IPRoute(netns=space.name) as inside:
                index = inside.link_lookup(ifname=DHCP_INTERFACE)[0]
                inside.link("set", IFLA_AF_SPEC=_NO_LINK_LOCAL, index=index)
                inside.addr(
                    "add",
                    index=index,
                    address=str(space.address.ip),
                    prefixlen=space.address.network.prefixlen,
                )
                inside.link("set", index=index, state="up")
                inside.link("set", index=inside.link_lookup(ifname="lo")[0], state="up")

    def remove_dhcp_namespace(self, name: str, veth: str | None) -> None:
        if veth:
            self.delete(veth)
        if name in netns.listnetns():
            with _reason(f"DHCP namespace {name}"):
                netns.remove(name)

    def _up(self, name: str, *, label: str, master: str | None) -> None:
        """Label (the alias: set apart, as the kernel ignores it on creation), no IPv6
        link-local, into `master`, then up."""
        index = self.index(name)
        self.ipr.link("set", index=index, ifalias=label, IFLA_AF_SPEC=_NO_LINK_LOCAL)
        if master is not None:
            self.ipr.link("set", index=index, master=self.index(master))
        self.ipr.link("set", index=index, state="up")


def namespaces(prefix: str) -> set[str]:
    """The DHCP namespaces on this machine (named `<prefix>...`)."""
    if not NETNS_DIR.is_dir():
        return set()
    return {name for name in os.listdir(NETNS_DIR) if name.startswith(prefix)}


def namespace_address(name: str) -> IPv4Interface | None:
    """The address of DHCP_INTERFACE in namespace `name`, if it has one."""
    with IPRoute(netns=name) as inside:
        found = inside.link_lookup(ifname=DHCP_INTERFACE)
        if not found:
            return None
        for addr in inside.get_addr(index=found[0], family=2):
            return IPv4Interface(f"{addr.get('IFA_ADDRESS')}/{addr['prefixlen']}")
    return None


@contextmanager
def _reason(what: str) -> Iterator[None]:
    """Netlink errors as HostNetworkError naming what was being done."""
    try:
        yield
    except NetlinkError as error:
        raise HostNetworkError(f"{what}: {error.args[-1] if error.args else error}") from error
