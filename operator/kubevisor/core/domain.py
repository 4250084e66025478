"""VirtualMachine spec + placement decision -> libvirt domain XML.

Called by the agent (and by migrations, to re-render a domain for the target's CPUs).
The XML is built with ElementTree by small configurators, each adding one concern to the
document, so that no name, label or user-data can change the XML's structure: every
user-supplied string lands in an attribute or a text node and is escaped by the library.

The domain carries a `<metadata>` element in kubevisor's namespace with the VM's
namespace, name, uid and generation; `read_metadata` parses it back, which is how an
agent recognises its own domains after a restart and fences strays.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kubevisor.api import quantity
from kubevisor.api.virtualmachine import (
    MAX_NET_QUEUES,
    PlacementStatus,
    VirtualMachine,
    VirtualMachineSpec,
)

NAMESPACE = "https://kubevisor.io/xmlns/domain/v1alpha1"
PREFIX = "kubevisor"
ET.register_namespace(PREFIX, NAMESPACE)

DomainType = Literal["kvm", "qemu", "lxc", "test"]
"""libvirt's <domain type>: kvm and qemu (TCG) run a VM; lxc runs spec.container as a
system container on the host's kernel (CONTAINER_CONFIGURATORS)."""


@dataclass(frozen=True, slots=True)
class BootFiles:
    """A kernel and initrd on the host for direct kernel boot."""

    kernel: str
    initrd: str | None = None
    cmdline: str | None = None


@dataclass(frozen=True, slots=True)
class Ovmf:
    """UEFI firmware files on the host; the defaults are where Debian's `ovmf` puts them.

    The 4M builds: the 2M ones cannot hold Secure Boot's enrolled keys.
    """

    code: str = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    vars_template: str = "/usr/share/OVMF/OVMF_VARS_4M.fd"
    secure_code: str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
    """Secure Boot build: needs SMM (q35) so the guest OS cannot write the variables."""
    secure_vars_template: str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
    """Variables with Microsoft's keys enrolled (which sign shim and so Debian's kernels)."""


@dataclass(frozen=True, slots=True)
class HostEnvironment:
    """What the agent knows about its host and what it prepared on disk for one VM.

    The optional host facts default to "unknown", which renders the domain as if the host
    had the feature; the agent passes what it detected so the XML matches the host.
    """

    domain_type: DomainType
    disk_paths: Mapping[str, str] = field(default_factory=dict)
    """Disk name -> path of the qcow2 overlay the agent created for it."""
    seed_iso: str | None = None
    """NoCloud seed ISO built from spec.cloudInit, if any."""
    serial_log: str | None = None
    """File that receives everything the guest writes to its serial console."""
    default_boot: BootFiles | None = None
    """Direct-boot files used when the spec names neither boot files nor disks."""
    ovmf: Ovmf = field(default_factory=Ovmf)
    """UEFI firmware files, for spec.firmware.type uefi."""
    nvram: str | None = None
    """The VM's own UEFI variable store; None: libvirt's default file for the domain."""
    vhost_net: bool | None = None
    """True: virtio NICs on tap devices demand the vhost-net backend (libvirt fails when
    it is missing); False: QEMU's userspace backend; None: libvirt chooses (vhost when
    /dev/vhost-net exists)."""
    cgroup_controllers: frozenset[str] | None = None
    """cgroup controllers libvirt uses for VMs here; None: unknown (assume all)."""
    security_model: str | None = None
    """libvirt's security driver here (apparmor, selinux, none); None: unknown."""


@dataclass(frozen=True, slots=True)
class VmRef:
    """Which VirtualMachine object a domain belongs to (from the domain's metadata)."""

    namespace: str
    name: str
    uid: str
    generation: int
    hardware: str = ""
    """Fingerprint of the spec parts baked into the domain (see hardware_fingerprint)."""


