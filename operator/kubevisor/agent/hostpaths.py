"""The agent's edge of `core.hostpaths`: a VM's host paths resolved on this host's
filesystem (symlinks included), or the VM refused with reason HostPathRefused.

The reconciler calls `resolve_spec` before it renders a domain (also for a migration's
target), and `VmFiles` calls `image` before a base image backs an overlay.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubevisor.api.virtualmachine import VirtualMachineSpec
from kubevisor.core import hostpaths
from kubevisor.drivers.base import PermanentError


class HostPathRefused(PermanentError):
    """A host path in a VM's spec that leads outside the directories the host's admin
    allows for it; the VM fails with this reason and the refusal's message."""

    reason = "HostPathRefused"


def resolve_spec(spec: VirtualMachineSpec, allowed: hostpaths.Allowed) -> dict[str, str]:
    """The real paths of `spec`'s boot files and container root, by field (the domain's
    `HostEnvironment.host_paths`); raises HostPathRefused."""
    found = hostpaths.resolve_spec(spec, allowed, realpath=os.path.realpath)
    if isinstance(found, hostpaths.Refusal):
        raise HostPathRefused(found.message())
    return found


def image(name: str, directory: Path, *, disk: str) -> Path:
    """The real path of `disk`'s base image `name` in the image `directory`; raises
    HostPathRefused when it leads elsewhere (a symlink out of the directory)."""
    found = hostpaths.image(
        name, directory=str(directory), realpath=os.path.realpath, field=f"disks[{disk}].image"
    )
    if isinstance(found, hostpaths.Refusal):
        raise HostPathRefused(found.message())
    return Path(found)
