"""The VirtualMachine custom resource: what a user asks for (spec) and what runs (status).

Users and GitOps tools write the spec; the controller's placement writes `status.host`
and `status.placement`, the agent of the bound host writes `status.domain` and the phase
after binding; each field has one writer. Field docs here become the CRD's descriptions and
so what `kubectl explain virtualmachine` prints; the CEL rules attached to the models are
enforced by the API server itself.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator

from kubevisor.api import cpuset, effective, quantity
from kubevisor.api.addresses import IPv4Address, MacAddress
from kubevisor.api.conditions import Condition, conditions_field, observed_generation_field
from kubevisor.api.hypervisorhost import HostCpuNumber, HostNumaCellId, HypervisorType
from kubevisor.api.schema import (
    ABSOLUTE_PATH,
    DNS_LABEL,
    LIST_SET,
    MAX_URL_LENGTH,
    NO_CONTROL_CHARACTERS,
    QUANTITY_RULES,
    ApiModel,
    ApiObject,
    DnsLabel,
    Message,
    NameText,
    ObjectName,
    PciAddress,
    PositiveQuantity,
    Quantity,
    ShortText,
    cel_is_quantity,
    cel_matches,
    list_map,
    not_defaulted,
    pattern_check,
    quantity_rule,
    rule,
    validations,
)

KIND: Final = "VirtualMachine"

# Upper bounds keep the API server's CEL cost estimate small (and match what one
# libvirt domain can reasonably be given).
MAX_VCPUS = 256
MAX_NUMA_CELLS = 8
MAX_PCI_DEVICES_PER_ALIAS = 8
MAX_PCI_ALIASES = 8
MAX_HOST_SELECTOR_LABELS = 64
# "At most this many members on one host": beyond a few hundred it means "no limit".
MAX_GROUP_MEMBERS_PER_HOST = 1000
# Each queue is a vhost thread on the host and an interrupt vector in the guest; past a
# handful the gain is gone (Nova allows up to the tap limit, 256, which few guests use).
MAX_NET_QUEUES = 16
MAX_INTERFACES = 16
# An IPv4 address now; room for IPv6 ones later.
MAX_INTERFACE_ADDRESSES = 4
# libvirt's range for <cputune><shares> (cgroup v1 cpu.shares; v2 weights are scaled).
MIN_CPU_SHARES, MAX_CPU_SHARES = 2, 262144
# The kernel's range for cpu.cfs_period_us, and the largest cpu.cfs_quota_us.
MIN_CPU_PERIOD_US, MAX_CPU_PERIOD_US = 1000, 1000000
MIN_CPU_QUOTA_US, MAX_CPU_QUOTA_US = 1000, 17592186044415
# The smallest guest memory: no kernel boots in less (the smallest guests kubevisor runs,
# LXC containers in its tests, have 48Mi; the busybox QEMU guest needs 96Mi), and a
# "1Ki" is a typo, not a request.
MIN_MEMORY = "16Mi"
MIN_MEMORY_MESSAGE = f"must be at least {MIN_MEMORY}: no guest runs in less"
NUMA_MEMORY_MESSAGE = "the NUMA cells' memory must be whole bytes adding up to memory.size"
GROUP_MESSAGE = (
    "must be a DNS label: lower-case letters, digits and '-', starting and ending with a "
    "letter or digit, at most 63 characters (e.g. web or db-tier)"
)

NETWORK_EXCLUDES_SOURCE = (
    "network excludes source and type network or bridge: a Network attaches the interface itself"
)
DUPLICATE_MAC = "each macAddress may appear on one interface only"

RunStrategy = Literal["Always", "RerunOnFailure", "Once", "Manual", "Halted"]
CpuPolicy = Literal["shared", "dedicated"]
ThreadPolicy = Literal["prefer", "isolate", "require"]
HugepageSize = Literal["2Mi", "1Gi"]
DiskBus = Literal["virtio", "sata", "scsi"]
NetworkType = Literal["user", "network", "bridge"]
NicModel = Literal["virtio", "e1000", "e1000e", "rtl8139"]
GroupPolicy = Literal["anti-affinity", "affinity", "soft-anti-affinity", "soft-affinity"]
EvictionStrategy = Literal["LiveMigrate", "Shutdown", "None"]
DiskCache = Literal["none", "writethrough", "writeback", "directsync", "unsafe"]
DiskIo = Literal["native", "threads", "io_uring"]
DiskDiscard = Literal["unmap", "ignore"]
ImageFormat = Literal["qcow2", "raw"]
ImageCompression = Literal["none", "gzip", "xz"]
FirmwareType = Literal["bios", "uefi"]
Phase = Literal[
    "Pending",
    "Unschedulable",
    "Scheduled",
    "Starting",
    "Running",
    "Paused",
    "Stopping",
    "Stopped",
    "Migrating",
    "Failed",
    "Terminating",
    "Unknown",
]

CpuCount = Annotated[int, Field(ge=1, le=MAX_VCPUS)]
CpuFeature = Annotated[str, StringConstraints(min_length=1, max_length=64), NO_CONTROL_CHARACTERS]
# A path or an argument that reaches the domain XML as text.
HostPathText = Annotated[
    str, StringConstraints(min_length=1, max_length=4096), NO_CONTROL_CHARACTERS
]
# A file or directory on the hypervisor host: absolute and in normal form here, and used
# by the agent only inside the directories the host's admin declares (core.hostpaths).
HostPath = Annotated[
    str, StringConstraints(min_length=2, max_length=4096), NO_CONTROL_CHARACTERS, ABSOLUTE_PATH
]
VcpuIndex = Annotated[int, Field(ge=0, le=MAX_VCPUS - 1)]


class CpuTune(ApiModel):
    """CPU time a shared VM may take from the host (libvirt <cputune>, cgroup cpu)."""

    shares: int | None = Field(
        default=None,
        ge=MIN_CPU_SHARES,
        le=MAX_CPU_SHARES,
        description=(
            f"Relative CPU weight against other VMs on the host ({MIN_CPU_SHARES}.."
            f"{MAX_CPU_SHARES}; libvirt's default is 1024 per VM). Nova's quota:cpu_shares."
        ),
    )
    period_microseconds: int | None = Field(
        default=None,
        ge=MIN_CPU_PERIOD_US,
        le=MAX_CPU_PERIOD_US,
        description=(
            f"Enforcement period of quotaMicroseconds, in microseconds ({MIN_CPU_PERIOD_US}"
            f"..{MAX_CPU_PERIOD_US}; the kernel's default is 100000). Nova's "
            "quota:cpu_period."
        ),
    )
    quota_microseconds: int | None = Field(
        default=None,
        ge=MIN_CPU_QUOTA_US,
        le=MAX_CPU_QUOTA_US,
        description=(
            "CPU time each vCPU may use per period, in microseconds: quota = period / 2 "
            "caps every vCPU at half a host CPU. Unset: no cap. Nova's quota:cpu_quota."
        ),
    )


class Hugepages(ApiModel):
    """Back guest memory with host huge pages of one size."""

    page_size: HugepageSize = Field(
        description="Huge page size: 2Mi or 1Gi. The VM's memory size must be a multiple of it.",
    )


class Cpu(ApiModel):
    """Virtual CPUs of the guest: how many, their topology, and whether they get
    dedicated host CPUs (pinning, as Nova's hw:cpu_policy) or float over shared ones."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.threadPolicy) || (has(self.policy) && self.policy == 'dedicated')",
                "threadPolicy is only allowed with policy: dedicated",
                field_path=".threadPolicy",
            ),
            rule(
                "!has(self.isolateEmulatorThread) || !self.isolateEmulatorThread"
                " || (has(self.policy) && self.policy == 'dedicated')",
                "isolateEmulatorThread is only allowed with policy: dedicated",
                field_path=".isolateEmulatorThread",
            ),
            rule(
                "!(has(self.sockets) || has(self.cores) || has(self.threads))"
                " || (has(self.sockets) ? self.sockets : 1)"
                " * (has(self.cores) ? self.cores : 1)"
                " * (has(self.threads) ? self.threads : 1)"
                " == (has(self.vcpus) ? self.vcpus : 1)",
                "sockets x cores x threads (unset ones count as 1) must equal vcpus",
                field_path=".vcpus",
            ),
            rule(
                "!has(self.disabledFeatures) || !has(self.features)"
                " || self.features.all(f, !(f in self.disabledFeatures))",
                "a CPU feature cannot be both required (features) and disabled",
                field_path=".disabledFeatures",
            ),
            rule(
                "!has(self.tune) || !has(self.policy) || self.policy == 'shared'",
                "tune (CPU shares, period, quota) is only allowed with policy: shared",
                field_path=".tune",
            ),
        )
    )

    vcpus: CpuCount = Field(
        default=1,
        description=f"Number of virtual CPUs (1..{MAX_VCPUS}). Unset: 1.",
        json_schema_extra=not_defaulted,
    )
    sockets: CpuCount | None = Field(
        default=None,
        description=(
            "CPU sockets the guest sees. If any of sockets, cores, threads is set, "
            "sockets x cores x threads must equal vcpus (unset ones count as 1)."
        ),
    )
    cores: CpuCount | None = Field(
        default=None,
        description="Cores per socket the guest sees; see sockets.",
    )
    threads: CpuCount | None = Field(
        default=None,
        description="Threads per core the guest sees; see sockets.",
    )
    policy: CpuPolicy = Field(
        default="shared",
        description=(
            "shared: vCPUs float over the host's shared CPUs and count against its CPU "
            "allocation ratio. dedicated: each vCPU is pinned to its own host CPU from the "
            "host's cpuDedicatedSet (Nova's hw:cpu_policy). Unset: shared."
        ),
        json_schema_extra=not_defaulted,
    )
    thread_policy: ThreadPolicy | None = Field(
        default=None,
        description=(
            "How dedicated vCPUs use host SMT siblings (Nova's hw:cpu_thread_policy): "
            "prefer siblings, isolate (keep the other siblings of each core unused) or "
            "require hosts with SMT. Only with policy: dedicated."
        ),
    )
    isolate_emulator_thread: bool | None = Field(
        default=None,
        description=(
            "Pin QEMU's emulator threads to one extra dedicated host CPU instead of the "
            "vCPUs' CPUs (Nova's hw:emulator_threads_policy=isolate). Only with policy: "
            "dedicated."
        ),
    )
    model: (
        Annotated[str, StringConstraints(min_length=1, max_length=128), NO_CONTROL_CHARACTERS]
        | None
    ) = Field(
        default=None,
        description=(
            "Guest CPU model: host-passthrough, host-model, or a named libvirt model such "
            "as Skylake-Server. Unset: the agent picks what the host's hypervisor supports."
        ),
    )
    features: list[CpuFeature] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "CPU feature flags the guest requires (e.g. vmx, avx2); hosts lacking one are "
            "filtered out. Nova's cpu_model_extra_flags (+flag)."
        ),
        json_schema_extra=LIST_SET,
    )
    disabled_features: list[CpuFeature] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "CPU feature flags removed from the guest's CPU model (libvirt feature "
            "policy disable), e.g. to hide a flag that blocks migration between host "
            "generations; Nova's cpu_model_extra_flags (-flag). Not also in features."
        ),
        json_schema_extra=LIST_SET,
    )
    tune: CpuTune | None = Field(
        default=None,
        description=(
            "CPU time limits of a shared VM, enforced by the host's cgroup cpu controller "
            "through libvirt's <cputune> (Nova's quota:cpu_shares, quota:cpu_period, "
            "quota:cpu_quota). Only with policy: shared. Hosts without the cpu controller "
            "start the VM unlimited and say so in its status."
        ),
    )

    # The model validators below mirror the CEL rules of their class, so example files
    # and unit tests catch the same mistakes without an API server.
    @model_validator(mode="after")
    def _dedicated_only_options(self) -> Cpu:
        if self.policy != "dedicated":
            if self.thread_policy is not None:
                raise ValueError("threadPolicy is only allowed with policy: dedicated")
            if self.isolate_emulator_thread:
                raise ValueError("isolateEmulatorThread is only allowed with policy: dedicated")
        topology = (self.sockets, self.cores, self.threads)
        if any(topology) and math.prod(n or 1 for n in topology) != self.vcpus:
            raise ValueError("sockets x cores x threads (unset ones count as 1) must equal vcpus")
        if set(self.features) & set(self.disabled_features):
            raise ValueError("a CPU feature cannot be both required (features) and disabled")
        if self.tune is not None and self.policy != "shared":
            raise ValueError("tune (CPU shares, period, quota) is only allowed with policy: shared")
        return self


