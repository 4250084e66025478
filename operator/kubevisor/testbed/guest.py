"""The tiny guest that tests and `kubevisor dev` boot: a Debian cloud kernel, busybox initramfs.

`build_guest(cache_dir)` is called by test fixtures and by `kubevisor dev guest build`. It
copies the installed linux-image-cloud-amd64 kernel and writes an initramfs holding
busybox-static, the two kernel modules that make ACPI power-button presses reach user space
(evdev, then button), and an /init that prints `MARKER` on the serial console (and, white
on red, on the cleared VGA text screen, tty1: `SCREEN_COLOUR`, for tests of the VNC
display), then prints
`kubevisor-counter N` with N increasing every half second (so a test can tell the guest is
alive, e.g. after a live migration), and powers off when the power button is pressed (so a
graceful ACPI shutdown completes without a destroy).

When the guest has a virtio disk (/dev/vda), /init keeps a token on it: 64 bytes at offset
512 holding `kubevisor-token <uuid>`, written at the first boot and kept by later ones.
Every few counter ticks it drops its caches, reads the token from the disk again and prints
`kubevisor-disk-token <uuid>`, so a test sees what the disk holds now (e.g. that a disk
copied by a live migration still holds what the guest wrote before).

Networking: virtio_net is loaded; every NIC (eth*) is brought up and runs `udhcpc`, whose
script configures the leased address, default route and hostname and prints
`kubevisor-net bound|renew IFACE MAC ADDRESS/PREFIX` on the console. busybox `httpd`
serves, on port 80, `/` (hostname, the domain's UUID, each NIC's MAC and addresses, and
the client's address) and `/cgi-bin/peer` (the client's address only); busybox `ping`,
`nc` and `wget` are there for tests to use.

Commands without a login: /init turns the console's echo off and reads it line by line.
Every line it reads is printed back whole (so a terminal still sees what was typed, as with
the line discipline's echo, but never interleaved with other output); a line
`kubevisor-run ID BASE64` runs the decoded shell command in the background and prints each
output line as `kubevisor-out ID LINE`, then `kubevisor-exit ID CODE`. An ID runs once,
however often its line arrives, so a sender may repeat a line it saw no echo of.
`command_line` and `command_result` are the two ends of that protocol; the testbed's
`guestshell` speaks it over libvirt's console stream.

Nothing is downloaded: the kernel, its modules and busybox come from Debian packages. The
cpio archive is written here (newc format) so no root or mknod is needed for /dev/console.
The result is cached under `cache_dir`, keyed by kernel version and a hash of this builder.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path

MARKER = "KUBEVISOR-GUEST-READY"
POWEROFF_MARKER = "KUBEVISOR-GUEST-POWEROFF"
SCREEN_COLOUR = (170, 0, 0)
"""The VGA text mode's red (colour 4), which the marker's line on tty1 is painted in."""
COUNTER_PREFIX = "kubevisor-counter "
DISK_TOKEN_PREFIX = "kubevisor-disk-token "
NET_PREFIX = "kubevisor-net "
RUN_PREFIX = "kubevisor-run "
OUT_PREFIX = "kubevisor-out "
EXIT_PREFIX = "kubevisor-exit "
COMMAND_DIR = "/tmp/kv"
"""Where the guest keeps each command's script, output (ID.out) and exit code (ID.rc)."""
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
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
)
HOW_TO_INSTALL = "apt-get install linux-image-cloud-amd64 busybox-static (or run hack/setup.sh)"
MAX_COMMAND_LINE = 4000
"""Bytes of one `kubevisor-run` line: the console's line discipline holds at most 4095."""

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

