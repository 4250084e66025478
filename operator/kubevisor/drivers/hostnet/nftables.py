"""Port security as Neutron's, in one nftables table kubevisor owns: `bridge kubevisor`.

The table's chains are fixed; the ports are data in three sets (`ports`: the guarded taps;
`port_mac`: tap . MAC; `port_ip`: tap . IPv4), so adding or dropping a VM's rules is one
element change and never rewrites a rule. A frame entering a bridge from a guarded tap must
carry the VM's MAC as source; IPv4 must come from the VM's address (or 0.0.0.0 to
255.255.255.255 from port 68 to 67: DHCP discover and request); ARP must claim the VM's
MAC and address (or 0.0.0.0: a probe); everything else (IPv6 included) is dropped. The same
chain guards frames for the host itself (the `input` hook), which has no address on tenant
bridges anyway.

The table carries a comment with a digest of its chains: a table whose digest differs (an
older kubevisor's, or edited by hand) is replaced whole, atomically, with the ports it should
have. The table is deleted with its last port.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address
from typing import Any

from kubevisor.core.network.hostplan import PortSecurity
from kubevisor.drivers.hostnet.base import HostNetworkError

TABLE = "kubevisor"
FAMILY = "bridge"

CHAINS = """\
  set ports { type ifname; }
  set port_mac { type ifname . ether_addr; }
  set port_ip { type ifname . ipv4_addr; }
  chain port_security {
    iifname . ether saddr != @port_mac drop
    ether type arp iifname . arp saddr ether != @port_mac drop
    ether type arp arp saddr ip 0.0.0.0 accept
    ether type arp iifname . arp saddr ip != @port_ip drop
    ether type arp accept
    ether type ip iifname . ip saddr @port_ip accept
    ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept
    drop
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname @ports jump port_security
  }
  chain input {
    type filter hook input priority 0; policy accept;
    iifname @ports jump port_security
  }
"""
DIGEST = hashlib.sha256(CHAINS.encode()).hexdigest()[:12]
COMMENT = f"kubevisor port security {DIGEST}"
INCONSISTENT = "(sets disagree)"


def _elements(port: PortSecurity) -> list[tuple[str, str]]:
    tap = json.dumps(port.tap)
    return [("ports", tap), ("port_mac", f"{tap} . {port.mac}"), ("port_ip", f"{tap} . {port.ip}")]


def table(ports: Iterable[PortSecurity]) -> str:
    """A transaction replacing the whole table with one guarding `ports`."""
    lines = [
        f"table {FAMILY} {TABLE}",
        f"delete table {FAMILY} {TABLE}",
        f"table {FAMILY} {TABLE} {{",
        f'  comment "{COMMENT}"',
        CHAINS.rstrip("\n"),
        "}",
    ]
    lines += [_element("add", port) for port in sorted(ports, key=lambda p: p.tap)]
    return "\n".join(line for line in lines if line) + "\n"


def _element(verb: str, port: PortSecurity) -> str:
    return "\n".join(
        f"{verb} element {FAMILY} {TABLE} {name} {{ {value} }}" for name, value in _elements(port)
    )


def delta(removed: Sequence[PortSecurity], added: Sequence[PortSecurity]) -> str:
    """A transaction dropping `removed` ports' elements and adding `added` ones'."""
    lines = [_element("delete", p) for p in removed] + [_element("add", p) for p in added]
    return "\n".join(lines) + "\n"


def parse(listing: dict[str, Any]) -> tuple[str | None, frozenset[PortSecurity]]:
    """The table's comment and the ports fully described by its sets (`nft -j list table`)."""
    comment: str | None = None
    members: dict[str, Any] = {}
    for item in listing.get("nftables", []):
        if "table" in item:
            comment = item["table"].get("comment", "")
        if "set" in item:
            members[item["set"]["name"]] = item["set"].get("elem", [])
    guarded = [e for e in members.get("ports", []) if isinstance(e, str)]
    mac_pairs = _pairs(members.get("port_mac", []))
    ip_pairs = _pairs(members.get("port_ip", []))
    macs, ips = dict(mac_pairs), dict(ip_pairs)
    ports = frozenset(
        PortSecurity(tap, macs[tap], IPv4Address(ips[tap]))
        for tap in guarded
        if tap in macs and tap in ips
    )
    if not len(ports) == len(guarded) == len(mac_pairs) == len(ip_pairs):
        # Elements of a tap left half-described: replace the table rather than patch it.
        comment = INCONSISTENT
    return comment, ports


def _pairs(elements: list[Any]) -> list[tuple[str, str]]:
    pairs = []
    for element in elements:
        concat = element.get("concat") if isinstance(element, dict) else None
        if isinstance(concat, list) and len(concat) == 2:
            pairs.append((str(concat[0]), str(concat[1])))
    return pairs


class Ruleset:
    """Reads and writes the kubevisor table with `nft`, in the host's network namespace
    (`prefix` runs nft there, e.g. through nsenter; empty for the agent's own)."""

    def __init__(self, prefix: Sequence[str] = ()) -> None:
        self.prefix = list(prefix)

    def observe(self) -> tuple[str | None, frozenset[PortSecurity]]:
        done = self._nft(["-j", "list", "table", FAMILY, TABLE], check=False)
        if done.returncode != 0:
            if "No such file or directory" in done.stderr:
                return None, frozenset()
            raise HostNetworkError(f"nft could not list table {TABLE}: {done.stderr.strip()}")
        listing: dict[str, Any] = json.loads(done.stdout)
        return parse(listing)

    def apply(
        self,
        *,
        comment: str | None,
        current: frozenset[PortSecurity],
        wanted: frozenset[PortSecurity],
    ) -> str | None:
        """Make the table, observed with `comment` and guarding `current`, guard exactly
        `wanted` (deleted when empty); returns the table's comment afterwards."""
        if not wanted:
            if comment is not None:
                self._nft(["delete", "table", FAMILY, TABLE])
            return None
        if comment != COMMENT:
            self._nft(["-f", "-"], stdin=table(wanted))
            return COMMENT
        removed = sorted(current - wanted, key=lambda p: p.tap)
        added = sorted(wanted - current, key=lambda p: p.tap)
        if removed or added:
            self._nft(["-f", "-"], stdin=delta(removed, added))
        return COMMENT

    def _nft(
        self, args: list[str], *, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.prefix, "nft", *args], input=stdin, capture_output=True, text=True, timeout=30
        )
        if check and done.returncode != 0:
            raise HostNetworkError(f"nft {' '.join(args)} failed: {done.stderr.strip()}")
        return done