class Balloon(ApiModel):
    """A virtio memory balloon device, for guest memory statistics."""

    stats_period_seconds: int = Field(
        default=10,
        ge=0,
        le=3600,
        description=(
            "How often the guest's balloon driver reports memory statistics to the host, "
            "in seconds (0..3600, 0: no statistics); Nova's mem_stats_period_seconds."
        ),
    )


def _check_memory_size(text: str) -> str:
    if quantity.parse(text) < quantity.parse(MIN_MEMORY):
        raise ValueError(f"{text!r} {MIN_MEMORY_MESSAGE}")
    return text


# Guest memory: a quantity of at least MIN_MEMORY.
MemorySize = Annotated[
    str,
    StringConstraints(max_length=quantity.MAX_LENGTH),
    AfterValidator(_check_memory_size),
    Field(
        json_schema_extra=validations(
            *QUANTITY_RULES,
            quantity_rule(f"compareTo(quantity('{MIN_MEMORY}')) >= 0", MIN_MEMORY_MESSAGE),
        )
    ),
]


# A server group's name: a DNS label, so it can also serve as a label value or part of
# an object name.
GroupName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63),
    AfterValidator(pattern_check(DNS_LABEL, GROUP_MESSAGE)),
    Field(json_schema_extra=validations(rule(cel_matches("self", DNS_LABEL), GROUP_MESSAGE))),
]