# The console command service (see the module docstring). Separate, like the token functions,
# so tests can run it with the same busybox on a file of input lines. An ID is marked seen
# before its command starts, so a repeated line cannot run it twice; `.rc` is written last,
# so a file holding the exit code means the output is complete.
COMMAND_FUNCTIONS = f"""KV=${{KV:-{COMMAND_DIR}}}
run_command() {{
  printf '%s\\n' "$2" | base64 -d > "$KV/$1.sh" 2>/dev/null || : > "$KV/$1.sh"
  sh "$KV/$1.sh" > "$KV/$1.out" 2>&1 < /dev/null
  rc=$?
  while IFS= read -r out || [ -n "$out" ]; do
    printf '{OUT_PREFIX}%s %s\\n' "$1" "$out"
  done < "$KV/$1.out"
  echo "$rc" > "$KV/$1.rc"
  printf '{EXIT_PREFIX}%s %s\\n' "$1" "$rc"
}}
serve_commands() {{
  mkdir -p "$KV"
  cr=$(printf '\\r')
  while IFS= read -r line; do
    line=${{line%"$cr"}}
    printf '%s\\n' "$line"
    case "$line" in
      "{RUN_PREFIX}"*) ;;
      *) continue ;;
    esac
    rest=${{line#"{RUN_PREFIX}"}}
    id=${{rest%% *}}
    case "$id" in
      "" | *[!0-9a-z]*) continue ;;
    esac
    [ -e "$KV/$id.seen" ] && continue
    : > "$KV/$id.seen"
    run_command "$id" "${{rest#* }}" &
  done
}}
"""

# udhcpc runs this on each event with the lease in its environment (interface, ip, mask as a
# prefix length, subnet, router, hostname, mtu). The address is replaced only when it
# changed, so a renewal does not drop the guest's connections; the default route is set by
# the first NIC to get one. The MTU matters on an overlay: VXLAN takes 50 bytes of the
# underlay's, which the host's dnsmasq announces (option 26).
UDHCPC_SCRIPT = f"""#!/bin/sh
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound | renew)
    prefix=${{mask:-$(ipcalc -p "$ip" "$subnet" | cut -d= -f2)}}
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    if ! ip -4 -o addr show dev "$interface" | grep -q " $ip/$prefix "; then
      ip -4 addr flush dev "$interface"
      ip addr add "$ip/$prefix" dev "$interface"
    fi
    if [ -n "$router" ] && ! ip route show | grep -q "^default"; then
      ip route add default via "${{router%% *}}" dev "$interface"
    fi
    [ -n "$hostname" ] && hostname "$hostname"
    mac=$(cat "/sys/class/net/$interface/address")
    echo "{NET_PREFIX}$1 $interface $mac $ip/$prefix" > /dev/console
    ;;
esac
exit 0
"""

# busybox httpd runs /cgi-bin/index.cgi for "/" when there is no index.html. It listens on
# IPv6 too, so a v4 client shows up as [::ffff:a.b.c.d].
CGI_PEER = """#!/bin/sh
peer=${REMOTE_ADDR#"["}
peer=${peer%"]"}
peer=${peer#::ffff:}
"""
CGI_INDEX = f"""{CGI_PEER}printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "hostname $(hostname)"
echo "uuid $(cat /sys/class/dmi/id/product_uuid 2>/dev/null)"
for dev in /sys/class/net/*; do
  name=${{dev##*/}}
  [ -e "$dev" ] && [ "$name" != lo ] || continue
  echo "interface $name $(cat "$dev/address")" \\
    $(ip -4 -o addr show dev "$name" | sed -n 's/.* inet \\([0-9./]*\\).*/\\1/p')
done
echo "peer $peer"
"""
CGI_PEER_ONLY = f"""{CGI_PEER}printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "$peer"
"""

NETWORK_FUNCTIONS = """start_network() {
  ip link set lo up
  httpd -p 80 -h /www
  for dev in /sys/class/net/eth*; do
    [ -e "$dev" ] || continue
    ip link set "${dev##*/}" up
    udhcpc -f -i "${dev##*/}" -s /etc/udhcpc.script -t 3 -T 2 -A 2 > /dev/null 2>&1 &
  done
}
"""