HARDWARE_FIELDS = (
    "cpu",
    "memory",
    "numa",
    "disks",
    "boot",
    "cloud_init",
    "container",
    "networks",
    "firmware",
    "security",
    "devices",
)


def hardware_fingerprint(spec: VirtualMachineSpec) -> str:
    """A short hash of the spec parts that only take effect when the domain is redefined.

    The agent compares it with the fingerprint in a running domain's metadata to tell
    the user (condition RestartRequired) that a change waits for a restart.
    """
    # Defaults left out: a new API field with a default must not make every running VM
    # look changed (RestartRequired) after an upgrade.
    parts = spec.model_dump(
        mode="json", by_alias=True, include=set(HARDWARE_FIELDS), exclude_defaults=True
    )
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def domain_name(namespace: str, name: str) -> str:
    """The libvirt domain name of a VM; unique per host because '_' is not valid in either."""
    return f"{namespace}_{name}"


def render(vm: VirtualMachine, *, host: HostEnvironment) -> str:
    """The complete domain XML for `vm` on a host described by `host`."""
    ref = vm_ref(vm)
    placement = vm.status.placement if vm.status and vm.status.placement else PlacementStatus()
    domain = ET.Element("domain", type=host.domain_type)
    doc = _Doc(domain=domain, spec=vm.spec, placement=placement, host=host, ref=ref)
    configurators = CONTAINER_CONFIGURATORS if host.domain_type == "lxc" else CONFIGURATORS
    for configure in configurators:
        configure(doc)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")


def vm_ref(vm: VirtualMachine) -> VmRef:
    meta = vm.metadata
    return VmRef(
        namespace=str(meta.get("namespace", "default")),
        name=str(meta["name"]),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation", 0)),
        hardware=hardware_fingerprint(vm.spec),
    )


def read_metadata(xml: str) -> VmRef | None:
    """The VM a domain's XML says it belongs to, or None for domains kubevisor did not make."""
    root = ET.fromstring(xml)
    element = root.find(f"metadata/{{{NAMESPACE}}}vm")
    if element is None:
        return None
    try:
        return VmRef(
            namespace=element.attrib["namespace"],
            name=element.attrib["name"],
            uid=element.attrib["uid"],
            generation=int(element.attrib.get("generation", "0")),
            hardware=element.attrib.get("hardware", ""),
        )
    except (KeyError, ValueError):
        return None


# -- configurators -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Doc:
    domain: ET.Element
    spec: VirtualMachineSpec
    placement: PlacementStatus
    host: HostEnvironment
    ref: VmRef

    def devices(self) -> ET.Element:
        found = self.domain.find("devices")
        return found if found is not None else ET.SubElement(self.domain, "devices")


def _no_container(doc: _Doc) -> None:
    if doc.spec.container is not None:
        raise DomainError(
            f"container: a system container needs a host of hypervisor type lxc; this one "
            f"runs virtual machines ({doc.host.domain_type})"
        )


def _identity(doc: _Doc) -> None:
    ET.SubElement(doc.domain, "name").text = domain_name(doc.ref.namespace, doc.ref.name)
    if doc.ref.uid:
        ET.SubElement(doc.domain, "uuid").text = doc.ref.uid
    metadata = ET.SubElement(doc.domain, "metadata")
    ET.SubElement(
        metadata,
        f"{{{NAMESPACE}}}vm",
        namespace=doc.ref.namespace,
        name=doc.ref.name,
        uid=doc.ref.uid,
        generation=str(doc.ref.generation),
        hardware=doc.ref.hardware,
    )


