"""core.hostpaths: a tenant's host paths resolve only inside the admin's directories,
after normalisation and symlinks (issue 16, point 2). `realpath` is a table of symlinks."""

from __future__ import annotations

import posixpath
from typing import Any

import pytest

from kubevisor.api.virtualmachine import VirtualMachineSpec
from kubevisor.core import hostpaths
from kubevisor.core.hostpaths import Allowed, Refusal

LINKS = {
    "/srv/boot/shadow": "/etc/shadow",
    "/srv/boot/current": "/srv/boot/vmlinuz-6.1",
    "/srv/boot/up": "/srv",
    "/srv/boot/self": "/srv/boot",
    "/boot-link": "/srv/boot",
    "/srv/images/escape.qcow2": "/dev/sda",
    "/srv/images/mirror.qcow2": "/srv/images/debian.qcow2",
}


def realpath(path: str) -> str:
    """os.path.realpath over the symlinks in LINKS."""
    path = posixpath.normpath(path)
    moved = True
    while moved:
        moved = False
        for link, target in LINKS.items():
            if path == link or path.startswith(link + "/"):
                path, moved = posixpath.normpath(target + path[len(link) :]), True
    return path


BOOT = ("/srv/boot",)


@pytest.mark.parametrize(
    ("path", "directories", "expected"),
    [
        pytest.param("/srv/boot/vmlinuz", BOOT, "/srv/boot/vmlinuz", id="a-file-in-the-directory"),
        pytest.param(
            "/srv/boot/current", BOOT, "/srv/boot/vmlinuz-6.1", id="a-symlink-within-resolved"
        ),
        pytest.param(
            "/boot-link/vmlinuz", BOOT, "/srv/boot/vmlinuz", id="through-a-symlink-to-the-directory"
        ),
        pytest.param(
            "/srv/boot/vmlinuz", ("/boot-link",), "/srv/boot/vmlinuz", id="the-directory-a-symlink"
        ),
        pytest.param(
            "/srv/boot/x", ("/other", "/srv/boot/"), "/srv/boot/x", id="the-second-of-two"
        ),
        pytest.param("/srv/boot/../../etc/shadow", BOOT, "/etc/shadow", id="dot-dot-out"),
        pytest.param("/srv/boot/shadow", BOOT, "/etc/shadow", id="a-symlink-leading-out"),
        pytest.param("/srv/boot/up/secret", BOOT, "/srv/secret", id="a-symlink-to-the-parent"),
        pytest.param("/srv/boot/self", BOOT, "/srv/boot", id="the-directory-itself"),
        pytest.param("/srv/boot", BOOT, "/srv/boot", id="the-directory-named"),
        pytest.param("/srv/bootleg/vmlinuz", BOOT, "/srv/bootleg/vmlinuz", id="a-sibling-prefix"),
        pytest.param("/etc/shadow", BOOT, "/etc/shadow", id="a-host-file"),
        pytest.param("../../etc/shadow", BOOT, None, id="relative"),
        pytest.param("/srv/boot/a\x00b", BOOT, None, id="nul"),
        pytest.param("/srv/boot/vmlinuz", (), None, id="no-directory-declared"),
    ],
)
def test_resolve(path: str, directories: tuple[str, ...], expected: str | None) -> None:
    found = hostpaths.resolve(
        "boot.kernel", path, directories=directories, flag="--boot-dir", realpath=realpath
    )
    inside = expected is not None and any(
        hostpaths.inside(expected, realpath(d)) for d in directories
    )
    if inside:
        assert found == expected
    else:
        assert isinstance(found, Refusal)
        assert (found.field, found.path, found.resolved) == ("boot.kernel", path, expected)


@pytest.mark.parametrize(
    ("refusal", "message"),
    [
        pytest.param(
            Refusal("boot.kernel", "/srv/boot/shadow", "/etc/shadow", BOOT, "--boot-dir"),
            "boot.kernel: /srv/boot/shadow resolves to /etc/shadow, outside the directories "
            "this host allows (/srv/boot; the agent's --boot-dir)",
            id="resolved-elsewhere",
        ),
        pytest.param(
            Refusal("boot.kernel", "/etc/shadow", "/etc/shadow", BOOT, "--boot-dir"),
            "boot.kernel: /etc/shadow is outside the directories this host allows "
            "(/srv/boot; the agent's --boot-dir)",
            id="outside",
        ),
        pytest.param(
            Refusal("container.rootfs", "/", None, (), "--rootfs-dir"),
            "container.rootfs: / refused: this host allows no such paths (its agent declares "
            "no --rootfs-dir)",
            id="none-declared",
        ),
    ],
)
def test_a_refusal_names_the_field_the_path_and_the_directories(
    refusal: Refusal, message: str
) -> None:
    assert refusal.message() == message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("debian.qcow2", "/srv/images/debian.qcow2", id="a-name"),
        pytest.param("mirror.qcow2", "/srv/images/debian.qcow2", id="a-symlink-within"),
        pytest.param("escape.qcow2", None, id="a-symlink-leading-out"),
        pytest.param("../etc/shadow", None, id="a-path"),
        pytest.param("..", None, id="dot-dot"),
        pytest.param(".cache", None, id="hidden-the-image-cache"),
        pytest.param("", None, id="empty"),
    ],
)
def test_image(name: str, expected: str | None) -> None:
    found = hostpaths.image(name, directory="/srv/images", realpath=realpath)
    if expected is None:
        assert isinstance(found, Refusal) and found.field == "disks.image"
    else:
        assert found == expected


def spec(**fields: Any) -> VirtualMachineSpec:
    return VirtualMachineSpec.model_validate({"memory": {"size": "64Mi"}, **fields})


@pytest.mark.parametrize(
    ("vm", "allowed", "expected"),
    [
        pytest.param(spec(), Allowed(), {}, id="no-host-paths-nothing-to-allow"),
        pytest.param(
            spec(boot={"kernel": "/srv/boot/current", "initrd": "/boot-link/initrd"}),
            Allowed(boot=BOOT),
            {"boot.kernel": "/srv/boot/vmlinuz-6.1", "boot.initrd": "/srv/boot/initrd"},
            id="kernel-and-initrd-resolved",
        ),
        pytest.param(
            spec(boot={"kernel": "/srv/boot/vmlinuz", "initrd": "/srv/boot/shadow"}),
            Allowed(boot=BOOT),
            "boot.initrd: /srv/boot/shadow resolves to /etc/shadow",
            id="the-initrd-leads-out",
        ),
        pytest.param(
            spec(container={"rootfs": "/srv/ct/web"}, hypervisor={"type": "lxc"}),
            Allowed(boot=("/srv/ct",)),
            "container.rootfs: /srv/ct/web refused: this host allows no such paths (its "
            "agent declares no --rootfs-dir)",
            id="rootfs-not-in-the-boot-directories",
        ),
        pytest.param(
            spec(container={"rootfs": "/srv/ct/web"}, hypervisor={"type": "lxc"}),
            Allowed(rootfs=("/srv/ct",)),
            {"container.rootfs": "/srv/ct/web"},
            id="rootfs-resolved",
        ),
    ],
)
def test_resolve_spec(
    vm: VirtualMachineSpec, allowed: Allowed, expected: dict[str, str] | str
) -> None:
    found = hostpaths.resolve_spec(vm, allowed, realpath=realpath)
    if isinstance(expected, str):
        assert isinstance(found, Refusal)
        assert found.message().startswith(expected)
    else:
        assert found == expected