class Memory(ApiModel):
    """Guest memory."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                f"!has(self.hugepages) || !{cel_is_quantity('self.size')}"
                " || (quantity(self.size).isInteger()"
                " && quantity(self.size).asInteger()"
                " % quantity(self.hugepages.pageSize).asInteger() == 0)",
                "size must be a multiple of hugepages.pageSize",
                field_path=".size",
            ),
        )
    )

    size: MemorySize = Field(
        description=(f"Guest memory as a quantity of at least {MIN_MEMORY}, e.g. 128Mi or 4Gi."),
    )
    hugepages: Hugepages | None = Field(
        default=None,
        description="Back the guest memory with host huge pages; unset uses normal pages.",
    )
    balloon: Balloon | None = Field(
        default=None,
        description=(
            "Give the guest a virtio memory balloon that reports its memory use to the host "
            "(Nova's hw_mem_balloon / mem_stats_period_seconds). Unset: no balloon device."
        ),
    )

    @model_validator(mode="after")
    def _whole_pages(self) -> Memory:
        if self.hugepages is not None:
            size = quantity.parse(self.size)
            if size % quantity.parse(self.hugepages.page_size) != 0:
                raise ValueError("size must be a multiple of hugepages.pageSize")
        return self


class NumaCell(ApiModel):
    """One guest NUMA cell: which vCPUs and how much memory it holds."""

    cpus: list[VcpuIndex] = Field(
        min_length=1,
        max_length=MAX_VCPUS,
        description="vCPU indexes (0..vcpus-1) of this cell; each vCPU in exactly one cell.",
        json_schema_extra=LIST_SET,
    )
    memory: PositiveQuantity = Field(
        description="Guest memory of this cell; the cells' memory adds up to memory.size.",
    )


class Numa(ApiModel):
    """Guest NUMA topology (Nova's hw:numa_nodes with explicit hw:numa_cpus/mem). Each
    guest cell is placed on one host NUMA cell."""

    cells: list[NumaCell] = Field(
        min_length=1,
        max_length=MAX_NUMA_CELLS,
        description=(
            f"Guest NUMA cells (1..{MAX_NUMA_CELLS}). Their cpus partition 0..vcpus-1 "
            "and their memory adds up to memory.size."
        ),
    )


class ImageSource(ApiModel):
    """A base image the agent downloads over HTTP(S) into its host's content-addressed
    cache (once per host and digest), verifies, and puts the disk's overlay on."""

    url: Annotated[
        str,
        # Explicit ASCII classes: \s means more to Python and pydantic than to RE2.
        StringConstraints(pattern=r"^https?://[^\x00-\x20\x7f]+$", max_length=MAX_URL_LENGTH),
    ] = Field(description="http:// or https:// URL of the image file.")
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$", max_length=64)] = Field(
        description=(
            "SHA-256 of the bytes the URL serves, before any decompression: what "
            "`sha256sum` prints for the published (possibly compressed) file. 64 lowercase "
            "hex digits; a download that does not match is refused."
        ),
    )
    format: ImageFormat = Field(
        default="qcow2",
        description="Format of the image once decompressed: qcow2 or raw.",
    )
    compression: ImageCompression = Field(
        default="none",
        description=(
            "How the served file is compressed: none, gzip or xz. The agent decompresses "
            "while downloading and caches the decompressed image."
        ),
    )


class Disk(ApiModel):
    """One block device of the guest, created from a base image (on the host or
    downloaded from a source), blank, or both resized.

    The host file is a thin-provisioned qcow2 overlay: its virtual size counts against
    the host's disk allocation ratio, its real size grows as the guest writes.
    """

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "has(self.image) || has(self.source) || has(self.size)",
                "a disk needs an image or a source, a size, or both",
            ),
            rule(
                "!(has(self.image) && has(self.source))",
                "a disk has at most one of image and source",
                field_path=".source",
            ),
            rule(
                "!has(self.io) || self.io != 'native' || !has(self.cache)"
                " || self.cache in ['none', 'directsync']",
                "io: native needs cache none or directsync (O_DIRECT)",
                field_path=".io",
            ),
        )
    )

    name: DnsLabel = Field(description="Name of the disk, unique in the VM (a DNS label).")
    image: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=255)]
        | None
    ) = Field(
        default=None,
        description=(
            "Base image file name in the host's image directory; the disk is a "
            "copy-on-write overlay on it. Unset: a blank disk of the given size, or the "
            "image of source. Not together with source."
        ),
    )
    source: ImageSource | None = Field(
        default=None,
        description=(
            "Base image downloaded from an HTTP(S) URL and verified against its sha256 "
            "into the host's image cache; the disk is a copy-on-write overlay on the "
            "cached file. Not together with image."
        ),
    )
    size: PositiveQuantity | None = Field(
        default=None,
        description="Virtual size of the disk (e.g. 10Gi); unset keeps the image's size.",
    )
    bus: DiskBus = Field(
        default="virtio",
        description="Bus the guest sees the disk on: virtio (fastest), sata or scsi.",
    )
    read_only: bool | None = Field(
        default=None,
        description="Attach the disk read-only.",
    )
    cache: DiskCache = Field(
        default="none",
        description=(
            "Host page cache mode (Nova's disk_cachemodes): none (O_DIRECT, guest flushes "
            "reach the disk; safe, and required for live migration of local disks), "
            "writethrough, writeback, directsync, or unsafe (ignores flushes: scratch "
            "disks only). Unset: none, or the flavor's diskDefaults.cache."
        ),
        json_schema_extra=not_defaulted,
    )
    io: DiskIo | None = Field(
        default=None,
        description=(
            "Asynchronous I/O backend: native (Linux AIO; needs cache none or directsync), "
            "threads (a thread pool) or io_uring. Unset: QEMU's default (threads)."
        ),
    )
    discard: DiskDiscard | None = Field(
        default=None,
        description=(
            "What guest TRIM/UNMAP requests do: unmap (free the space in the thin qcow2 "
            "overlay; Nova's hw_disk_discard=unmap) or ignore. Unset: ignore."
        ),
    )

    @model_validator(mode="after")
    def _has_content(self) -> Disk:
        if self.image is None and self.source is None and self.size is None:
            raise ValueError("a disk needs an image or a source, a size, or both")
        if self.image is not None and self.source is not None:
            raise ValueError("a disk has at most one of image and source")
        if self.io == "native" and self.cache not in ("none", "directsync"):
            raise ValueError("io: native needs cache none or directsync (O_DIRECT)")
        return self