def _memory(doc: _Doc) -> None:
    kib = str(quantity.to_kib(doc.spec.memory.size))
    ET.SubElement(doc.domain, "memory", unit="KiB").text = kib
    ET.SubElement(doc.domain, "currentMemory", unit="KiB").text = kib
    if doc.spec.memory.hugepages is None:
        return
    backing = ET.SubElement(doc.domain, "memoryBacking")
    pages = ET.SubElement(backing, "hugepages")
    page_kib = str(quantity.to_kib(doc.spec.memory.hugepages.page_size))
    guest_cells = [str(cell.guest_cell) for cell in doc.placement.cells]
    attrs = {"size": page_kib, "unit": "KiB"}
    if guest_cells and doc.spec.numa is not None:
        attrs["nodeset"] = ",".join(guest_cells)
    ET.SubElement(pages, "page", attrs)


def _vcpus(doc: _Doc) -> None:
    vcpu = ET.SubElement(doc.domain, "vcpu", placement="static")
    vcpu.text = str(doc.spec.cpu.vcpus)
    if doc.placement.shared_cpus:
        vcpu.set("cpuset", cpuset(doc.placement.shared_cpus))


def _cpu(doc: _Doc) -> None:
    cpu_spec = doc.spec.cpu
    cpu = ET.SubElement(doc.domain, "cpu")
    model = cpu_spec.model
    if model in ("host-passthrough", "host-model"):
        cpu.set("mode", model)
    elif model is not None:
        cpu.set("mode", "custom")
        cpu.set("match", "exact")
        ET.SubElement(cpu, "model", fallback="forbid").text = model
    if cpu_spec.sockets or cpu_spec.cores or cpu_spec.threads:
        ET.SubElement(
            cpu,
            "topology",
            sockets=str(cpu_spec.sockets or 1),
            dies="1",
            cores=str(cpu_spec.cores or 1),
            threads=str(cpu_spec.threads or 1),
        )
    for feature in cpu_spec.features:
        ET.SubElement(cpu, "feature", policy="require", name=feature)
    for feature in cpu_spec.disabled_features:
        ET.SubElement(cpu, "feature", policy="disable", name=feature)
    if doc.spec.numa is not None:
        numa = ET.SubElement(cpu, "numa")
        for index, cell in enumerate(doc.spec.numa.cells):
            ET.SubElement(
                numa,
                "cell",
                id=str(index),
                cpus=cpuset(cell.cpus),
                memory=str(quantity.to_kib(cell.memory)),
                unit="KiB",
            )
    if len(cpu) == 0 and not cpu.attrib:
        doc.domain.remove(cpu)


def _cputune(doc: _Doc) -> None:
    pins = sorted((pin.vcpu, pin.pcpu) for cell in doc.placement.cells for pin in cell.vcpu_pins)
    emulator = doc.placement.emulator_pins
    limits = doc.spec.cpu.tune if _cpu_controller(doc.host) else None
    if not pins and not emulator and limits is None:
        return
    tune = ET.SubElement(doc.domain, "cputune")
    if limits is not None:
        # libvirt refuses to start a domain with these when cgroup cpu is unavailable
        # ("cgroup cpu is required for scheduler tuning"), hence _cpu_controller.
        if limits.shares is not None:
            ET.SubElement(tune, "shares").text = str(limits.shares)
        if limits.period_microseconds is not None:
            ET.SubElement(tune, "period").text = str(limits.period_microseconds)
        if limits.quota_microseconds is not None:
            ET.SubElement(tune, "quota").text = str(limits.quota_microseconds)
    for vcpu, pcpu in pins:
        ET.SubElement(tune, "vcpupin", vcpu=str(vcpu), cpuset=str(pcpu))
    if emulator:
        ET.SubElement(tune, "emulatorpin", cpuset=cpuset(emulator))
    elif pins:
        # Without an isolated emulator thread, QEMU's own threads share the pinned CPUs.
        ET.SubElement(tune, "emulatorpin", cpuset=cpuset(pcpu for _, pcpu in pins))


def _cpu_controller(host: HostEnvironment) -> bool:
    return host.cgroup_controllers is None or "cpu" in host.cgroup_controllers


