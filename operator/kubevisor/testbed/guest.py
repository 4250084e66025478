"""The tiny guest that tests and `kubevisor dev` boot: a Debian cloud kernel, busybox initramfs.

`build_guest(cache_dir)` is called by test fixtures and by `kubevisor dev guest build`. It
copies the installed linux-image-cloud-amd64 kernel and writes an initramfs holding
busybox-static, the two kernel modules that make ACPI power-button presses reach user space
(evdev, then button), and an /init that prints `MARKER` on the serial console, then prints
`kubevisor-counter N` with N increasing every half second (so a test can tell the guest is
alive, e.g. after a live migration), and powers off when the power button is pressed (so a
graceful ACPI shutdown completes without a destroy).

When the guest has a virtio disk (/dev/vda), /init keeps a token on it: 64 bytes at offset
512 holding `kubevisor-token <uuid>`, written at the first boot and kept by later ones.
Every few counter ticks it drops its caches, reads the token from the disk again and prints
`kubevisor-disk-token <uuid>`, so a test sees what the disk holds now (e.g. that a disk
copied by a live migration still holds what the guest wrote before).

Nothing is downloaded: the kernel, its modules and busybox come from Debian packages. The
cpio archive is written here (newc format) so no root or mknod is needed for /dev/console.
The result is cached under `cache_dir`, keyed by kernel version and a hash of this builder.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import lzma
import os
import shutil
import stat
import subprocess
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

MARKER = "KUBEVISOR-GUEST-READY"
POWEROFF_MARKER = "KUBEVISOR-GUEST-POWEROFF"
COUNTER_PREFIX = "kubevisor-counter "
DISK_TOKEN_PREFIX = "kubevisor-disk-token "
TOKEN_OFFSET = 512  # bytes into /dev/vda: past the first sector, which boot code may read
TOKEN_TICKS = 4  # counter ticks (half seconds) between two reads of the disk token
CMDLINE = "console=ttyS0 quiet panic=-1"
BUSYBOX = Path("/bin/busybox")
# Loaded in this order, each after the modules it depends on (modules.dep of the cloud kernel).
MODULES = (
    "kernel/drivers/input/evdev.ko",
    "kernel/drivers/acpi/button.ko",
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
)
HOW_TO_INSTALL = "apt-get install linux-image-cloud-amd64 busybox-static (or run hack/setup.sh)"

# Shell functions of /init, separate so tests can run them on a file with the same busybox.
# `disk_token DEV` prints the token on DEV, or fails when there is none; `keep_disk_token DEV`
# writes a new one unless DEV already holds one. The block is 64 bytes, NUL-padded
# (conv=sync), so whatever the disk held there before cannot run into the token's line.
DISK_TOKEN_FUNCTIONS = f"""disk_token() {{
  line=$(dd if="$1" bs=64 skip={TOKEN_OFFSET // 64} count=1 2>/dev/null | tr -d '\\000' | head -n 1)
  case "$line" in
    "kubevisor-token "*) token=${{line#kubevisor-token }} ;;
    *) return 1 ;;
  esac
  case "$token" in
    *[!0-9a-f-]*) return 1 ;;
  esac
  [ ${{#token}} -eq 36 ] && echo "$token"
}}
keep_disk_token() {{
  disk_token "$1" >/dev/null && return 0
  printf 'kubevisor-token %s\\n' "$(cat /proc/sys/kernel/random/uuid)" |
    dd of="$1" bs=64 seek={TOKEN_OFFSET // 64} count=1 iflag=fullblock conv=notrunc,sync 2>/dev/null
  sync
}}
"""

# Loading evdev before button matters: button registers an input device, and acpid reads the
# power-button event from /dev/input/event*. acpid runs the PWRF/00000080 script on it; it
# stays in the foreground (-f) because its default log file, /var/log/acpid.log, cannot be
# opened in the initramfs and a daemonised acpid exits on that. virtio_blk probes the disks
# while insmod runs, so /dev/vda exists (or never will) once the loop is done.
# The token is read after dropping the page cache and the disk's buffers: a read must reach
# the disk, or it would show what the guest cached, not what the disk holds.
INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {" ".join(f"/lib/modules/{Path(m).name}" for m in MODULES)}; do insmod "$m"; done
acpid -f -l /dev/null -c /etc/acpi &
{DISK_TOKEN_FUNCTIONS}[ -b /dev/vda ] && keep_disk_token /dev/vda
echo "{MARKER} $(uname -r) $(hostname)"
n=0
while true; do
  n=$((n + 1))
  echo "{COUNTER_PREFIX}$n"
  if [ -b /dev/vda ] && [ $((n % {TOKEN_TICKS})) -eq 0 ]; then
    sync
    echo 3 > /proc/sys/vm/drop_caches
    blockdev --flushbufs /dev/vda
    token=$(disk_token /dev/vda) && echo "{DISK_TOKEN_PREFIX}$token"
  fi
  sleep 0.5
done
"""

POWER_BUTTON = f"""#!/bin/sh
echo "{POWEROFF_MARKER}" > /dev/console
poweroff -f
"""


class GuestBuildError(RuntimeError):
    """The guest cannot be built on this machine (missing kernel, modules or busybox)."""


@dataclasses.dataclass(frozen=True)
class Guest:
    """A bootable guest: direct kernel boot of `kernel` with `initrd` and `cmdline`."""

    kernel: Path
    initrd: Path
    cmdline: str
    kernel_version: str

    def domain_xml(
        self,
        *,
        name: str,
        serial_log: Path,
        uuid: str | None = None,
        memory_mib: int = 96,
        vcpus: int = 1,
        domain_type: str = "qemu",
        disk: Path | None = None,
    ) -> str:
        """Libvirt domain XML booting this guest, its serial console appended to `serial_log`.

        For the testbed and driver tests only; the agent's domain XML comes from core.domain.
        `domain_type` is "qemu" (TCG) unless the caller has proven KVM works. `disk`, a
        qcow2 file, becomes the guest's /dev/vda (where /init keeps its disk token).
        """
        domain = ET.Element("domain", type=domain_type)
        ET.SubElement(domain, "name").text = name
        ET.SubElement(domain, "uuid").text = uuid or str(uuidlib.uuid4())
        ET.SubElement(domain, "memory", unit="MiB").text = str(memory_mib)
        ET.SubElement(domain, "vcpu").text = str(vcpus)
        os_el = ET.SubElement(domain, "os")
        ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
        ET.SubElement(os_el, "kernel").text = str(self.kernel)
        ET.SubElement(os_el, "initrd").text = str(self.initrd)
        ET.SubElement(os_el, "cmdline").text = self.cmdline
        features = ET.SubElement(domain, "features")
        ET.SubElement(features, "acpi")
        ET.SubElement(domain, "on_poweroff").text = "destroy"
        ET.SubElement(domain, "on_reboot").text = "restart"
        ET.SubElement(domain, "on_crash").text = "destroy"
        devices = ET.SubElement(domain, "devices")
        if disk is not None:
            disk_el = ET.SubElement(devices, "disk", type="file", device="disk")
            ET.SubElement(disk_el, "driver", name="qemu", type="qcow2")
            ET.SubElement(disk_el, "source", file=str(disk))
            ET.SubElement(disk_el, "target", dev="vda", bus="virtio")
        serial = ET.SubElement(devices, "serial", type="file")
        ET.SubElement(serial, "source", path=str(serial_log), append="on")
        ET.SubElement(serial, "target", port="0")
        ET.SubElement(devices, "memballoon", model="none")
        return ET.tostring(domain, encoding="unicode")


def installed_kernels(boot: Path = Path("/boot")) -> list[str]:
    """Versions of the installed cloud kernels whose modules are present, newest last."""
    versions = [p.name.removeprefix("vmlinuz-") for p in boot.glob("vmlinuz-*-cloud-amd64")]
    present = [v for v in versions if Path("/lib/modules", v).is_dir()]
    return sorted(present, key=_version_key)


def build_guest(cache_dir: Path, *, kernel_version: str | None = None) -> Guest:
    """Build (or reuse from `cache_dir`) the guest for `kernel_version` (default: newest)."""
    versions = installed_kernels()
    if kernel_version is None:
        if not versions:
            raise GuestBuildError(f"no cloud kernel in /boot: {HOW_TO_INSTALL}")
        kernel_version = versions[-1]
    if not BUSYBOX.is_file():
        raise GuestBuildError(f"{BUSYBOX} is missing: {HOW_TO_INSTALL}")
    out = cache_dir / f"{kernel_version}-{_builder_hash()}"
    guest = Guest(
        kernel=out / "vmlinuz",
        initrd=out / "initrd.gz",
        cmdline=CMDLINE,
        kernel_version=kernel_version,
    )
    if guest.kernel.is_file() and guest.initrd.is_file():
        return guest
    tmp = cache_dir / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(Path("/boot", f"vmlinuz-{kernel_version}"), tmp / "vmlinuz")
    (tmp / "initrd.gz").write_bytes(gzip.compress(_initramfs(kernel_version), mtime=0))
    try:
        tmp.rename(out)
    except OSError:
        # Another builder won the race; its result is identical.
        shutil.rmtree(tmp, ignore_errors=True)
    return guest


def _initramfs(kernel_version: str) -> bytes:
    modules_dir = Path("/lib/modules", kernel_version)
    entries: list[_Entry] = [
        _Entry.directory(d)
        for d in ("bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules", "etc", "etc/acpi")
    ]
    entries += [
        _Entry.directory("etc/acpi/PWRF"),
        _Entry.char_device("dev/console", major=5, minor=1),
        _Entry.file("bin/busybox", BUSYBOX.read_bytes(), mode=0o755),
        _Entry.file("init", INIT.encode(), mode=0o755),
        _Entry.file("etc/acpi/PWRF/00000080", POWER_BUTTON.encode(), mode=0o755),
    ]
    for module in MODULES:
        data = _read_module(modules_dir / module)
        entries.append(_Entry.file(f"lib/modules/{Path(module).name}", data, mode=0o644))
    return _cpio_newc(entries)


def _read_module(path: Path) -> bytes:
    """The module uncompressed: busybox insmod cannot load .ko.xz or .ko.zst files."""
    if path.is_file():
        return path.read_bytes()
    xz = path.with_name(path.name + ".xz")
    if xz.is_file():
        return lzma.decompress(xz.read_bytes())
    zst = path.with_name(path.name + ".zst")
    if zst.is_file() and shutil.which("zstd"):
        return subprocess.run(["zstd", "-dc", str(zst)], check=True, capture_output=True).stdout
    raise GuestBuildError(f"kernel module {path} is missing: {HOW_TO_INSTALL}")


@dataclasses.dataclass(frozen=True)
class _Entry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @classmethod
    def directory(cls, name: str) -> _Entry:
        return cls(name, stat.S_IFDIR | 0o755)

    @classmethod
    def file(cls, name: str, data: bytes, *, mode: int) -> _Entry:
        return cls(name, stat.S_IFREG | mode, data)

    @classmethod
    def char_device(cls, name: str, *, major: int, minor: int) -> _Entry:
        return cls(name, stat.S_IFCHR | 0o600, rdev=(major, minor))


def _cpio_newc(entries: Iterable[_Entry]) -> bytes:
    """An uncompressed cpio archive in the "newc" format the kernel unpacks into rootfs."""
    out = io.BytesIO()
    for ino, entry in enumerate([*entries, _Entry("TRAILER!!!", 0)], start=1):
        name = entry.name.encode() + b"\0"
        fields = (
            ino,
            entry.mode,
            0,  # uid
            0,  # gid
            2 if stat.S_ISDIR(entry.mode) else 1,  # nlink
            0,  # mtime: fixed, so the archive is reproducible
            len(entry.data),
            0,  # dev major
            0,  # dev minor
            entry.rdev[0],
            entry.rdev[1],
            len(name),
            0,  # check
        )
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.write(name)
        out.write(b"\0" * (-out.tell() % 4))
        out.write(entry.data)
        out.write(b"\0" * (-out.tell() % 4))
    return out.getvalue()


def _builder_hash() -> str:
    """Changes whenever what goes into the initramfs changes: this file or busybox."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    busybox = BUSYBOX.stat() if BUSYBOX.exists() else None
    digest.update(f"{busybox.st_size}:{busybox.st_mtime_ns}".encode() if busybox else b"")
    return digest.hexdigest()[:12]


def _version_key(version: str) -> tuple[int, ...]:
    numbers = version.replace("-", ".").split(".")
    return tuple(int(n) for n in numbers if n.isdigit())
