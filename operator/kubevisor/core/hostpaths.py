"""Which host files a VM's spec may name, and where they really are (issue 16, point 2).

A tenant names host paths in three places: `boot.kernel` and `boot.initrd` (QEMU loads
them into guest memory), `container.rootfs` (a container's /) and `disks[].image` (a base
image's name in the host's image directory). Each is used only inside a directory the
host's admin declares (`Allowed`, from the agent's flags; the image directory for
images), after normalisation and symlink resolution, so that neither `..` nor a symlink
leads out; anything else is a `Refusal` naming the field, the path and the directories
allowed, which the agent reports as the VM's condition (reason HostPathRefused).

The schema already refuses relative paths and `.`/`..` components (api.schema
ABSOLUTE_PATH); this is the check that also holds for symlinks on the host. Pure: the
caller passes `realpath` (os.path.realpath on the agent, a table in tests).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from kubevisor.api.virtualmachine import VirtualMachineSpec

Realpath = Callable[[str], str]
"""A path with every symlink resolved and `.`/`..` applied (os.path.realpath)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Allowed:
    """The host directories a tenant's paths may resolve into, as the admin declared them."""

    boot: tuple[str, ...] = ()
    """For boot.kernel and boot.initrd (the agent's --boot-dir); none: no tenant kernels."""
    rootfs: tuple[str, ...] = ()
    """For container.rootfs (the agent's --rootfs-dir); none: no containers."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A path a VM may not use on this host, and why."""

    field: str
    path: str
    resolved: str | None
    """Where the path really leads, when that is what made it refused."""
    directories: tuple[str, ...]
    flag: str
    """The agent flag that declares `directories`."""

    def message(self) -> str:
        """The VM condition's message: the field, the path and the directories allowed."""
        if not self.directories:
            return (
                f"{self.field}: {self.path} refused: this host allows no such paths (its "
                f"agent declares no {self.flag})"
            )
        where = ", ".join(self.directories)
        if self.resolved is not None and self.resolved != self.path:
            return (
                f"{self.field}: {self.path} resolves to {self.resolved}, outside the "
                f"directories this host allows ({where}; the agent's {self.flag})"
            )
        return (
            f"{self.field}: {self.path} is outside the directories this host allows "
            f"({where}; the agent's {self.flag})"
        )


def inside(path: str, directory: str) -> bool:
    """Whether `path` is strictly below `directory` (both absolute and normal)."""
    return path.startswith(directory.rstrip("/") + "/") and path != directory


def resolve(
    field: str, path: str, *, directories: tuple[str, ...], flag: str, realpath: Realpath
) -> str | Refusal:
    """Where `path` really is when that is strictly inside one of `directories` (themselves
    resolved too: an admin's directory may be a symlink), else why not."""
    refused = Refusal(field, path, None, directories, flag)
    if not directories:
        return refused
    if not path.startswith("/") or "\x00" in path:
        return refused
    real = realpath(path)
    if any(inside(real, realpath(directory)) for directory in directories):
        return real
    return Refusal(field, path, real, directories, flag)


def image(
    name: str, *, directory: str, realpath: Realpath, field: str = "disks.image"
) -> str | Refusal:
    """Where a disk's base image `name` really is when that is inside the image
    `directory`; a name is one path component, and not a hidden file (the image cache,
    `.cache`, is there too)."""
    if not name or "/" in name or name.startswith(".") or "\x00" in name:
        return Refusal(field, name, None, (directory,), "--image-dir")
    return resolve(
        field,
        posixpath.join(directory, name),
        directories=(directory,),
        flag="--image-dir",
        realpath=realpath,
    )


def spec_paths(spec: VirtualMachineSpec) -> list[tuple[str, str, str]]:
    """The host paths `spec` names outside its disks: (field, path, kind) with kind boot
    or rootfs, in the order a refusal reports the first."""
    named: list[tuple[str, str, str]] = []
    if spec.boot is not None:
        named += [("boot.kernel", spec.boot.kernel, "boot")] if spec.boot.kernel else []
        named += [("boot.initrd", spec.boot.initrd, "boot")] if spec.boot.initrd else []
    if spec.container is not None:
        named.append(("container.rootfs", spec.container.rootfs, "rootfs"))
    return named


FLAGS: Mapping[str, str] = MappingProxyType({"boot": "--boot-dir", "rootfs": "--rootfs-dir"})


def resolve_spec(
    spec: VirtualMachineSpec, allowed: Allowed, *, realpath: Realpath
) -> dict[str, str] | Refusal:
    """The real path of each host path `spec` names (boot.kernel, boot.initrd,
    container.rootfs), by field, when all are inside their allowed directories; else the
    first refusal. The agent renders the domain with these, not the spec's strings."""
    resolved: dict[str, str] = {}
    for field, path, kind in spec_paths(spec):
        directories = allowed.boot if kind == "boot" else allowed.rootfs
        found = resolve(field, path, directories=directories, flag=FLAGS[kind], realpath=realpath)
        if isinstance(found, Refusal):
            return found
        resolved[field] = found
    return resolved