def unenforced_limits(spec: VirtualMachineSpec, host: HostEnvironment) -> list[str]:
    """Limits of `spec` the host cannot enforce, so `render` leaves them out.

    The agent shows them in the VM's status (the issue's "reported where it does not"):
    the VM still runs, unlimited, rather than failing to start.
    """
    unenforced = []
    if spec.cpu.tune is not None and not _cpu_controller(host):
        unenforced.append(
            "cpu.tune: the host has no cgroup cpu controller; shares and quota not enforced"
        )
    if _numa_placed(spec) and _numatune_mode(host) == "restrictive":
        unenforced.append(
            "numa: the host has no cgroup cpuset controller; guest memory is not bound "
            "to the placed host NUMA cells (numatune mode restrictive)"
        )
    return unenforced


def _numa_placed(spec: VirtualMachineSpec) -> bool:
    """Whether placement gives this VM host cells, hence a <numatune> (the same rule as
    placement's Request.numa_aware: guest cells, dedicated CPUs or huge pages)."""
    return (
        spec.numa is not None or spec.cpu.policy == "dedicated" or spec.memory.hugepages is not None
    )


def _numatune_mode(host: HostEnvironment) -> Literal["strict", "restrictive"]:
    """How the guest's memory is bound to the host cells placement chose.

    strict: libvirt confines the QEMU process with cgroup cpuset.mems and has QEMU mbind()
    each guest cell's memory to its host cell. restrictive (libvirt >= 7.3): cpuset.mems
    only, no mbind. Without the cpuset controller (the testbed's hosts run with
    `cgroup_controllers = [ ]`), restrictive binds nothing at all, which unenforced_limits
    reports. We take it there anyway because strict without cgroups rests on mbind alone,
    and mbind fails the start ("cannot bind memory to host NUMA nodes: Invalid argument")
    whenever libvirt's cells are not the kernel's, as on the testbed's synthetic
    multi-cell hosts (kubevisor.testbed.numa). The price: a real multi-node host without
    the cpuset controller would have been bound by mbind and now is not.
    """
    if host.cgroup_controllers is None or "cpuset" in host.cgroup_controllers:
        return "strict"
    return "restrictive"


def _numatune(doc: _Doc) -> None:
    cells = sorted(doc.placement.cells, key=lambda c: c.guest_cell)
    if not cells:
        return
    mode = _numatune_mode(doc.host)
    tune = ET.SubElement(doc.domain, "numatune")
    host_cells = sorted({c.host_cell for c in cells})
    ET.SubElement(tune, "memory", mode=mode, nodeset=cpuset(host_cells))
    if doc.spec.numa is not None:
        # libvirt wants memnodes in the same mode as <memory> when that is restrictive.
        for cell in cells:
            ET.SubElement(
                tune,
                "memnode",
                cellid=str(cell.guest_cell),
                mode=mode,
                nodeset=str(cell.host_cell),
            )


def _os(doc: _Doc) -> None:
    firmware = doc.spec.firmware
    secure = firmware is not None and firmware.secure_boot
    os_el = ET.SubElement(doc.domain, "os")
    # Secure Boot needs SMM so that only the firmware can write its variables, and QEMU
    # offers SMM with pflash only on q35.
    machine = "q35" if secure else "pc"
    ET.SubElement(os_el, "type", arch="x86_64", machine=machine).text = "hvm"
    if firmware is not None and firmware.type == "uefi":
        ovmf = doc.host.ovmf
        loader = ET.SubElement(os_el, "loader", readonly="yes", type="pflash")
        if secure:
            loader.set("secure", "yes")
        loader.text = ovmf.secure_code if secure else ovmf.code
        nvram = ET.SubElement(
            os_el, "nvram", template=ovmf.secure_vars_template if secure else ovmf.vars_template
        )
        if doc.host.nvram is not None:
            nvram.text = doc.host.nvram
    boot = doc.spec.boot
    files: BootFiles | None = None
    if boot is not None and boot.kernel:
        files = BootFiles(kernel=boot.kernel, initrd=boot.initrd, cmdline=boot.cmdline)
    elif not doc.spec.disks and doc.host.default_boot is not None:
        files = doc.host.default_boot
    if files is None:
        ET.SubElement(os_el, "boot", dev="hd")
        return
    ET.SubElement(os_el, "kernel").text = files.kernel
    if files.initrd:
        ET.SubElement(os_el, "initrd").text = files.initrd
    if files.cmdline:
        ET.SubElement(os_el, "cmdline").text = files.cmdline