class Boot(ApiModel):
    """Direct kernel boot: start the guest from a kernel and initrd on the host instead
    of a disk's boot loader. Paths are absolute paths on the hypervisor host, inside a
    directory its admin allows for boot files (the agent's --boot-dir): any other path,
    also through a symlink, fails the VM with reason HostPathRefused."""

    kernel: HostPath | None = Field(
        default=None,
        description=(
            "Absolute path of the kernel image on the host, inside a directory the host "
            "allows for boot files (its agent's --boot-dir)."
        ),
    )
    initrd: HostPath | None = Field(
        default=None,
        description=(
            "Absolute path of the initrd/initramfs on the host, inside a directory the "
            "host allows for boot files (its agent's --boot-dir)."
        ),
    )
    cmdline: Annotated[str, StringConstraints(max_length=4096), NO_CONTROL_CHARACTERS] | None = (
        Field(
            default=None,
            description="Kernel command line, e.g. 'console=ttyS0'.",
        )
    )


class Container(ApiModel):
    """A system container instead of a virtual machine: the host's kernel runs `init` in
    its own namespaces with `rootfs` as its root filesystem (libvirt LXC). Only hosts of
    hypervisor type lxc run it, in a user namespace unless the host's admin allows
    privileged containers (the agent's --allow-privileged-containers)."""

    rootfs: HostPath = Field(
        description=(
            "Absolute path on the host of the directory that becomes the root (/), inside "
            "a directory the host allows for root filesystems (its agent's --rootfs-dir)."
        ),
    )
    init: list[HostPathText] = Field(
        default_factory=lambda: ["/sbin/init"],
        min_length=1,
        max_length=64,
        description=(
            "The container's PID 1 and its arguments, a path inside rootfs first. It gets "
            "SIGTERM on shutdown. Default: /sbin/init."
        ),
        json_schema_extra={"default": ["/sbin/init"]},
    )


class CloudInit(ApiModel):
    """cloud-init NoCloud data handed to the guest on a config drive."""

    user_data: Annotated[str, StringConstraints(max_length=65536)] | None = Field(
        default=None,
        description="cloud-init user-data (e.g. a #cloud-config document).",
    )
    meta_data: Annotated[str, StringConstraints(max_length=65536)] | None = Field(
        default=None,
        description="cloud-init meta-data; unset: instance-id and hostname from the VM's name.",
    )
    network_config: Annotated[str, StringConstraints(max_length=65536)] | None = Field(
        default=None,
        description="cloud-init network-config (version 1 or 2).",
    )


class Network(ApiModel):
    """One network interface of the guest. virtio NICs use the host's vhost-net kernel
    backend when the host has it."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "self.type == 'user' || has(self.source)",
                "source is required for type network and bridge",
                field_path=".source",
            ),
            rule(
                "!has(self.network) || (self.type == 'user' && !has(self.source))",
                NETWORK_EXCLUDES_SOURCE,
                field_path=".network",
            ),
            rule(
                "!has(self.ipAddress) || has(self.network)",
                "ipAddress needs network: addresses come from a Network's subnet",
                field_path=".ipAddress",
            ),
            rule(
                "!has(self.multiqueue) || !self.multiqueue || self.model == 'virtio'",
                "multiqueue is only allowed with model: virtio",
                field_path=".multiqueue",
            ),
            rule(
                "!has(self.multiqueue) || !self.multiqueue || self.type != 'user'"
                " || has(self.network)",
                "multiqueue needs a tap device: network, or type network or bridge, not user",
                field_path=".multiqueue",
            ),
        )
    )

    name: DnsLabel = Field(description="Name of the interface, unique in the VM (a DNS label).")
    type: NetworkType = Field(
        default="user",
        description=(
            "How an interface without network attaches. user: QEMU user-mode networking "
            "(NAT, no setup on the host); network: a libvirt network named by source; "
            "bridge: a host bridge named by source. network and bridge only where the "
            "host's admin offers that name (HypervisorHost spec.hostNetworks)."
        ),
    )
    source: (
        Annotated[str, StringConstraints(min_length=1, max_length=253), NO_CONTROL_CHARACTERS]
        | None
    ) = Field(
        default=None,
        description="Libvirt network name (type network) or host bridge name (type bridge).",
    )
    model: NicModel = Field(
        default="virtio",
        description="NIC model the guest sees: virtio, e1000, e1000e or rtl8139.",
    )
    multiqueue: bool | None = Field(
        default=None,
        description=(
            f"One queue pair per vCPU, at most {MAX_NET_QUEUES} (Nova's "
            "hw_vif_multiqueue_enabled), so packet processing spreads over the guest's "
            "vCPUs. Only with model virtio and a tap device: network, or type network or "
            "bridge (libvirt refuses multiqueue on user-mode networking)."
        ),
    )
    network: ObjectName | None = Field(
        default=None,
        description=(
            "Name of a Network in the VM's namespace: the interface gets an address from "
            "its subnet and a stable MAC (status.interfaces). Not with source or type "
            "network or bridge (type stays user, its default, and means nothing then)."
        ),
    )
    mac_address: MacAddress | None = Field(
        default=None,
        description=(
            "MAC address of the interface, unicast, in lower-case colon form "
            "(02:00:00:ab:cd:ef). Unset: with network, one derived from the VM's uid and "
            "the interface name, kept for the life of the VM (status.interfaces)."
        ),
    )
    ip_address: IPv4Address | None = Field(
        default=None,
        description=(
            "Fixed IPv4 address from an allocation pool of the Network (needs network). "
            "Unset: the controller picks a free one. Either way it stays the VM's until "
            "the VM is deleted."
        ),
    )

    @model_validator(mode="after")
    def _has_source(self) -> Network:
        if self.type != "user" and self.source is None:
            raise ValueError("source is required for type network and bridge")
        if self.network is not None and (self.type != "user" or self.source is not None):
            raise ValueError(NETWORK_EXCLUDES_SOURCE)
        if self.ip_address is not None and self.network is None:
            raise ValueError("ipAddress needs network: addresses come from a Network's subnet")
        if self.multiqueue and self.model != "virtio":
            raise ValueError("multiqueue is only allowed with model: virtio")
        if self.multiqueue and self.type == "user" and self.network is None:
            raise ValueError(
                "multiqueue needs a tap device: network, or type network or bridge, not user"
            )
        return self

    @property
    def user_mode(self) -> bool:
        """QEMU user-mode networking: type user and no Network."""
        return self.type == "user" and self.network is None


class Firmware(ApiModel):
    """Guest firmware: legacy BIOS (SeaBIOS) or UEFI (OVMF), optionally with Secure Boot."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.secureBoot) || !self.secureBoot || self.type == 'uefi'",
                "secureBoot is only allowed with type: uefi",
                field_path=".secureBoot",
            ),
        )
    )

    type: FirmwareType = Field(
        default="bios",
        description=(
            "bios (SeaBIOS) or uefi (OVMF from the host's ovmf package, with a per-VM "
            "variable store); Nova's hw_firmware_type."
        ),
    )
    secure_boot: bool = Field(
        default=False,
        description=(
            "UEFI Secure Boot with Microsoft's and the distribution's keys enrolled; the "
            "guest gets a q35 machine with SMM. Only with type: uefi; Nova's "
            "os_secure_boot=required."
        ),
    )

    @model_validator(mode="after")
    def _secure_boot_needs_uefi(self) -> Firmware:
        if self.secure_boot and self.type != "uefi":
            raise ValueError("secureBoot is only allowed with type: uefi")
        return self


