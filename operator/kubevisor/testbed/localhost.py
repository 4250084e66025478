"""One local hypervisor host as `kubevisor.testbed.hosts` starts it: its identity, ports
and namespaces, and where its files are (`state_dir/<name>/`).

Read by the hosts' users (test fixtures, `kubevisor dev hosts`) for its URIs and logs;
`hosts` builds it from its `host.json` and re-exports it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class LocalHost:
    """One local libvirtd "hypervisor host" and where its files are."""

    name: str
    hostname: str
    uuid: str
    tcp_port: int
    migration_ports: tuple[int, int]
    root: Path
    pid: int | None = None  # PID 1 of the host's namespaces, as seen from outside
    numa_cells: int = 1
    """NUMA cells libvirt reports; more than 1 is a synthetic split of this machine."""
    lxc: bool = False
    """Whether the host is set up to run libvirt LXC containers (lxc_uri)."""
    hugepages: bool = False
    """Whether the host mounts a hugetlbfs (`hugetlbfs`) for huge-page guests."""
    netns: str | None = None
    """The host's network namespace (in /run/netns) when it has one of its own."""
    underlay_address: str | None = None
    """The host's address on the underlay (in `netns`), when it has a namespace."""

    @property
    def uri(self) -> str:
        """Where this machine's clients reach the host's libvirtd (the agent's --libvirt-uri)."""
        if self.netns:
            return self.unix_uri
        return f"qemu+tcp://127.0.0.1:{self.tcp_port}/system"

    @property
    def unix_uri(self) -> str:
        """The host's libvirtd over its UNIX socket, as an agent on the host reaches it: the
        only transport that passes file descriptors (virDomainOpenGraphicsFD, the VNC
        display)."""
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def lxc_uri(self) -> str:
        """The same libvirtd's LXC driver."""
        if self.netns:
            return f"lxc+unix:///?socket={self.socket}"
        return f"lxc+tcp://127.0.0.1:{self.tcp_port}/"

    @property
    def migration_uri(self) -> str:
        """Where other hosts' libvirtd reach this one for a peer-to-peer migration (the
        agent's --migration-uri)."""
        if self.netns:
            return f"qemu+tcp://{self.underlay_address}:{self.tcp_port}/system"
        return self.uri

    @property
    def migrate_uri(self) -> str:
        """Where this host's QEMU receives migration streams (the agent's --migrate-uri)."""
        return f"tcp://{self.underlay_address if self.netns else '127.0.0.1'}"

    @property
    def socket(self) -> Path:
        """libvirtd's read-write UNIX socket: the host's /run/libvirt is this directory."""
        return self.root.resolve() / "run" / "libvirt-sock"

    @property
    def log_dir(self) -> Path:
        """/var/log/libvirt of the host: libvirtd.log, virtlogd.log, qemu/<domain>.log."""
        return self.root / "log"

    @property
    def init_log(self) -> Path:
        return self.root / "init.log"

    @property
    def config_file(self) -> Path:
        return self.root / "host.json"

    @property
    def pid_file(self) -> Path:
        return self.root / "init.pid"

    @property
    def migration_tls_dir(self) -> Path:
        """qemu.conf's migrate_tls_x509_cert_dir: empty, so migrations go over plain TCP,
        until a test puts certificates in it and migrates with TLS."""
        return self.root / "pki" / "qemu"

    @property
    def hugetlbfs(self) -> Path:
        """Where a host started with `hugepages` mounts its hugetlbfs (2 MiB pages), seen
        from its own mount namespace; qemu.conf's hugetlbfs_mount points there."""
        return self.root / "hugepages"

    @property
    def sysfs_node(self) -> Path:
        """The synthetic /sys/devices/system/node of a host with more than one cell."""
        return self.root / "sysfs-node"