# Loading evdev before button matters: button registers an input device, and acpid reads the
# power-button event from /dev/input/event*. acpid runs the PWRF/00000080 script on it; it
# stays in the foreground (-f) because its default log file, /var/log/acpid.log, cannot be
# opened in the initramfs and a daemonised acpid exits on that. virtio_blk probes the disks
# and virtio_net the NICs while insmod runs, so /dev/vda and eth* exist (or never will)
# once the loop is done.
# The console's echo goes off before the marker, so a test that waits for the marker never
# has its command echoed character by character into other output. A ^D on the console
# ends serve_commands' input; it starts again.
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
{COMMAND_FUNCTIONS}{NETWORK_FUNCTIONS}stty -echo 2>/dev/null
while true; do serve_commands < /dev/console; done &
start_network
{DISK_TOKEN_FUNCTIONS}[ -b /dev/vda ] && keep_disk_token /dev/vda
echo "{MARKER} $(uname -r) $(hostname)"
printf '\\033[2J\\033[H\\033[1;37;41m%s\\033[0m\\n' "{MARKER} $(uname -r)" > /dev/tty1 2>/dev/null
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
class Nic:
    """A virtio NIC on a Linux bridge of the guest's host; libvirt creates and enslaves the tap."""

    bridge: str
    mac: str | None = None


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """What a command run through the guest's console printed and how it exited."""

    exit_code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclasses.dataclass(frozen=True)
class NetEvent:
    """One `kubevisor-net` line: udhcpc configured `address` (a.b.c.d/prefix) on `interface`."""

    event: str
    interface: str
    mac: str
    address: str


@dataclasses.dataclass(frozen=True)
class GuestPage:
    """What the guest's httpd serves at `/`: who it is, its NICs, and who asked."""

    hostname: str
    uuid: str
    interfaces: dict[str, tuple[str, tuple[str, ...]]]
    """NIC name -> (MAC, IPv4 addresses as a.b.c.d/prefix)."""
    peer: str
    """The address the request came from, as the guest saw it."""


def parse_page(text: str) -> GuestPage:
    """Read the guest's `/` page; raises ValueError for anything else."""
    fields: dict[str, str] = {}
    interfaces: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in _lines(text):
        key, _, value = line.partition(" ")
        if key == "interface":
            name, mac, *addresses = value.split()
            interfaces[name] = (mac, tuple(addresses))
        elif key in ("hostname", "uuid", "peer"):
            fields[key] = value.strip()
    missing = {"hostname", "uuid", "peer"} - fields.keys()
    if missing:
        raise ValueError(f"not the guest's page (no {', '.join(sorted(missing))}): {text!r}")
    return GuestPage(fields["hostname"], fields["uuid"], interfaces, fields["peer"])


_COMMAND_ID = re.compile(r"[0-9a-z]+")


def command_line(command_id: str, command: str) -> bytes:
    """The console input that makes the guest run `command` (a busybox sh script) once.

    Raises ValueError for an ID that is not lowercase letters and digits, or a line too long
    for the console (MAX_COMMAND_LINE).
    """
    if not _COMMAND_ID.fullmatch(command_id):
        raise ValueError(f"command id {command_id!r}: use lowercase letters and digits only")
    line = f"{RUN_PREFIX}{command_id} {base64.b64encode(command.encode()).decode()}\n"
    if len(line) > MAX_COMMAND_LINE:
        raise ValueError(
            f"command of {len(command)} bytes makes a console line of {len(line)} bytes; "
            f"the guest reads at most {MAX_COMMAND_LINE}"
        )
    return line.encode()


def command_acknowledged(console_text: str, command_id: str) -> bool:
    """Whether the guest has read (and echoed) the line of command `command_id`."""
    return any(line.startswith(f"{RUN_PREFIX}{command_id} ") for line in _lines(console_text))


