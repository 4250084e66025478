"""The Network custom resource: an IPv4 network VMs of one namespace attach to.

A Network is a provider network (a physical network of the hosts' admins, optionally a
VLAN on it: Neutron's provider networks, Proxmox's vmbr) or an overlay (VXLAN between
the hosts' tunnel endpoints, any team's in its own namespace). Its subnet says which
addresses the controller hands out: it allocates each VM interface and each host's DHCP
server one address from the allocation pools and records them in the VM's
status.interfaces and the Network's status.dhcpPorts (the statuses are the memory the
allocator is rebuilt from). Only principals allowed to create the virtual subresource
`networks/provider` may create, change or delete provider Networks
(deploy/manifests/network-admission-policy.yaml).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final, Literal

from pydantic import ConfigDict, Field, model_validator

from kubevisor.api import addresses
from kubevisor.api.addresses import IPv4Address, IPv4Cidr, cel_ipv4_number, cel_is_cidr
from kubevisor.api.conditions import Condition, conditions_field
from kubevisor.api.schema import (
    LIST_SET,
    ApiModel,
    DnsLabel,
    ObjectName,
    list_map,
    rule,
    validations,
)
from kubevisor.api.wire import API_VERSION

KIND: Final = "Network"
# The virtual subresource whose `create` permission the admission policy asks for.
PROVIDER_SUBRESOURCE: Final = "provider"

NetworkType = Literal["provider", "overlay"]

MIN_VLAN, MAX_VLAN = 1, 4094
# VXLAN's 24-bit network identifier; 0 is not used.
MIN_VNI, MAX_VNI = 1, 2**24 - 1
MAX_POOLS = 16
MAX_RESERVED = 256
# Neutron's max_dns_nameservers is 5; resolv.conf reads at most 3.
MAX_DNS_SERVERS = 5
# Addresses of the largest subnet (a /8).
MAX_ADDRESSES = 2**24
# One DHCP server per host per network.
MAX_DHCP_PORTS = 5000

IMMUTABLE = "is immutable: VMs hold addresses and devices built from it; create a new Network"


def _immutable(field: str) -> dict[str, str]:
    """A transition rule on the object holding `field`: it keeps its value (or its absence)."""
    return rule(
        f"has(self.{field}) == has(oldSelf.{field})"
        f" && (!has(self.{field}) || self.{field} == oldSelf.{field})",
        f"{field} {IMMUTABLE}",
        field_path=f".{field}",
    )


class Provider(ApiModel):
    """Where a provider network's traffic leaves the hosts (Neutron's
    provider:physical_network and provider:segmentation_id)."""

    physical_network: DnsLabel = Field(
        description=(
            "Name of the physical network, which each host's admin maps to one of the "
            "host's interfaces (HypervisorHost spec.networkMappings). Only hosts with a "
            "mapping for it take VMs on this Network."
        ),
    )
    vlan: int | None = Field(
        default=None,
        ge=MIN_VLAN,
        le=MAX_VLAN,
        description=(
            f"802.1Q VLAN id ({MIN_VLAN}..{MAX_VLAN}) on the mapped interface; unset: the "
            "network is the interface's untagged traffic (flat)."
        ),
    )


class Overlay(ApiModel):
    """An overlay network's VXLAN segment."""

    vni: int | None = Field(
        default=None,
        ge=MIN_VNI,
        le=MAX_VNI,
        description=(
            f"VXLAN network identifier ({MIN_VNI}..{MAX_VNI}), unique in the cluster. "
            "Unset: the controller allocates one (status.vni). A VNI another Network "
            "already uses is refused in this Network's Ready condition."
        ),
    )


