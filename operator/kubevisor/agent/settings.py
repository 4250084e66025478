"""The agent's settings: read once at start-up (from the command line), passed down."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from kubevisor.api.wire import SYSTEM_NAMESPACE
from kubevisor.core import destinations, hostpaths, hosts
from kubevisor.core.domain.host import BootFiles, DomainType, IdRange


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Read once at start-up (from the command line) and passed down as a value."""

    host: str
    domain_type: DomainType
    state_dir: Path
    domain_type_message: str | None = None
    """Why the agent runs `domain_type` and not a faster type the host offers (KVM)."""
    image_dir: Path
    default_boot: BootFiles | None = None
    cgroup_controllers: frozenset[str] | None = None
    """cgroup controllers libvirt uses for VMs on this host (qemu.conf); None: unknown."""
    qemu_conf: Path | None = None
    """The host's qemu.conf, read for what libvirt does not report (seccomp_sandbox)."""
    lease_namespace: str = SYSTEM_NAMESPACE
    lease_duration: int = hosts.DEFAULT_LEASE_DURATION
    self_fence_after: int | None = 60
    """Seconds without a renewed Lease after which the agent destroys its guests
    (`agent.selffence`); None: never."""
    shutdown_grace: float = 30.0
    resync_interval: float = 300.0
    workers: int = 4
    migration_uri: str | None = None
    """libvirt URI other hosts' libvirtd reach this one at (default: the agent's own)."""
    migrate_uri: str | None = None
    """Where this host's QEMU receives migrations, e.g. tcp://10.0.0.2 (default: libvirt's)."""
    console_endpoint: str | None = None
    """URL of this agent's serial console endpoint (status.consoleEndpoint); None: off."""
    metrics_endpoint: str | None = None
    """URL of this agent's /metrics (status.metricsEndpoint, for `kubevisor top`); None: off."""
    image_cache_max_bytes: int = 50 << 30
    """Unused cached images are evicted, oldest last use first, while the cache is larger."""
    image_cache_max_unused: float = 86400.0
    """Seconds after its last use an unused cached image is evicted."""
    host_paths: hostpaths.Allowed = dataclasses.field(default_factory=hostpaths.Allowed)
    """Directories a VM's boot files and container root may be in (--boot-dir, --rootfs-dir)."""
    container_ids: IdRange | None = dataclasses.field(default_factory=IdRange)
    """Host ids a container's ids map to; None: privileged containers allowed."""
    image_sources: destinations.Policy = dataclasses.field(default_factory=destinations.Policy)
    """Where image downloads may connect, and the largest image accepted."""
    tunnel_ip: IPv4Address | None = None
    """This host's address on the underlay for overlay Networks (VXLAN), reported in
    status.network.tunnelEndpoint; None: the host takes no VMs on overlay Networks."""
    underlay_mtu: int = 1500
    """The underlay's MTU: overlay guests are told 50 bytes less by DHCP."""
    network_netns: str | None = None
    """The named network namespace that is this host's data plane (testbed hosts sharing
    one machine); None: the agent's own."""
    dhcp_namespace_prefix: str = "kvdhcp-"
    """Prefix of the DHCP servers' network namespaces (machine-wide names)."""
