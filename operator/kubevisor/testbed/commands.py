"""The command lines of kubevisor's processes, typed: `AgentOptions`, `ControllerOptions`
and `WatchdogOptions` turn into the argv that runs `kubevisor.agent.main`,
`kubevisor.handlers.main` or `kubevisor.agent.watchdog` with this interpreter.

One builder per process for every place that starts one outside a cluster: `testbed.stack`
(`kubevisor dev up`), the tests' fixtures and the benchmarks. A variant is
`dataclasses.replace(options, ...)`, not editing a list by index. An option left None is
not passed, so the process's own default applies; flags with no field here go in `extra`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kubevisor.testbed.guest import Guest

LOCAL_MIGRATE_URI = "tcp://127.0.0.1"
"""Where the testbed's hosts stream migrations: they leave libvirt's migration_host unset."""
LOOPBACK = "127.0.0.0/8"
"""For --image-source-allow: test and demo images are served on loopback, which an agent
refuses by default."""


@dataclass(frozen=True)
class AgentOptions:
    """An agent's command line (see `kubevisor.agent.main.parse_args` for each flag)."""

    host: str
    libvirt_uri: str
    kubeconfig: Path
    state_dir: Path
    image_dir: Path | None = None
    """Default: STATE_DIR/images."""
    domain_type: str | None = None
    """None: the agent picks (auto)."""
    guest: Guest | None = None
    """The tiny guest's kernel, initrd and command line, for VMs that boot it directly."""
    shutdown_grace: float | None = None
    lease_duration: int | None = None
    self_fence_after: int | None = None
    """None: the agent's default."""
    metrics_port: int | None = None
    metrics_advertise: str | None = None
    """Default on the testbed: http://127.0.0.1:METRICS_PORT/metrics, where it listens."""
    log_level: str | None = None
    migrate_uri: str | None = None
    cgroup_controllers: str | None = None
    """"" on the testbed: its libvirtd runs without cgroups (qemu.conf)."""
    qemu_conf: Path | None = None
    image_source_allow: str | None = None
    vsphere_credentials: Path | None = None
    vsphere_insecure: bool = False
    boot_dirs: Sequence[Path] = ()
    """Where tenants' boot.kernel/boot.initrd may lie (`--boot-dir`, repeated). A testbed
    host with `guest` also lets VMs name that guest's kernel and initrd, as the e2e VMs do."""
    rootfs_dirs: Sequence[Path] = ()
    """Where containers' root filesystems may lie (`--rootfs-dir`, repeated)."""
    extra: Sequence[str] = ()

    def _boot_dirs(self) -> list[Path]:
        shipped = (self.guest.kernel.parent, self.guest.initrd.parent) if self.guest else ()
        return list(dict.fromkeys([*self.boot_dirs, *shipped]))

    def _metrics_advertise(self) -> str | None:
        if self.metrics_advertise or not self.metrics_port:
            return self.metrics_advertise
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def argv(self) -> list[str]:
        """`python -m kubevisor.agent.main` with these options."""
        image_dir = self.image_dir or self.state_dir / "images"
        boot = (
            [
                *("--guest-kernel", str(self.guest.kernel)),
                *("--guest-initrd", str(self.guest.initrd)),
                *("--guest-cmdline", self.guest.cmdline),
            ]
            if self.guest
            else []
        )
        return [
            *_module("kubevisor.agent.main"),
            *("--host", self.host, "--libvirt-uri", self.libvirt_uri),
            *("--kubeconfig", str(self.kubeconfig)),
            *("--state-dir", str(self.state_dir), "--image-dir", str(image_dir)),
            *_flag("--domain-type", self.domain_type),
            *boot,
            *_flag("--shutdown-grace", self.shutdown_grace),
            *_flag("--lease-duration", self.lease_duration),
            *_flag("--self-fence-after", self.self_fence_after),
            *_flag("--metrics-port", self.metrics_port),
            *_flag("--metrics-advertise", self._metrics_advertise()),
            *_flag("--log-level", self.log_level),
            *_flag("--migrate-uri", self.migrate_uri),
            *_flag("--cgroup-controllers", self.cgroup_controllers),
            *_flag("--qemu-conf", self.qemu_conf),
            *_flag("--image-source-allow", self.image_source_allow),
            *_flag("--vsphere-credentials", self.vsphere_credentials),
            *(["--vsphere-insecure"] if self.vsphere_insecure else []),
            *(arg for path in self._boot_dirs() for arg in ("--boot-dir", str(path))),
            *(arg for path in self.rootfs_dirs for arg in ("--rootfs-dir", str(path))),
            *self.extra,
        ]


@dataclass(frozen=True)
class ControllerOptions:
    """The controller's command line (see `kubevisor.handlers.main.parse_args`)."""

    kubeconfig: Path
    standalone: bool = True
    """Without a peering; False with `peering` set runs it as the Deployment does."""
    peering: str | None = None
    priority: int | None = None
    metrics_port: int | None = None
    failover_grace: float | None = None
    lease_namespace: str | None = None
    log_level: str | None = None
    extra: Sequence[str] = ()

    def argv(self) -> list[str]:
        """`python -m kubevisor.handlers.main` with these options."""
        return [
            *_module("kubevisor.handlers.main"),
            *("--kubeconfig", str(self.kubeconfig)),
            *(["--standalone"] if self.standalone else []),
            *_flag("--peering", self.peering),
            *_flag("--priority", self.priority),
            *_flag("--metrics-port", self.metrics_port),
            *_flag("--failover-grace", self.failover_grace),
            *_flag("--lease-namespace", self.lease_namespace),
            *_flag("--log-level", self.log_level),
            *self.extra,
        ]


@dataclass(frozen=True)
class WatchdogOptions:
    """The agent's watchdog's command line (see `kubevisor.agent.watchdog.parse_args`)."""

    host: str
    libvirt_uri: str
    state_dir: Path
    """The agent's."""
    stall_after: float | None = None

    def argv(self) -> list[str]:
        """`python -m kubevisor.agent.watchdog` with these options."""
        return [
            *_module("kubevisor.agent.watchdog"),
            *("--host", self.host),
            *("--libvirt-uri", self.libvirt_uri),
            *("--state-dir", str(self.state_dir)),
            *_flag("--stall-after", self.stall_after),
        ]


def _module(name: str) -> list[str]:
    return [sys.executable, "-m", name]


def _flag(name: str, value: str | Path | float | None) -> list[str]:
    if value is None:
        return []
    # 15.0 is passed as "15": the same text a hand-written command line had.
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return [name, text]