class AllocationPool(ApiModel):
    """A range of addresses the controller hands out, both ends included."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                f"!({addresses.cel_is_ipv4('self.start')} && {addresses.cel_is_ipv4('self.end')})"
                f" || {cel_ipv4_number('self.start')} <= {cel_ipv4_number('self.end')}",
                "start must not be after end",
                field_path=".end",
            ),
        )
    )

    start: IPv4Address = Field(description="First address of the range, e.g. 10.0.0.10.")
    end: IPv4Address = Field(description="Last address of the range, e.g. 10.0.0.200.")

    @model_validator(mode="after")
    def _ordered(self) -> AllocationPool:
        if addresses.ipv4(self.start) > addresses.ipv4(self.end):
            raise ValueError(f"allocation pool {self.start}-{self.end}: start is after end")
        return self


def _inside(condition: str) -> str:
    """CEL on a Subnet: the address `condition` names lies in the CIDR, checked only when
    both are in the grammar (the format rules report the others)."""
    return f"!{cel_is_cidr('self.cidr')} || {condition}"


def _contains(expression: str) -> str:
    return f"(!{addresses.cel_is_ipv4(expression)} || cidr(self.cidr).containsIP({expression}))"


class Subnet(ApiModel):
    """The IPv4 subnet of a Network and which of its addresses VMs get."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.gateway) || " + _inside(_contains("self.gateway")),
                "gateway must be inside cidr",
                field_path=".gateway",
            ),
            rule(
                "!has(self.allocationPools) || "
                + _inside(
                    f"self.allocationPools.all(p, {_contains('p.start')} && {_contains('p.end')})"
                ),
                "every allocation pool must be inside cidr",
                field_path=".allocationPools",
            ),
            rule(
                "!has(self.reserved) || " + _inside(f"self.reserved.all(r, {_contains('r')})"),
                "every reserved address must be inside cidr",
                field_path=".reserved",
            ),
            _immutable("cidr"),
        )
    )

    cidr: IPv4Cidr = Field(
        description=(
            f"The subnet, e.g. 10.0.0.0/24: a network address and a prefix of "
            f"/{addresses.MIN_PREFIX}../{addresses.MAX_PREFIX}. Immutable."
        ),
    )
    gateway: IPv4Address | None = Field(
        default=None,
        description=(
            "Default router the DHCP server announces, inside cidr; never handed out. "
            "Unset: none (the VMs reach only each other)."
        ),
    )
    dns_servers: list[IPv4Address] = Field(
        default_factory=list,
        max_length=MAX_DNS_SERVERS,
        description=f"DNS servers the DHCP server announces (at most {MAX_DNS_SERVERS}).",
        json_schema_extra=LIST_SET,
    )
    allocation_pools: list[AllocationPool] = Field(
        default_factory=list,
        max_length=MAX_POOLS,
        description=(
            "Ranges inside cidr the controller hands addresses out of, for VMs "
            "(spec.networks[].ipAddress must lie in one) and for each host's DHCP server. "
            "Empty: all of cidr. The network and broadcast addresses, the gateway and "
            f"reserved addresses are never handed out. At most {MAX_POOLS}."
        ),
    )
    reserved: list[IPv4Address] = Field(
        default_factory=list,
        max_length=MAX_RESERVED,
        description=(
            "Addresses inside cidr never handed out, e.g. routers or appliances outside "
            f"kubevisor (at most {MAX_RESERVED})."
        ),
        json_schema_extra=LIST_SET,
    )

    @model_validator(mode="after")
    def _inside_cidr(self) -> Subnet:
        net = addresses.network(self.cidr)

        def outside(text: str) -> bool:
            return addresses.ipv4(text) not in net

        if self.gateway is not None and outside(self.gateway):
            raise ValueError(f"gateway {self.gateway} must be inside cidr {self.cidr}")
        for pool in self.allocation_pools:
            if outside(pool.start) or outside(pool.end):
                raise ValueError(
                    f"allocation pool {pool.start}-{pool.end} must be inside cidr {self.cidr}"
                )
        bad = [text for text in self.reserved if outside(text)]
        if bad:
            raise ValueError(f"reserved {', '.join(bad)} must be inside cidr {self.cidr}")
        return self

    @property
    def network(self) -> ipaddress.IPv4Network:
        return addresses.network(self.cidr)


