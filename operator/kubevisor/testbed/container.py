"""The testbed's tiny system container: a busybox root filesystem for libvirt LXC.

What `spec.container.rootfs` points at in driver tests and on a local LXC host
(`kubevisor.testbed.hosts` with lxc=True). Its init, `HEARTBEAT_INIT`, leaves evidence in
files under the root filesystem, which the host reads directly: a container has no serial
log, and its console is only a pty.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kubevisor.core.domain.host import IdRange
from kubevisor.testbed.guest import BUSYBOX

APPLETS = ("sh", "sleep", "cat", "grep", "echo", "ls", "mount", "ps", "mkdir")
# Mount points libvirt LXC fills in (proc, sys, dev) or the init writes to (run).
DIRECTORIES = ("bin", "dev", "proc", "sys", "tmp", "run/kubevisor", "etc")
STATE = Path("run/kubevisor")
"""Where HEARTBEAT_INIT writes, relative to the root filesystem."""

HEARTBEAT_INIT = [
    "/bin/sh",
    "-c",
    # MemTotal in a libvirt LXC container is its memory limit (libvirt's FUSE meminfo).
    # The trap runs once the current sleep ends, so a shutdown takes at most 0.2 s.
    "trap 'echo stopped > /run/kubevisor/stopped; exit 0' TERM; "
    "grep MemTotal /proc/meminfo > /run/kubevisor/meminfo; "
    "ls /sys/class/net > /run/kubevisor/net; "
    "cat /proc/self/uid_map > /run/kubevisor/uid_map; "
    "n=0; while :; do n=$((n+1)); echo $n > /run/kubevisor/beat; sleep 0.2; done",
]
"""A PID 1 that records its memory limit, network interfaces and user namespace's uid map,
counts while it runs, and exits on SIGTERM."""


UNPRIVILEGED = IdRange()
"""The host ids an agent maps a container's to by default (its user namespace)."""


def build_rootfs(directory: Path, *, ids: IdRange | None = UNPRIVILEGED) -> Path:
    """Write a root filesystem with a static busybox under `directory`; return it.

    Its files belong to the host ids a container's root maps to (`ids`, the agent's
    default user namespace unless given; None: the host's root, for a privileged
    container), as an admin prepares a root filesystem for unprivileged containers: the
    container's root can write its own files and no one else's. Needs Debian's
    busybox-static (`guest.HOW_TO_INSTALL`): the container has no libraries.
    """
    for sub in DIRECTORIES:
        (directory / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, directory / "bin" / "busybox")
    for applet in APPLETS:
        link = directory / "bin" / applet
        if not link.is_symlink():
            link.symlink_to("busybox")
    owner = 0 if ids is None else ids.start
    for path in [directory, *directory.rglob("*")]:
        os.lchown(path, owner, owner)
    return directory


@contextlib.contextmanager
def traversable_directory() -> Iterator[Path]:
    """A new directory for root filesystems, removed afterwards, that a container's mapped
    root can reach: it and every directory above it let others pass (pytest's temporary
    directories are root's alone, 0700, and libvirt_lxc sets up the root filesystem as the
    mapped root)."""
    path = Path(tempfile.mkdtemp(prefix="kubevisor-rootfs-", dir="/var/tmp"))
    try:
        path.chmod(0o711)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def uid_map(rootfs: Path) -> list[tuple[int, int, int]]:
    """The container's /proc/self/uid_map as HEARTBEAT_INIT recorded it: (inside, host,
    count) per line; [(0, 0, 4294967295)] for no user namespace."""
    lines = _read(rootfs / STATE / "uid_map").splitlines()
    return [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in lines)]


def beats(rootfs: Path) -> int:
    """How far HEARTBEAT_INIT has counted (0 before its first beat)."""
    text = _read(rootfs / STATE / "beat")
    return int(text) if text.isdigit() else 0


def memory_kib(rootfs: Path) -> int | None:
    """The memory the container saw as MemTotal, once HEARTBEAT_INIT has recorded it."""
    fields = _read(rootfs / STATE / "meminfo").split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


def interfaces(rootfs: Path) -> list[str]:
    """The network interfaces the container saw when HEARTBEAT_INIT started."""
    return _read(rootfs / STATE / "net").split()


def stopped(rootfs: Path) -> bool:
    """Whether HEARTBEAT_INIT got its SIGTERM and exited."""
    return (rootfs / STATE / "stopped").exists()


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