def _features(doc: _Doc) -> None:
    features = ET.SubElement(doc.domain, "features")
    # ACPI is what lets a graceful shutdown reach the guest.
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    if doc.spec.firmware is not None and doc.spec.firmware.secure_boot:
        ET.SubElement(features, "smm", state="on")


def _lifecycle(doc: _Doc) -> None:
    ET.SubElement(doc.domain, "clock", offset="utc")
    ET.SubElement(doc.domain, "on_poweroff").text = "destroy"
    ET.SubElement(doc.domain, "on_reboot").text = "restart"
    ET.SubElement(doc.domain, "on_crash").text = "destroy"


_BUS_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd"}


def _disks(doc: _Doc) -> None:
    used: dict[str, int] = {}
    for disk in doc.spec.disks:
        path = doc.host.disk_paths.get(disk.name)
        if path is None:
            raise DomainError(f"disk {disk.name!r} has no file on this host")
        prefix = _BUS_PREFIX[disk.bus]
        element = ET.SubElement(doc.devices(), "disk", type="file", device="disk")
        driver = ET.SubElement(element, "driver", name="qemu", type="qcow2", cache=disk.cache)
        if disk.io is not None:
            driver.set("io", disk.io)
        if disk.discard is not None:
            driver.set("discard", disk.discard)
        ET.SubElement(element, "source", file=path)
        ET.SubElement(element, "target", dev=_device_name(prefix, used), bus=disk.bus)
        ET.SubElement(element, "alias", name=f"ua-disk-{disk.name}")
        if disk.read_only:
            ET.SubElement(element, "readonly")
    if doc.host.seed_iso is not None:
        element = ET.SubElement(doc.devices(), "disk", type="file", device="cdrom")
        ET.SubElement(element, "driver", name="qemu", type="raw")
        ET.SubElement(element, "source", file=doc.host.seed_iso)
        ET.SubElement(element, "target", dev=_device_name("sd", used), bus="sata")
        ET.SubElement(element, "readonly")


def _device_name(prefix: str, used: dict[str, int]) -> str:
    index = used.get(prefix, 0)
    used[prefix] = index + 1
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


def _interfaces(doc: _Doc) -> None:
    for network in doc.spec.networks:
        element = ET.SubElement(doc.devices(), "interface", type=network.type)
        if network.type == "network" and network.source:
            ET.SubElement(element, "source", network=network.source)
        elif network.type == "bridge" and network.source:
            ET.SubElement(element, "source", bridge=network.source)
        ET.SubElement(element, "model", type=network.model)
        driver: dict[str, str] = {}
        # vhost-net serves tap devices only; user-mode networking has none.
        if network.model == "virtio" and network.type != "user" and doc.host.vhost_net is not None:
            driver["name"] = "vhost" if doc.host.vhost_net else "qemu"
        queues = min(doc.spec.cpu.vcpus, MAX_NET_QUEUES)
        if network.multiqueue and network.model == "virtio" and queues > 1:
            driver["queues"] = str(queues)
        if driver:
            ET.SubElement(element, "driver", driver)
        ET.SubElement(element, "alias", name=f"ua-net-{network.name}")


def _console(doc: _Doc) -> None:
    serial = ET.SubElement(doc.devices(), "serial", type="pty")
    if doc.host.serial_log:
        ET.SubElement(serial, "log", file=doc.host.serial_log, append="on")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(doc.devices(), "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")