class NetworkSpec(ApiModel):
    """Desired state of a Network."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "self.type != 'provider' || has(self.provider)",
                "provider is required with type: provider",
                field_path=".provider",
            ),
            rule(
                "self.type == 'provider' || !has(self.provider)",
                "provider is only allowed with type: provider",
                field_path=".provider",
            ),
            rule(
                "self.type == 'overlay' || !has(self.overlay)",
                "overlay is only allowed with type: overlay",
                field_path=".overlay",
            ),
            _immutable("type"),
            _immutable("provider"),
            _immutable("overlay"),
        )
    )

    type: NetworkType = Field(
        description=(
            "provider: a physical network of the hosts (optionally a VLAN on it), for "
            "cluster admins only; overlay: VXLAN between the hosts, any team's. Immutable."
        ),
    )
    provider: Provider | None = Field(
        default=None,
        description="With type provider: the physical network and VLAN. Immutable.",
    )
    overlay: Overlay | None = Field(
        default=None,
        description="With type overlay: the VXLAN segment (optional). Immutable.",
    )
    subnet: Subnet = Field(description="The IPv4 subnet and the addresses VMs get from it.")
    dhcp: bool = Field(
        default=True,
        description=(
            "Serve the VMs' addresses by DHCP (one server per host, answering only the "
            "VMs on that host with their allocated address). false: guests configure "
            "their address themselves (status.interfaces says which)."
        ),
    )

    @model_validator(mode="after")
    def _type_fields(self) -> NetworkSpec:
        if self.type == "provider" and self.provider is None:
            raise ValueError("provider is required with type: provider")
        if self.type != "provider" and self.provider is not None:
            raise ValueError("provider is only allowed with type: provider")
        if self.type != "overlay" and self.overlay is not None:
            raise ValueError("overlay is only allowed with type: overlay")
        return self

    @property
    def requested_vni(self) -> int | None:
        """The VNI the spec asks for (None: allocate one, or not an overlay)."""
        return self.overlay.vni if self.overlay is not None else None


# ---- status ------------------------------------------------------------------------


class DhcpPort(ApiModel):
    """The address one host's DHCP server has in the network (Neutron's DHCP port)."""

    host: ObjectName = Field(description="The HypervisorHost whose DHCP server it is.")
    ip_address: IPv4Address = Field(description="Its address, from the allocation pools.")


class NetworkStatus(ApiModel):
    """Observed state of a Network, written by the controller."""

    vni: int | None = Field(
        default=None,
        ge=MIN_VNI,
        le=MAX_VNI,
        description="Overlay: the VXLAN network identifier in use (spec.overlay.vni or allocated).",
    )
    used: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ADDRESSES,
        description="Addresses of the allocation pools handed out (VM interfaces, DHCP ports).",
    )
    free: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ADDRESSES,
        description="Addresses of the allocation pools still free.",
    )
    dhcp_ports: list[DhcpPort] = Field(
        default_factory=list,
        max_length=MAX_DHCP_PORTS,
        description=(
            "The address of each host's DHCP server in this network, allocated when a VM "
            "on it first lands on the host."
        ),
        json_schema_extra=list_map("host"),
    )
    conditions: list[Condition] = conditions_field(
        "Ready: the Network is valid and its VNI allocated; its message says why not "
        "(e.g. a VNI another Network holds) or, while deleting, which VMs still use it."
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the spec this status reflects.",
    )


class Network(ApiModel):
    """A whole Network object, for reading manifests and watch events."""

    api_version: Literal["kubevisor.io/v1alpha1"] = Field(
        default=API_VERSION, description="kubevisor.io/v1alpha1."
    )
    kind: Literal["Network"] = Field(default=KIND, description="Network.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Object metadata.")
    spec: NetworkSpec = Field(description="Desired state.")
    status: NetworkStatus | None = Field(default=None, description="Observed state.")