def command_result(console_text: str, command_id: str) -> CommandResult | None:
    """The result of command `command_id` in what the console printed, or None before its end.

    The console text may hold anything else too (counter lines, other commands, a partial
    first line).
    """
    output: list[str] = []
    out, done = f"{OUT_PREFIX}{command_id} ", f"{EXIT_PREFIX}{command_id} "
    for line in _lines(console_text):
        if line.startswith(out):
            output.append(line[len(out) :])
        elif line.startswith(done) and line[len(done) :].isdigit():
            return CommandResult(int(line[len(done) :]), "\n".join(output))
    return None


def net_events(console_text: str) -> list[NetEvent]:
    """Every `kubevisor-net` line in what the console printed, oldest first."""
    events = []
    for line in _lines(console_text):
        fields = line.removeprefix(NET_PREFIX).split()
        if line.startswith(NET_PREFIX) and len(fields) == 4:
            events.append(NetEvent(*fields))
    return events


def _lines(console_text: str) -> list[str]:
    return [line.removesuffix("\r") for line in console_text.split("\n")]


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
        nics: Sequence[Nic] = (),
        console: bool = False,
    ) -> str:
        """Libvirt domain XML booting this guest, its serial console appended to `serial_log`.

        For the testbed and driver tests only; the agent's domain XML comes from core.domain.
        `domain_type` is "qemu" (TCG) unless the caller has proven KVM works. `disk`, a
        qcow2 file, becomes the guest's /dev/vda (where /init keeps its disk token). `nics`
        become eth0, eth1, ... With `console`, the serial port is a pty (still logged to
        `serial_log`) that libvirt's console stream can write to, as the agent renders it:
        what `guestshell` needs to run commands.
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
        for nic in nics:
            interface = ET.SubElement(devices, "interface", type="bridge")
            if nic.mac is not None:
                ET.SubElement(interface, "mac", address=nic.mac)
            ET.SubElement(interface, "source", bridge=nic.bridge)
            ET.SubElement(interface, "model", type="virtio")
        if console:
            serial = ET.SubElement(devices, "serial", type="pty")
            ET.SubElement(serial, "log", file=str(serial_log), append="on")
            ET.SubElement(serial, "target", port="0")
            pty = ET.SubElement(devices, "console", type="pty")
            ET.SubElement(pty, "target", type="serial", port="0")
        else:
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
        _Entry.directory("www"),
        _Entry.directory("www/cgi-bin"),
        _Entry.char_device("dev/console", major=5, minor=1),
        _Entry.file("bin/busybox", BUSYBOX.read_bytes(), mode=0o755),
        _Entry.file("init", INIT.encode(), mode=0o755),
        _Entry.file("etc/acpi/PWRF/00000080", POWER_BUTTON.encode(), mode=0o755),
        _Entry.file("etc/udhcpc.script", UDHCPC_SCRIPT.encode(), mode=0o755),
        _Entry.file("www/cgi-bin/index.cgi", CGI_INDEX.encode(), mode=0o755),
        _Entry.file("www/cgi-bin/peer", CGI_PEER_ONLY.encode(), mode=0o755),
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


_SOURCE = Path(__file__).read_bytes()
"""This file as it was when it was imported: the code that builds, whatever the file on disk
says by the time it runs (an edit after the import must not name an old build as new)."""


def _builder_hash() -> str:
    """Changes whenever what goes into the initramfs changes: this file or busybox."""
    digest = hashlib.sha256(_SOURCE)
    busybox = BUSYBOX.stat() if BUSYBOX.exists() else None
    digest.update(f"{busybox.st_size}:{busybox.st_mtime_ns}".encode() if busybox else b"")
    return digest.hexdigest()[:12]


def _version_key(version: str) -> tuple[int, ...]:
    numbers = version.replace("-", ".").split(".")
    return tuple(int(n) for n in numbers if n.isdigit())