class Security(ApiModel):
    """How the hypervisor host must confine this VM's QEMU process."""

    require_seccomp_sandbox: bool | None = Field(
        default=None,
        description=(
            "Only place the VM on hosts whose QEMU runs under a seccomp sandbox "
            "(libvirt's seccomp_sandbox, reported in HypervisorHost "
            "status.capabilities.seccompSandbox). libvirt sets it per host, not per VM, "
            "and does not report it: until a host's status says so, no host qualifies."
        ),
    )
    require_confinement: bool | None = Field(
        default=None,
        description=(
            "Only place the VM on hosts with a libvirt security driver (AppArmor or "
            "SELinux, status.capabilities.securityDriver) and give its QEMU process a "
            "dynamic per-VM label."
        ),
    )


class PciRequest(ApiModel):
    """Host PCI devices (or SR-IOV virtual functions) passed through to the guest."""

    alias: DnsLabel = Field(
        description=(
            "Alias of an entry in the hosts' spec.pciPassthrough allow-list (Nova's [pci] alias)."
        ),
    )
    count: int = Field(
        default=1,
        ge=1,
        le=MAX_PCI_DEVICES_PER_ALIAS,
        description=f"How many devices of that alias (1..{MAX_PCI_DEVICES_PER_ALIAS}).",
    )


class Devices(ApiModel):
    """Extra devices of the guest beyond disks and network interfaces."""

    pci: list[PciRequest] = Field(
        default_factory=list,
        max_length=MAX_PCI_ALIASES,
        description=(
            "PCI passthrough requests by alias; placement claims specific host devices "
            "(NUMA-local to the guest first) and records them in status.placement.pciDevices."
        ),
        json_schema_extra=list_map("alias"),
    )

    @model_validator(mode="after")
    def _aliases_unique(self) -> Devices:
        aliases = [request.alias for request in self.pci]
        if len(set(aliases)) != len(aliases):
            raise ValueError("pci aliases must be unique")
        return self


