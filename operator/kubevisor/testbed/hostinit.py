"""PID 1 of one local hypervisor host: `python -m kubevisor.testbed.hostinit HOST_JSON`.

Started by `kubevisor.testbed.hosts` under `unshare --mount --uts --pid --fork`, so it runs in
fresh mount, UTS and PID namespaces. It bind-mounts the host's own directories over the
paths libvirt uses (and a synthetic /sys/devices/system/node when the host has more than
one NUMA cell, see `kubevisor.testbed.numa`; for an LXC host it hides the hybrid cgroup
layout's cgroup2, see `hybrid_cgroup2`; for a huge-page host it mounts a hugetlbfs; for a
host with a network namespace, `hosts` starts it in there and it mounts that namespace's
sysfs, see `own_sysfs`), sets the hostname, runs virtlogd and
libvirtd in the foreground, and reaps every process of the host (QEMU included). On
SIGTERM it stops libvirtd, then every other process of the namespace, then exits; when
PID 1 of a PID namespace exits the kernel kills whatever is left, so a host can never
leave a stray QEMU behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

# Mount point -> subdirectory of the host's root. /var/run is a symlink to /run on Debian.
BIND_MOUNTS = (
    ("/etc/libvirt", "etc"),
    ("/run/libvirt", "run"),
    ("/var/lib/libvirt", "lib"),
    ("/var/log/libvirt", "log"),
    ("/var/cache/libvirt", "cache"),
)
# Where systemd's hybrid cgroup layout mounts the cgroup v2 hierarchy beside the v1 ones.
HYBRID_UNIFIED = "/sys/fs/cgroup/unified"
LIBVIRTD_STOP_SECONDS = 10.0
OTHERS_STOP_SECONDS = 5.0


class _Terminate(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Terminate(signal.Signals(signum).name)


def _log(message: str) -> None:
    print(f"hostinit: {message}", flush=True)


def _reap_until(deadline: float, *, pid: int | None = None) -> bool:
    """Reap children until `pid` (or every child, when None) is gone or `deadline` passes."""
    while time.monotonic() < deadline:
        try:
            reaped, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid is not None and reaped == pid:
            return True
        if reaped == 0:
            time.sleep(0.05)
    return False


def hybrid_cgroup2(mountinfo: str) -> bool:
    """Whether /proc/self/mountinfo shows systemd's hybrid layout: cgroup v1 controllers
    plus the v2 hierarchy at HYBRID_UNIFIED.

    An LXC host unmounts that v2 hierarchy from its mount namespace, so that libvirt sees
    a pure v1 machine: libvirt 9.0's container setup bind-mounts the v2 hierarchy first, at
    the same path inside the container, and its mkdir of /sys/fs/cgroup/unified on the
    container's fresh sysfs fails ("Unable to create directory /sys/fs/cgroup/unified: No
    such file or directory") before the v1 code has put a tmpfs there (docs/lxc.md).
    """
    for line in mountinfo.splitlines():
        mount, _, filesystem = line.partition(" - ")
        fields = mount.split()
        if len(fields) > 4 and fields[4] == HYBRID_UNIFIED and filesystem.startswith("cgroup2 "):
            return True
    return False


def own_sysfs(keep: Path) -> None:
    """Mount a sysfs of the host's network namespace over /sys, keeping /sys/fs/cgroup.

    sysfs shows the network devices of the namespace that mounted it, and the host's mount
    namespace started with the machine's: libvirt reading /sys/class/net (a bridge's ports,
    a tap's settings) would see the machine's devices instead of its own. The cgroup
    mounts under /sys/fs/cgroup move over to the new sysfs (`ip netns exec` does the sysfs
    part the same way, without keeping them).
    """
    keep.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--rbind", "/sys/fs/cgroup", str(keep)], check=True)
    subprocess.run(["mount", "-t", "sysfs", "sysfs", "/sys"], check=True)
    subprocess.run(["mount", "--move", str(keep), "/sys/fs/cgroup"], check=True)


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[1]).read_text())
    root = Path(config["root"])
    for target, sub in BIND_MOUNTS:
        (root / sub).mkdir(parents=True, exist_ok=True)
        Path(target).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", str(root / sub), target], check=True)
    # The hostname must resolve, or libvirtd's getHostname waits on DNS for every call.
    subprocess.run(["mount", "--bind", str(root / "hosts"), "/etc/hosts"], check=True)
    if config.get("netns"):
        own_sysfs(root / "sys-cgroup")
    if config.get("sysfs_node"):
        # Before libvirtd starts: libnuma counts the nodes once, when libvirtd loads it.
        subprocess.run(
            ["mount", "--bind", config["sysfs_node"], "/sys/devices/system/node"], check=True
        )
    if config.get("hugetlbfs"):
        # Before libvirtd starts: its QEMU driver checks hugetlbfs_mount once, then.
        subprocess.run(
            ["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "hugetlbfs", config["hugetlbfs"]],
            check=True,
        )
    if config.get("lxc") and hybrid_cgroup2(Path("/proc/self/mountinfo").read_text()):
        subprocess.run(["umount", HYBRID_UNIFIED], check=True)
        _log(f"unmounted {HYBRID_UNIFIED} for libvirt LXC")
    socket.sethostname(config["hostname"])

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    libvirtd = 0
    try:
        # virtlogd first: QEMU's stdout/stderr and file-backed serial ports go through it.
        virtlogd = subprocess.Popen(
            ["virtlogd", "-f", "/etc/libvirt/virtlogd.conf", "-p", "/run/libvirt/virtlogd.pid"]
        ).pid
        libvirtd = subprocess.Popen(
            [
                "libvirtd",
                "-f",
                "/etc/libvirt/libvirtd.conf",
                "--listen",
                "-p",
                "/run/libvirt/libvirtd.pid",
            ]
        ).pid
        _log(f"{config['hostname']}: virtlogd {virtlogd}, libvirtd {libvirtd}")
        while True:
            pid, status = os.wait()
            if pid in (virtlogd, libvirtd):
                _log(f"pid {pid} exited with status {status}; stopping the host")
                break
    except _Terminate as signalled:
        _log(f"{signalled}: stopping the host")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    if libvirtd:
        with contextlib.suppress(ProcessLookupError):
            os.kill(libvirtd, signal.SIGTERM)
        _reap_until(time.monotonic() + LIBVIRTD_STOP_SECONDS, pid=libvirtd)
    # kill(-1) from PID 1 of a PID namespace reaches every other process of that namespace
    # and nothing outside it.
    for sig, seconds in ((signal.SIGTERM, OTHERS_STOP_SECONDS), (signal.SIGKILL, 5.0)):
        try:
            os.kill(-1, sig)
        except ProcessLookupError:
            break
        if _reap_until(time.monotonic() + seconds):
            break
    _log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
