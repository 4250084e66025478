"""Filters: one placement rule each, one question each.

Every filter is `(host, request, state) -> Rejection | None`, reads the state as it
is (with every earlier claim), and never changes anything. `FILTERS` is the order
they run in: cheap and selective first, NUMA fitting last (Nova's advice).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from kubevisor.core import hypervisors
from kubevisor.core.placement import numa as numa_fitting
from kubevisor.core.placement import pci, pools, units
from kubevisor.core.placement.capacity import Inventory
from kubevisor.core.placement.model import (
    GroupPolicy,
    HostSnapshot,
    Rejection,
    Request,
    ServerGroup,
)
from kubevisor.core.placement.state import PlacementState

Filter = Callable[[HostSnapshot, Request, PlacementState], Rejection | None]


def excluded(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Is the host one the request must avoid (e.g. a migration's source)?"""
    if host.name in request.exclude_hosts:
        return Rejection("excluded", "excluded", f"host {host.name} is excluded by the request")
    return None


def ready(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Is the host's agent alive (Ready condition true)? (ComputeFilter, "up")"""
    if not host.ready:
        return Rejection("ready", "not ready", f"host {host.name} is not Ready")
    return None


def schedulable(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Is the host open for new VMs: not cordoned, not in maintenance? (ComputeFilter)"""
    if host.maintenance:
        return Rejection("schedulable", "in maintenance", f"host {host.name} is in maintenance")
    if not host.schedulable:
        return Rejection("schedulable", "unschedulable", f"host {host.name} is cordoned")
    return None


def cpu_sets(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Are the host's CPU sets usable: only CPUs it has, none in both? (`placement.cpusets`)"""
    if not host.cpu_set_errors:
        return None
    return Rejection(
        "cpu_sets",
        "invalid CPU sets (see the host's Schedulable condition)",
        f"host {host.name}: {'; '.join(host.cpu_set_errors)}",
    )


def host_selector(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Does the host carry every label of the request's host selector? (The explanation
    names the first label a host lacks, so hosts missing different labels count apart.)"""
    lacking = pools.first_lacking(host, request.host_selector)
    if lacking is None:
        return None
    label, instead = lacking
    return Rejection(
        "host_selector",
        f"didn't match host selector {label}",
        f"host {host.name} lacks label {label}{instead}",
    )


_HOST_NETWORK_KINDS = {"bridge": "bridge", "network": "libvirt network"}


def host_networks(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Does the host's admin let VMs attach to every host bridge and libvirt network the
    VM names (spec.hostNetworks)? A tenant names no host network the admin did not offer:
    a management or storage network stays out of reach (issue 16 class 5)."""
    for kind, name in request.host_networks:
        if name not in host.host_networks:
            what = f"{_HOST_NETWORK_KINDS.get(kind, kind)} {name}"
            return Rejection(
                "host_networks",
                f"does not offer {what} to VMs",
                f"host {host.name} does not offer {what} to VMs (spec.hostNetworks)",
            )
    return None


def physical_networks(
    host: HostSnapshot, request: Request, state: PlacementState
) -> Rejection | None:
    """Is the host attached to the physical network of every provider Network the VM is on
    (spec.networkMappings, Neutron's bridge_mappings)?"""
    missing = sorted(request.physical_networks - host.network_mappings)
    if not missing:
        return None
    return Rejection(
        "physical_networks",
        f"does not map physical network {missing[0]}",
        f"host {host.name} does not map physical network {', '.join(missing)} "
        "(spec.networkMappings)",
    )


def tunnel_endpoint(
    host: HostSnapshot, request: Request, state: PlacementState
) -> Rejection | None:
    """Can the host carry overlay Networks: does its agent report a tunnel endpoint?"""
    if not request.overlay or host.tunnel_endpoint:
        return None
    return Rejection(
        "tunnel_endpoint",
        "has no tunnel endpoint for overlay networks",
        f"host {host.name} reports no status.network.tunnelEndpoint (agent flag --tunnel-ip)",
    )


def hypervisor_type(
    host: HostSnapshot, request: Request, state: PlacementState
) -> Rejection | None:
    """Does the host run one of the hypervisor types the VM requires (spec.hypervisor;
    a migration requires its source's type)? Nova's ImagePropertiesFilter hypervisor_type."""
    wanted = request.hypervisor_types
    if not wanted or host.hypervisor_type in wanted:
        return None
    names = " or ".join(sorted(wanted))
    return Rejection(
        "hypervisor_type",
        f"hypervisor type is not {names}",
        f"host {host.name} runs {host.hypervisor_type or 'an unknown hypervisor'}, "
        f"the VM needs {names}",
    )


def hypervisor_capabilities(
    host: HostSnapshot, request: Request, state: PlacementState
) -> Rejection | None:
    """Can the host's type of hypervisor do everything the VM's spec asks for? (the
    capability table of `core.hypervisors`: LXC has no UEFI, no guest NUMA, ...)"""
    if not request.features:
        return None
    lacking = hypervisors.missing(host.hypervisor_type, request.features)
    if not lacking:
        return None
    summary = f"{host.hypervisor_type} has no {hypervisors.describe(lacking)}"
    return Rejection("hypervisor_capabilities", summary, f"host {host.name}: {summary}")


def cpu_compatibility(
    host: HostSnapshot, request: Request, state: PlacementState
) -> Rejection | None:
    """Can the host run this guest CPU: CPU model and features?"""
    if request.required_cpu_model and host.cpu_model != request.required_cpu_model:
        return Rejection(
            "cpu_compatibility",
            f"CPU model is not {request.required_cpu_model}",
            f"host {host.name} has CPU model {host.cpu_model or 'unknown'}",
        )
    missing = request.cpu_features - host.cpu_features
    if missing:
        return Rejection(
            "cpu_compatibility",
            "missing CPU features",
            f"host {host.name} lacks CPU features {', '.join(sorted(missing))}",
        )
    return None


#: How many of a host's usable CPU models a rejection names before "and N more".
MODELS_SHOWN = 8


def cpu_model(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Can the host run the named guest CPU model the VM asks for (libvirt marks it
    usable in its domain capabilities)?

    Hosts that report no list (an agent from before the list, or a hypervisor without
    domain capabilities) are not turned down here: libvirt then refuses the model when
    the domain starts, which the VM's status shows.
    """
    model = request.named_cpu_model
    usable = host.usable_cpu_models
    if model is None or usable is None or model in usable:
        return None
    names = sorted(usable)
    shown = ", ".join(names[:MODELS_SHOWN])
    if len(names) > MODELS_SHOWN:
        shown += f" and {len(names) - MODELS_SHOWN} more"
    return Rejection(
        "cpu_model",
        f"cannot run CPU model {model}",
        f"host {host.name} cannot run CPU model {model} (usable: {shown or 'none'})",
    )


def cpu_passthrough(
    host: HostSnapshot, request: Request, state: PlacementState
) -> Rejection | None:
    """Does a running host-passthrough guest find the very CPU it runs on now?

    The guest sees the source host's CPU as is, so it may only move (live-migrate) to a
    host with the same vendor, model and features. The source is the host of the VM's
    own claim; a VM without one (being placed, or restarted cold) is free to go anywhere.
    """
    if request.cpu_mode != "host-passthrough":
        return None
    current = state.claims().get(request.name)
    if current is None or current.host == host.name or current.host not in state:
        return None
    source = state.host(current.host)
    if (source.cpu_vendor, source.cpu_model) != (host.cpu_vendor, host.cpu_model):
        return Rejection(
            "cpu_passthrough",
            "CPU differs from the host-passthrough source",
            f"host {host.name} has CPU {host.cpu_vendor} {host.cpu_model or 'unknown'}, "
            f"the VM runs on {source.cpu_vendor} {source.cpu_model or 'unknown'} "
            f"(host {source.name}) with cpu.model host-passthrough",
        )
    if source.cpu_features != host.cpu_features:
        lacks = sorted(source.cpu_features - host.cpu_features)
        extra = sorted(host.cpu_features - source.cpu_features)
        detail = "; ".join(
            part
            for part in (
                f"lacks {', '.join(lacks)}" if lacks else "",
                f"adds {', '.join(extra)}" if extra else "",
            )
            if part
        )
        return Rejection(
            "cpu_passthrough",
            "CPU differs from the host-passthrough source",
            f"host {host.name}'s CPU features differ from host {source.name}'s ({detail}); "
            "the VM has cpu.model host-passthrough",
        )
    return None


def capabilities(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Does this host offer every feature the VM cannot run without (UEFI, Secure Boot,
    a seccomp sandbox, a confining security driver)? What the host has installed and
    configured, as its agent reports it; what its type can do at all is
    `hypervisor_capabilities`' question, asked first."""
    missing = request.capabilities - host.capabilities
    if not missing:
        return None
    names = ", ".join(sorted(missing))
    return Rejection(
        "capabilities",
        f"lacks {names}",
        f"host {host.name} does not report {names} in status.capabilities",
    )


def _rule(group: ServerGroup) -> str:
    if group.policy == GroupPolicy.ANTI_AFFINITY:
        return f"anti-affinity with maxPerHost {group.max_per_host}"
    return str(group.policy)


def _same_rule(one: ServerGroup, other: ServerGroup) -> bool:
    """Do two members' group settings make one rule? (maxPerHost counts under
    anti-affinity only: the API allows it with no other policy.)"""
    if one.policy != other.policy:
        return False
    return one.policy != GroupPolicy.ANTI_AFFINITY or one.max_per_host == other.max_per_host


def group_policy(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Does the VM agree with the rule its server group already holds?

    A group has one policy (and maxPerHost): the one its placed members hold, named by
    its oldest member (`PlacementState.group_rule`). A VM that declares another is not
    placed anywhere, or one member could break the rule for all (a soft-anti-affinity
    member landing as a third beside two under maxPerHost 2). The same on every host, so
    the explanation counts every host under it and names the member.
    """
    group = request.group
    if group is None:
        return None
    held = state.group_rule(group.name, besides=request.name)
    if held is None or _same_rule(held[1], group):
        return None
    member, rule = held
    summary = (
        f'group "{group.name}" is {_rule(rule)} (as member {member} holds it), '
        f"the VM asks {_rule(group)}"
    )
    return Rejection("group_policy", summary, f"host {host.name}: {summary}")


def affinity(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Hard affinity: once the group has members, only their hosts qualify."""
    group = request.group
    if group is None or group.policy != GroupPolicy.AFFINITY:
        return None
    members = state.group_hosts(group.name)
    if members and host.name not in members:
        return Rejection(
            "affinity",
            f'affinity group "{group.name}" is elsewhere',
            f"group {group.name} runs on {', '.join(sorted(members))}, not {host.name}",
        )
    return None


def anti_affinity(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Hard anti-affinity: fewer than maxPerHost group members on the host. (Hosts count
    apart by how many members they run.)"""
    group = request.group
    if group is None or group.policy != GroupPolicy.ANTI_AFFINITY:
        return None
    members = state.group_members(group.name, host.name)
    if members < group.max_per_host:
        return None
    summary = (
        f'already run {members} of anti-affinity group "{group.name}" '
        f"(maxPerHost {group.max_per_host})"
    )
    return Rejection(
        "anti_affinity",
        summary,
        f"host {host.name} already runs {members} of anti-affinity group {group.name} "
        f"(maxPerHost {group.max_per_host})",
    )


def physical_cpus(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """No VM gets more vCPUs than the host has CPUs, whatever the ratio or CPU sets say."""
    if request.vcpus <= host.vcpus:
        return None
    return Rejection(
        "physical_cpus",
        "more vCPUs than the host has CPUs",
        f"host {host.name} has {host.vcpus} CPUs, the VM asks {request.vcpus} vCPUs",
        need=request.vcpus,
        free=host.vcpus,
        has="in all",
    )


def _capacity(
    *,
    name: str,
    host: HostSnapshot,
    inv: Inventory,
    used: int,
    need: int,
    resource: str,
    unit: str = "",
    whole: str,
    larger: str,
) -> Rejection | None:
    """One capacity check (vcpus, memory, disk) with the figures that explain it.

    Three cases read differently: the VM is larger than the most one VM may take there
    (Placement's max_unit; `whole` names it, `larger` is the summary), the host reserves
    all of it (spec.reserved at or above what it has), or what is left at the ratio is
    too little.
    """
    if inv.fits(used=used, amount=need):
        return None

    def show(value: int) -> str:
        return units.amount(value, unit)

    if need > inv.max_unit:
        return Rejection(
            name,
            larger,
            f"host {host.name} has {show(inv.max_unit)} {whole} in all, the VM asks {show(need)}",
            need=need,
            free=inv.max_unit,
            unit=unit,
            has="in all",
        )
    if inv.reserved >= inv.total > 0:
        return Rejection(
            name,
            f"reserves all its {resource}",
            f"host {host.name} reserves {show(inv.reserved)} of its {show(inv.total)} "
            f"{resource} (spec.reserved)",
            need=need,
            free=0,
            unit=unit,
        )
    free = max(inv.free(used), 0)
    return Rejection(
        name,
        f"insufficient {resource}",
        f"host {host.name} has {show(free)} {resource} free of {show(inv.capacity)} "
        f"(ratio {inv.ratio:g}), needs {show(need)}",
        need=need,
        free=free,
        unit=unit,
    )


def vcpus(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Shared vCPUs: capacity at the host's ratio, and no more than the shared set has."""
    if request.dedicated:
        return None
    return _capacity(
        name="vcpus",
        host=host,
        inv=state.inventory(host.name).vcpu,
        used=state.usage(host.name).vcpus,
        need=request.vcpus,
        resource="vCPUs",
        whole="shared CPUs",
        larger="more vCPUs than the host's shared CPUs",
    )


def pcpus(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Dedicated CPUs: never overcommitted, only from the dedicated set."""
    if not request.dedicated:
        return None
    inv = state.inventory(host.name).pcpu
    used = state.usage(host.name).pcpus
    if inv.fits(used=used, amount=request.pcpus):
        return None
    free = max(inv.free(used), 0)
    return Rejection(
        "pcpus",
        "insufficient dedicated CPUs",
        f"host {host.name} has {free} free dedicated CPUs, needs {request.pcpus}",
        need=request.pcpus,
        free=free,
    )


def _host_sized(
    resource: Literal["memory", "disk"],
    *,
    host: HostSnapshot,
    request: Request,
    state: PlacementState,
) -> Rejection | None:
    """The one rule of `memory` and `disk` (in MiB, named as their filter)."""
    inventory, usage = state.inventory(host.name), state.usage(host.name)
    inv, used, need = (
        (inventory.memory, usage.memory_mib, request.memory_mib)
        if resource == "memory"
        else (inventory.disk, usage.disk_mib, request.disk_mib)
    )
    return _capacity(
        name=resource,
        host=host,
        inv=inv,
        used=used,
        need=need,
        resource=resource,
        unit=units.MIB,
        whole=resource,
        larger=f"more {resource} than the host has",
    )


def memory(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Memory at the host's ratio, and no more than the host has."""
    return _host_sized("memory", host=host, request=request, state=state)


def disk(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Local disk at the host's ratio, and no more than the host has."""
    return _host_sized("disk", host=host, request=request, state=state)


def disk_space(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Can the real space of the overlays' filesystem hold the VM's thin disks at the
    host's disk ratio, once every overlay has grown to its virtual size?

    The space is what the host reports (status.storage): the filesystem's size minus what
    other files (base images, anything not an overlay) really take, minus the reserved
    disk. The provisioned virtual size is the larger of the host's report and the claims
    placement holds there (the report lags behind new claims). Hosts that report no
    storage are judged by the `disk` filter alone.
    """
    storage = host.storage
    if storage is None or request.disk_mib <= 0:
        return None
    ratio = state.inventory(host.name).ratios.disk
    others = max(storage.total_mib - storage.available_mib - storage.overlays_mib, 0)
    room = storage.total_mib - others - host.reserved_disk_mib
    provisioned = max(storage.provisioned_mib, state.usage(host.name).disk_mib)
    free = max(int(room * ratio) - provisioned, 0)
    if request.disk_mib <= free:
        return None
    return Rejection(
        "disk_space",
        "insufficient real disk space",
        f"host {host.name} has {units.mib(max(room, 0))} of real space for overlays "
        f"({units.mib(provisioned)} provisioned, ratio {ratio:g}): {units.mib(free)} free, "
        f"needs {units.mib(request.disk_mib)}",
        need=request.disk_mib,
        free=free,
        unit=units.MIB,
    )


def pci_devices(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Does the host have enough free passthrough devices of every alias asked for?"""
    if not request.pci:
        return None
    found = pci.assign(host=host, in_use=state.usage(host.name).pci, request=request)
    return found if isinstance(found, Rejection) else None


def hugepages(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Does the host have enough free pages of the requested size, counting all cells?
    (Figures in memory, as the VM's memory.size is written: pages x page size.)"""
    page = request.hugepage_kib
    if page is None:
        return None
    pages = -(-request.memory_mib * 1024 // page)
    usage = state.usage(host.name)
    free = sum(
        cell.hugepages_free(page, used.hugepages_used(page))
        for cell, used in zip(host.numa_cells, usage.cells, strict=True)
    )
    if free >= pages:
        return None
    size = units.page_size(page)
    need_mib, free_mib = pages * page // 1024, free * page // 1024
    return Rejection(
        "hugepages",
        f"insufficient {size} huge pages",
        f"host {host.name} has {free} free {size} pages ({units.mib(free_mib)}), "
        f"needs {pages} ({units.mib(need_mib)})",
        need=need_mib,
        free=free_mib,
        unit=units.MIB,
    )


def numa(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Can the guest's NUMA cells (and pins) be fitted onto the host's cells?"""
    if not request.numa_aware:
        return None
    fitted = numa_fitting.fit(
        host=host,
        usages=state.usage(host.name).cells,
        request=request,
        ratios=state.inventory(host.name).ratios,
    )
    return fitted if isinstance(fitted, Rejection) else None


#: Run order for the capacity-independent filters, then the capacity ones.
FILTERS: tuple[Filter, ...] = (
    group_policy,
    excluded,
    ready,
    schedulable,
    cpu_sets,
    pools.reserved,
    pools.namespace_pool,
    host_selector,
    host_networks,
    physical_networks,
    tunnel_endpoint,
    hypervisor_type,
    hypervisor_capabilities,
    capabilities,
    cpu_compatibility,
    cpu_model,
    cpu_passthrough,
    affinity,
    anti_affinity,
    physical_cpus,
    vcpus,
    pcpus,
    memory,
    disk,
    disk_space,
    hugepages,
    pci_devices,
    numa,
)


def first_rejection(
    host: HostSnapshot, request: Request, state: PlacementState
) -> Rejection | None:
    """The first filter that turns the host down, or None when it passes them all."""
    for check in FILTERS:
        rejection = check(host, request, state)
        if rejection is not None:
            return rejection
    return None