def _hostdevs(doc: _Doc) -> None:
    requested = doc.spec.devices.pci if doc.spec.devices is not None else []
    for request in requested:
        addresses = sorted(a.address for a in doc.placement.pci_devices if a.alias == request.alias)
        if len(addresses) != request.count:
            raise DomainError(
                f"devices.pci {request.alias!r}: {request.count} requested, placement "
                f"assigned {len(addresses)}"
            )
        for index, address in enumerate(addresses):
            hostdev = ET.SubElement(
                doc.devices(), "hostdev", mode="subsystem", type="pci", managed="yes"
            )
            source = ET.SubElement(hostdev, "source")
            ET.SubElement(source, "address", _pci_address(address))
            ET.SubElement(hostdev, "alias", name=f"ua-pci-{request.alias}-{index}")


def _pci_address(address: str) -> dict[str, str]:
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    return {
        "domain": f"0x{domain}",
        "bus": f"0x{bus}",
        "slot": f"0x{slot}",
        "function": f"0x{function}",
    }


def _devices(doc: _Doc) -> None:
    balloon = doc.spec.memory.balloon
    if balloon is None:
        ET.SubElement(doc.devices(), "memballoon", model="none")
        return
    element = ET.SubElement(doc.devices(), "memballoon", model="virtio")
    if balloon.stats_period_seconds:
        ET.SubElement(element, "stats", period=str(balloon.stats_period_seconds))


def _seclabel(doc: _Doc) -> None:
    security = doc.spec.security
    if security is None or not security.require_confinement:
        return
    model = doc.host.security_model
    if model is None or model == "none":
        raise DomainError("security.requireConfinement: this host has no libvirt security driver")
    ET.SubElement(doc.domain, "seclabel", type="dynamic", model=model, relabel="yes")


CONFIGURATORS: Sequence[Callable[[_Doc], None]] = (
    _no_container,
    _identity,
    _memory,
    _vcpus,
    _cpu,
    _cputune,
    _numatune,
    _os,
    _features,
    _lifecycle,
    _disks,
    _interfaces,
    _hostdevs,
    _console,
    _devices,
    _seclabel,
)
"""Applied in order; libvirt does not care about element order, humans reading diffs do."""


# -- system containers (libvirt LXC) ------------------------------------------------------


def container_unsupported(spec: VirtualMachineSpec) -> list[str]:
    """What in `spec` a libvirt LXC system container cannot do, one reason per field.

    A container is processes on the host's kernel in their own namespaces and cgroups:
    everything that configures a guest kernel, its firmware or its emulated hardware has
    nothing to act on. `render` refuses such a spec on an lxc host with all the reasons at
    once, so the VM's condition names every field to change; placement can ask the same
    question before it picks an lxc host.
    """
    cpu, memory = spec.cpu, spec.memory
    reasons = []
    if spec.container is None:
        reasons.append("container: required on an lxc host (a root filesystem and an init)")
    if spec.boot is not None:
        reasons.append("boot: a container runs no kernel of its own")
    if spec.firmware is not None and (spec.firmware.type == "uefi" or spec.firmware.secure_boot):
        reasons.append("firmware: no UEFI (nor Secure Boot) without a guest kernel to boot")
    if spec.disks:
        reasons.append(
            "disks: block devices are for a guest kernel; a container's files are container.rootfs"
        )
    if spec.cloud_init is not None:
        reasons.append("cloudInit: its config drive is a disk, and a container has none")
    if cpu.policy == "dedicated" or cpu.thread_policy is not None or cpu.isolate_emulator_thread:
        reasons.append(
            "cpu.policy dedicated: pins a guest kernel's vCPU threads, and a container has "
            "none (cpu.tune limits it)"
        )
    if cpu.model is not None or cpu.features or cpu.disabled_features:
        reasons.append("cpu.model and features: a container sees the host's CPU as it is")
    if cpu.sockets or cpu.cores or cpu.threads:
        reasons.append("cpu sockets, cores and threads: a container sees the host's topology")
    if spec.numa is not None:
        reasons.append("numa: guest NUMA cells are a guest kernel's topology")
    if memory.hugepages is not None:
        reasons.append("memory.hugepages: they back a guest kernel's RAM, a container has none")
    if memory.balloon is not None:
        reasons.append("memory.balloon: needs a guest kernel's balloon driver")
    for network in spec.networks:
        if network.type == "user":
            reasons.append(
                f"networks {network.name!r}: type user is QEMU's NAT; a container needs "
                "type network or bridge"
            )
        if network.multiqueue:
            reasons.append(f"networks {network.name!r}: multiqueue is a virtio NIC's, not a veth's")
    if spec.devices is not None and spec.devices.pci:
        reasons.append("devices.pci: PCI passthrough needs a guest kernel's driver")
    if spec.security is not None and spec.security.require_seccomp_sandbox:
        reasons.append("security.requireSeccompSandbox: it is QEMU's sandbox, and there is no QEMU")
    return reasons