class Placement(ApiModel):
    """Where the VM may run: host labels and server-group rules (Nova's server groups)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.policy) || has(self.group)",
                "policy requires group",
                field_path=".group",
            ),
            rule(
                "!has(self.maxPerHost) || (has(self.policy) && self.policy == 'anti-affinity')",
                "maxPerHost is only allowed with policy: anti-affinity",
                field_path=".maxPerHost",
            ),
        )
    )

    host_selector: dict[str, Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None,
        max_length=MAX_HOST_SELECTOR_LABELS,
        description=(
            "Only hosts whose HypervisorHost labels include all of these "
            f"(at most {MAX_HOST_SELECTOR_LABELS})."
        ),
    )
    group: GroupName | None = Field(
        default=None,
        description=(
            "Server group this VM belongs to: VMs of one namespace with the same group "
            "are placed together by policy. A DNS label (e.g. web or db-tier)."
        ),
    )
    policy: GroupPolicy | None = Field(
        default=None,
        description=(
            "Group policy: anti-affinity (never on a host with another member, or at "
            "most maxPerHost), affinity (all on one host), soft-anti-affinity / "
            "soft-affinity (preferences weighed, never refusals). Requires group."
        ),
    )
    max_per_host: int | None = Field(
        default=None,
        ge=1,
        le=MAX_GROUP_MEMBERS_PER_HOST,
        description=(
            "With policy anti-affinity: at most this many members of the group on one "
            f"host (Nova's max_server_per_host), 1..{MAX_GROUP_MEMBERS_PER_HOST}, default 1."
        ),
    )

    @model_validator(mode="after")
    def _group_rules(self) -> Placement:
        if self.policy is not None and self.group is None:
            raise ValueError("policy requires group")
        if self.max_per_host is not None and self.policy != "anti-affinity":
            raise ValueError("maxPerHost is only allowed with policy: anti-affinity")
        return self


class HypervisorRequirement(ApiModel):
    """The hypervisor types a VM may run on (Nova's image property hypervisor_type).

    Placement sends the VM only to hosts whose status.hypervisor.type is one of them.
    Without a requirement the VM goes to any type that supports every feature its spec
    asks for (the README's capability table).
    """

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "has(self.type) != has(self.types)",
                "set exactly one of type and types",
            ),
        )
    )

    type: HypervisorType | None = Field(
        default=None,
        description="The one hypervisor type the VM runs on: kvm, qemu, lxc, vmware or test.",
    )
    types: list[HypervisorType] | None = Field(
        default=None,
        min_length=1,
        max_length=5,
        description="Hypervisor types the VM may run on, any of them. Not together with type.",
        json_schema_extra=LIST_SET,
    )

    @model_validator(mode="after")
    def _one_of(self) -> HypervisorRequirement:
        if (self.type is None) == (self.types is None):
            raise ValueError("set exactly one of type and types")
        if self.types is not None and len(set(self.types)) != len(self.types):
            raise ValueError("types must be unique")
        return self

    @property
    def accepted(self) -> frozenset[str]:
        """Every type the VM may run on."""
        return frozenset(self.types) if self.types is not None else frozenset({str(self.type)})


class DiskDefaults(ApiModel):
    """Settings a flavor gives every disk of its VMs that does not set them itself."""

    cache: DiskCache | None = Field(default=None, description="The disks' cache mode.")
    io: DiskIo | None = Field(default=None, description="The disks' asynchronous I/O backend.")
    discard: DiskDiscard | None = Field(default=None, description="What guest TRIM requests do.")


class FlavorSpec(ApiModel):
    """A VM's size and tuning, for many VMs to name (Nova's flavor and its extra specs,
    KubeVirt's instancetype): any subset of the VM spec's sizing and tuning fields. A VM
    naming the flavor gets these fields; one it sets itself as well is refused
    (FlavorConflict), never overridden."""

    cpu: Cpu | None = Field(
        default=None,
        description=(
            "Virtual CPUs: count, topology, policy, thread policy, emulator thread, model, "
            "features and CPU time limits, as a VM's spec.cpu."
        ),
    )
    memory: Memory | None = Field(
        default=None, description="Guest memory: size, huge pages, balloon, as spec.memory."
    )
    numa: Numa | None = Field(default=None, description="Guest NUMA topology, as spec.numa.")
    devices: Devices | None = Field(
        default=None, description="PCI passthrough by alias, as spec.devices."
    )
    firmware: Firmware | None = Field(
        default=None, description="Guest firmware (bios, uefi, Secure Boot), as spec.firmware."
    )
    disk_defaults: DiskDefaults | None = Field(
        default=None,
        description=(
            "cache, io and discard for every disk of the VM that does not set them (a disk "
            "setting one the flavor sets too is a FlavorConflict)."
        ),
    )


FlavorKind = Literal["VirtualMachineClusterFlavor", "VirtualMachineFlavor"]


class FlavorReference(ApiModel):
    """The flavor a VM takes its size and tuning from."""

    name: ObjectName = Field(description="Name of the flavor.")
    kind: FlavorKind = Field(
        default="VirtualMachineClusterFlavor",
        description=(
            "VirtualMachineClusterFlavor (cluster-wide, written by admins) or "
            "VirtualMachineFlavor (in the VM's namespace)."
        ),
    )


# CEL on the VM sees no flavor: the rules tying cpu, memory and numa together hold for a
# VM without one, and the controller checks the VM and its flavor together (api.effective).
_VCPUS = "(has(self.cpu) && has(self.cpu.vcpus) ? self.cpu.vcpus : 1)"


def _declared_spec_schema(schema: dict[str, Any]) -> None:
    # memory may come from the flavor: required only without one (the rule below).
    required = [name for name in schema.get("required", []) if name != "memory"]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    schema["x-kubernetes-validations"] = [
        rule(
            "has(self.memory) || has(self.flavor)",
            "memory is required unless flavor names a flavor that gives it",
            field_path=".memory",
        ),
        rule(
            "has(self.flavor) || !has(self.numa)"
            f" || self.numa.cells.map(c, size(c.cpus)).sum() == {_VCPUS}",
            "the NUMA cells' cpus must add up to cpu.vcpus",
            field_path=".numa.cells",
        ),
        rule(
            "has(self.flavor) || !has(self.numa)"
            f" || self.numa.cells.all(c, c.cpus.all(i, i < {_VCPUS}"
            " && self.numa.cells.filter(d, i in d.cpus).size() == 1))",
            "each vCPU index must be below cpu.vcpus and appear in exactly one NUMA cell",
            field_path=".numa.cells",
        ),
        rule(
            "has(self.flavor) || !has(self.numa) || !has(self.memory)"
            f" || !({cel_is_quantity('self.memory.size')}"
            f" && self.numa.cells.all(c, {cel_is_quantity('c.memory')}))"
            " || (quantity(self.memory.size).isInteger()"
            " && self.numa.cells.all(c, quantity(c.memory).isInteger())"
            " && self.numa.cells.map(c, quantity(c.memory).asInteger()).sum()"
            " == quantity(self.memory.size).asInteger())",
            NUMA_MEMORY_MESSAGE,
            field_path=".numa.cells",
        ),
        rule(
            "!has(self.networks) || self.networks.all(n, !has(n.macAddress)"
            " || self.networks.exists_one(m,"
            " has(m.macAddress) && m.macAddress == n.macAddress))",
            DUPLICATE_MAC,
            field_path=".networks",
        ),
        rule(
            "!has(self.container) || !has(self.boot)",
            "container and boot exclude each other: a container runs no kernel of its own",
            field_path=".container",
        ),
    ]


class VirtualMachineSpec(ApiModel):
    """Desired state of a virtual machine. Read from an object (`VirtualMachine`), it is
    the effective spec: the VM's own fields and those of the flavor it runs
    (status.flavor), merged by `api.effective.merge`."""

    model_config = ConfigDict(json_schema_extra=_declared_spec_schema)

    flavor: FlavorReference | None = Field(
        default=None,
        description=(
            "The flavor giving this VM its size and tuning (cpu, memory, numa, devices, "
            "firmware, disk defaults). A field set both here and in the flavor is refused "
            "(condition reason FlavorConflict). The VM runs the flavor as recorded in "
            "status.flavor: a later edit of the flavor reaches it when it is next started."
        ),
    )
    run_strategy: RunStrategy = Field(
        default="Always",
        description=(
            "When the VM should run (KubeVirt's run strategies): Always (restart whenever "
            "it stops), RerunOnFailure (restart only after a failure), Once (run to "
            "completion, never restart), Manual (start/stop only by command), Halted "
            "(keep stopped)."
        ),
    )
    cpu: Cpu = Field(
        default_factory=Cpu,
        description="Virtual CPUs: count, topology, shared or dedicated (pinned).",
    )
    memory: Memory = Field(
        description=(
            "Guest memory: size and optional huge pages. Required unless the flavor gives it."
        ),
    )
    numa: Numa | None = Field(
        default=None,
        description=(
            "Guest NUMA topology; unset: one cell, placed on one host NUMA cell when dedicated."
        ),
    )
    disks: list[Disk] = Field(
        default_factory=list,
        max_length=32,
        description="Block devices, in boot order; names unique.",
        json_schema_extra=list_map("name"),
    )
    boot: Boot | None = Field(
        default=None,
        description=(
            "Direct kernel boot; unset boots from the first disk (or the agent's default kernel)."
        ),
    )
    cloud_init: CloudInit | None = Field(
        default=None,
        description="cloud-init NoCloud data; unset attaches no config drive.",
    )
    container: Container | None = Field(
        default=None,
        description=(
            "Run a system container (hypervisor type lxc) instead of a virtual machine: a "
            "root filesystem and an init command; not together with boot."
        ),
    )
    networks: list[Network] = Field(
        default_factory=list,
        max_length=MAX_INTERFACES,
        description="Network interfaces; names unique.",
        json_schema_extra=list_map("name"),
    )
    firmware: Firmware | None = Field(
        default=None,
        description="Guest firmware: bios or uefi, Secure Boot; unset: bios.",
    )
    security: Security | None = Field(
        default=None,
        description="Confinement the host must give the VM's QEMU process.",
    )
    devices: Devices | None = Field(
        default=None,
        description="PCI passthrough devices.",
    )
    placement: Placement | None = Field(
        default=None,
        description="Host selection: labels and server-group policy.",
    )
    hypervisor: HypervisorRequirement | None = Field(
        default=None,
        description=(
            "Hypervisor types the VM may run on; unset: any type that supports every "
            "feature the spec asks for."
        ),
    )
    eviction_strategy: EvictionStrategy = Field(
        default="LiveMigrate",
        description=(
            "What happens when the host is drained (maintenance): LiveMigrate to another "
            "host, Shutdown (stop here, start elsewhere per runStrategy) or None (block "
            "the drain)."
        ),
    )
    paused: bool = Field(
        default=False,
        description="Pause the guest's vCPUs while keeping its memory (libvirt suspend).",
    )

    @model_validator(mode="after")
    def _names_unique(self) -> VirtualMachineSpec:
        for what, names in (
            ("disks", [disk.name for disk in self.disks]),
            ("networks", [network.name for network in self.networks]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} names must be unique")
        macs = [net.mac_address for net in self.networks if net.mac_address is not None]
        if len(set(macs)) != len(macs):
            raise ValueError(DUPLICATE_MAC)
        return self

    @model_validator(mode="after")
    def _container_or_boot(self) -> VirtualMachineSpec:
        if self.container is not None and self.boot is not None:
            raise ValueError(
                "container and boot exclude each other: a container runs no kernel of its own"
            )
        return self

    @model_validator(mode="after")
    def _numa_matches(self) -> VirtualMachineSpec:
        if self.numa is None:
            return self
        indexes = [i for cell in self.numa.cells for i in cell.cpus]
        if sorted(indexes) != list(range(self.cpu.vcpus)):
            raise ValueError("numa.cells cpus must partition 0..cpu.vcpus-1")
        memory = [quantity.parse(cell.memory) for cell in self.numa.cells]
        if any(m.denominator != 1 for m in memory) or sum(memory) != quantity.parse(
            self.memory.size
        ):
            raise ValueError(NUMA_MEMORY_MESSAGE)
        return self


# ---- status ------------------------------------------------------------------------


class VcpuPin(ApiModel):
    """One vCPU pinned to one host CPU."""

    vcpu: VcpuIndex = Field(description="Guest vCPU index.")
    pcpu: HostCpuNumber = Field(description="Host CPU number it runs on.")


class HugepageAllocation(ApiModel):
    """Huge pages taken from one host NUMA cell."""

    page_size: Quantity = Field(description="Huge page size, e.g. 2Mi.")
    count: int = Field(ge=0, description="Number of pages.")


class CellPlacement(ApiModel):
    """Where one guest NUMA cell landed on the host."""

    guest_cell: int = Field(ge=0, le=MAX_NUMA_CELLS - 1, description="Guest NUMA cell index.")
    host_cell: HostNumaCellId = Field(description="Host NUMA cell it is placed on.")
    vcpu_pins: list[VcpuPin] = Field(
        default_factory=list,
        max_length=MAX_VCPUS,
        description="vCPU to host CPU pins (dedicated policy only).",
    )
    memory: Quantity | None = Field(
        default=None, description="Guest memory taken from this host cell."
    )
    hugepages: HugepageAllocation | None = Field(
        default=None,
        description="Huge pages taken from this host cell, if the VM uses huge pages.",
    )


class PciAssignment(ApiModel):
    """One host PCI device placement claimed for the VM."""

    alias: DnsLabel = Field(description="The alias of spec.devices.pci it satisfies.")
    address: PciAddress = Field(
        description="Host PCI address, domain:bus:slot.function, e.g. 0000:3b:00.1.",
    )


SizeFingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$", max_length=16)]


class ClaimedSize(ApiModel):
    """The size placement holds for the VM on its host: what the controller checked
    against the host and claimed there (the controller writes it; the agent reads it)."""

    fingerprint: SizeFingerprint = Field(
        description=(
            "Hash of the spec's sizing parts (cpu, memory, numa, disks, devices) this claim "
            "was made for. The agent starts the domain from a spec only when its hash is "
            "this one: a changed size waits until the controller has claimed it."
        ),
    )
    vcpus: int = Field(ge=1, le=MAX_VCPUS, description="vCPUs claimed.")
    cpu_policy: CpuPolicy = Field(
        description="shared (vCPUs count against the ratio) or dedicated (pCPUs pinned)."
    )
    memory: Quantity = Field(description="Memory claimed.")
    disk: Quantity | None = Field(default=None, description="Local disk claimed.")


class PlacementStatus(ApiModel):
    """The placement decision the agent turns into domain XML (cpu pinning, numatune)."""

    size: ClaimedSize | None = Field(
        default=None,
        description=(
            "The size claimed on the host. A resize (a changed spec applied at a restart) "
            "is checked against the host and claimed before the agent starts it."
        ),
    )

    cells: list[CellPlacement] = Field(
        default_factory=list,
        max_length=MAX_NUMA_CELLS,
        description="One entry per guest NUMA cell.",
    )
    emulator_pins: list[HostCpuNumber] = Field(
        default_factory=list,
        max_length=cpuset.MAX_CPUS,
        description="Host CPUs for QEMU's emulator threads (isolateEmulatorThread).",
    )
    shared_cpus: list[HostCpuNumber] = Field(
        default_factory=list,
        max_length=cpuset.MAX_CPUS,
        description="Host CPUs the vCPUs float over (shared policy): the host's cpuSharedSet.",
    )
    pci_devices: list[PciAssignment] = Field(
        default_factory=list,
        max_length=MAX_PCI_ALIASES * MAX_PCI_DEVICES_PER_ALIAS,
        description="Host PCI devices claimed for spec.devices.pci, passed through as <hostdev>.",
    )


class DomainStatus(ApiModel):
    """The libvirt domain backing the VM, as its agent last saw it."""

    uuid: ShortText | None = Field(default=None, description="libvirt domain UUID.")
    state: ShortText | None = Field(
        default=None,
        description=(
            "libvirt domain state in lower case: nostate, running, blocked, paused, "
            "shutdown, shutoff, crashed, pmsuspended."
        ),
    )
    reason: ShortText | None = Field(
        default=None,
        description="libvirt's reason for the state, e.g. booted, user, migrated, destroyed.",
    )


class LastMigration(ApiModel):
    """The most recent completed live migration of this VM."""

    job: NameText | None = Field(default=None, description="Name of the MigrationJob.")
    source: NameText | None = Field(default=None, description="Host the VM left.")
    target: NameText | None = Field(default=None, description="Host the VM moved to.")
    completion_time: datetime | None = Field(default=None, description="When it completed.")


class Eviction(ApiModel):
    """The controller asks the agent of `host` to stop the domain so the VM can move cold."""

    host: ObjectName = Field(description="The host the VM is evicted from.")
    reason: Message = Field(description="Why, e.g. the host's maintenance.")


class ImagePull(ApiModel):
    """A disk's base image being downloaded into the host's image cache (agent-written)."""

    disk: DnsLabel = Field(description="The disk whose source is downloading.")
    url: Annotated[str, StringConstraints(max_length=MAX_URL_LENGTH)] = Field(
        description="The URL it comes from."
    )
    received_bytes: int = Field(ge=0, description="Bytes received so far (as served).")
    total_bytes: int | None = Field(
        default=None, ge=0, description="Size of the download, when the server says it."
    )
    attempts: int = Field(default=1, ge=1, description="Attempts so far, this one included.")


StorageLocation = Literal["Local", "Shared"]


class VmStorage(ApiModel):
    """Where the VM's disk overlays live (agent-written when it creates them)."""

    location: StorageLocation = Field(
        description=(
            "Local: on the host's own disk (copied by a live migration, lost with the "
            "host); Shared: in the host's declared shared storage (never copied, kept "
            "when the host is lost)."
        )
    )
    shared_storage: DnsLabel | None = Field(
        default=None, description="Name of the shared storage, when location is Shared."
    )
    host: ObjectName | None = Field(default=None, description="The host that created the overlays.")


class InterfaceStatus(ApiModel):
    """One interface on a Network, as the controller allocated it (agent and DHCP read it)."""

    name: DnsLabel = Field(description="spec.networks[].name of the interface.")
    network: ObjectName = Field(description="The Network it is on (in the VM's namespace).")
    mac_address: MacAddress = Field(
        description=(
            "Its MAC: spec.networks[].macAddress, or derived from the VM's uid and the "
            "interface name when first allocated and never changed after."
        ),
    )
    ip_addresses: list[IPv4Address] = Field(
        default_factory=list,
        max_length=MAX_INTERFACE_ADDRESSES,
        description=(
            "Its addresses, allocated from the Network's subnet; kept until the VM is deleted."
        ),
    )


class RecordedFlavor(ApiModel):
    """The flavor a VM runs, as the controller recorded it: the VM keeps this copy until
    it is next started, however the flavor changes meanwhile."""

    name: ObjectName = Field(description="Name of the flavor.")
    kind: FlavorKind = Field(description="VirtualMachineClusterFlavor or VirtualMachineFlavor.")
    revision: SizeFingerprint = Field(
        description="Hash of the flavor's spec as recorded (api.effective.revision)."
    )
    spec: FlavorSpec = Field(description="The flavor's spec as recorded.")


class VirtualMachineStatus(ApiModel):
    """Observed state of a virtual machine."""

    phase: Phase | None = Field(
        default=None,
        description=(
            "One-word lifecycle summary: Pending, Unschedulable, Scheduled, Starting, "
            "Running, Paused, Stopping, Stopped, Migrating, Failed, Terminating, Unknown."
        ),
    )
    host: ObjectName | None = Field(
        default=None,
        description="HypervisorHost the VM is bound to (set by placement).",
    )
    placement: PlacementStatus | None = Field(
        default=None,
        description="NUMA cells, CPU pins and huge pages chosen on the host.",
    )
    domain: DomainStatus | None = Field(
        default=None,
        description="The libvirt domain, as the host's agent last saw it.",
    )
    created: bool | None = Field(
        default=None,
        description="True while a libvirt domain for this VM exists on its host.",
    )
    conditions: list[Condition] = conditions_field(
        "Ready, Scheduled, Migrating, Paused, and Reconciling/Stalled as kstatus reads them."
    )
    flavor: RecordedFlavor | None = Field(
        default=None,
        description=(
            "The flavor this VM runs (spec.flavor), recorded by the controller with its "
            "spec: what placement, the agent and drains read, until the VM is next started."
        ),
    )
    observed_generation: int | None = observed_generation_field()
    restart_count: int | None = Field(
        default=None,
        ge=0,
        description="How many times the guest was restarted by its runStrategy.",
    )
    last_migration: LastMigration | None = Field(
        default=None,
        description="The most recent completed live migration.",
    )
    eviction: Eviction | None = Field(
        default=None,
        description="Set while the VM is stopped on its host to be placed elsewhere.",
    )
    image_pulls: list[ImagePull] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Downloads of the disks' source images in progress on the host (the "
            "ImagePulling condition summarises them); empty once they are cached."
        ),
    )
    storage: VmStorage | None = Field(
        default=None,
        description="Where the disk overlays live: the host's local disk or shared storage.",
    )
    interfaces: list[InterfaceStatus] = Field(
        default_factory=list,
        max_length=MAX_INTERFACES,
        description=(
            "The interfaces on Networks with their MAC and addresses, written by the "
            "controller before the VM is bound to a host."
        ),
        json_schema_extra=list_map("name"),
    )


class VirtualMachine(ApiObject):
    """A whole VirtualMachine object, for reading manifests and watch events."""

    kind: Literal["VirtualMachine"] = Field(default=KIND, description="VirtualMachine.")
    spec: VirtualMachineSpec = Field(description="Desired state.")
    status: VirtualMachineStatus | None = Field(default=None, description="Observed state.")

    @model_validator(mode="before")
    @classmethod
    def _effective_spec(cls, data: Any) -> Any:
        # Every reader of a VM (placement, drains, failover, the agent) reads the effective
        # spec: the VM's fields and its recorded flavor's, never one without the other.
        if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
            return data
        return {**data, "spec": effective.spec(data["spec"], data.get("status"))}