def _container_supported(doc: _Doc) -> None:
    reasons = container_unsupported(doc.spec)
    if reasons:
        raise DomainError("not possible in a system container (lxc): " + "; ".join(reasons))


def _container_os(doc: _Doc) -> None:
    assert doc.spec.container is not None  # _container_supported ran first
    os_el = ET.SubElement(doc.domain, "os")
    ET.SubElement(os_el, "type", arch="x86_64").text = "exe"
    init, *args = doc.spec.container.init
    ET.SubElement(os_el, "init").text = init
    for arg in args:
        ET.SubElement(os_el, "initarg").text = arg


def _container_features(doc: _Doc) -> None:
    features = ET.SubElement(doc.domain, "features")
    # Without it a container with no <interface> shares the host's network namespace and
    # sees every host NIC; a VM without networks has none, and so does a container.
    ET.SubElement(features, "privnet")


def _root_filesystem(doc: _Doc) -> None:
    assert doc.spec.container is not None
    element = ET.SubElement(doc.devices(), "filesystem", type="mount")
    ET.SubElement(element, "source", dir=doc.spec.container.rootfs)
    ET.SubElement(element, "target", dir="/")


def _container_interfaces(doc: _Doc) -> None:
    """One veth pair per network; the host end joins the libvirt network or bridge."""
    for network in doc.spec.networks:
        element = ET.SubElement(doc.devices(), "interface", type=network.type)
        attribute = "network" if network.type == "network" else "bridge"
        ET.SubElement(element, "source", {attribute: str(network.source)})


def _container_console(doc: _Doc) -> None:
    # libvirt LXC has no console log file; the console stays attachable as a pty.
    console = ET.SubElement(doc.devices(), "console", type="pty")
    ET.SubElement(console, "target", type="lxc", port="0")


CONTAINER_CONFIGURATORS: Sequence[Callable[[_Doc], None]] = (
    _container_supported,
    _identity,
    _memory,
    _vcpus,
    _cputune,
    _container_os,
    _container_features,
    _lifecycle,
    _root_filesystem,
    _container_interfaces,
    _container_console,
    _seclabel,
)
"""For domain type lxc. <memory> becomes the container's hard limit in its memory cgroup;
<cputune> shares and quota limit its CPU time. <vcpu> is only reported (the container's
processes see every host CPU), and its cpuset, when placement gives one, pins them."""


class DomainError(ValueError):
    """The VM cannot be expressed as a domain on this host (a permanent error)."""


def cpuset(cpus: Iterable[int]) -> str:
    """Linux cpuset syntax for a collection of CPU numbers: [0, 1, 2, 5] -> '0-2,5'."""
    ranges: list[list[int]] = []
    for n in sorted(set(cpus)):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)
