"""Snapshot benchmark: a running guest's disk copied by kubevisor's driver (a libvirt push
backup job) versus `virsh snapshot-create-as --disk-only` of the same domain, same run.

    .venv/bin/python bench/snapshot.py [--rounds 5] [--base-mib 256]

Root only: one local libvirtd host (kubevisor.testbed.hosts) boots the tiny guest under
TCG on a qcow2 overlay over a base image of `--base-mib` MiB of random data. Each round:

- kubevisor: `copy_running_disks` (what the agent runs for a snapshot of a running VM).
  "cut" is the call that starts the job, the point in time of the copy (QEMU installs its
  copy-before-write filter in one transaction; the guest's I/O waits only for that);
  "total" runs until the self-contained copy is written.
- virsh: `virsh snapshot-create-as DOMAIN --disk-only --no-metadata --atomic` (its wall
  time is its cut: the guest now writes to a new overlay), then what turns that into a
  self-contained image without leaving the domain on a temporary overlay: `qemu-img
  convert` of the now read-only layer, and `virsh blockcommit --active --shallow --pivot`
  back.

Both count the guest's vCPU pauses (libvirt SUSPENDED events) during the operation.
Prints the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

from kubevisor.drivers import base
from kubevisor.drivers.libvirt import LibvirtHypervisor
from kubevisor.drivers.snapshots import DiskCopy
from kubevisor.testbed import guest, hosts


def run(*argv: str) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    return time.monotonic() - started


def make_disk(directory: Path, base_mib: int) -> Path:
    raw = directory / "base.raw"
    with raw.open("wb") as file:
        for _ in range(base_mib):
            file.write(os.urandom(1 << 20))
    base_image = directory / "base.qcow2"
    run("qemu-img", "convert", "-q", "-O", "qcow2", str(raw), str(base_image))
    raw.unlink()
    overlay = directory / "disk.qcow2"
    backing = ("-b", str(base_image), "-F", "qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", *backing, str(overlay))
    return overlay


def pauses(events: list[base.Event], uuid: str) -> int:
    return sum(
        1
        for e in events
        if isinstance(e, base.DomainEvent) and e.uuid == uuid and e.kind is base.EventKind.SUSPENDED
    )


async def bench(uri: str, directory: Path, *, rounds: int, base_mib: int) -> None:
    disk = make_disk(directory, base_mib)
    uuid = str(uuidlib.uuid4())
    name = f"bench-snap-{uuid[:8]}"
    serial = directory / "serial.log"
    virsh = ("virsh", "-c", uri)
    keys = ("ours-cut", "ours-total", "virsh-cut", "virsh-total")
    results: dict[str, list[float]] = {key: [] for key in keys}
    paused = {"ours": 0, "virsh": 0}
    async with LibvirtHypervisor(uri) as hypervisor:
        tiny = guest.build_guest(Path.home() / ".cache" / "kubevisor" / "guest")
        await hypervisor.define(tiny.domain_xml(name=name, uuid=uuid, serial_log=serial, disk=disk))
        seen: list[base.Event] = []

        async def collect() -> None:
            async for event in hypervisor.events():
                seen.append(event)

        collector = asyncio.create_task(collect())
        await hypervisor.start(uuid)
        try:
            while guest.MARKER not in (serial.read_text() if serial.exists() else ""):
                await asyncio.sleep(0.2)
            for n in range(rounds):
                target = directory / f"ours-{n}.qcow2"
                before = len(seen)
                started = time.monotonic()
                outcome = await hypervisor.copy_running_disks(
                    uuid, [DiskCopy(str(disk), str(target))], quiesce=True, timeout=600
                )
                results["ours-total"].append(time.monotonic() - started)
                results["ours-cut"].append(outcome.cut_seconds)
                paused["ours"] += pauses(seen[before:], uuid)
                target.unlink()

                top = directory / f"virsh-{n}.qcow2"
                copy = directory / f"virsh-copy-{n}.qcow2"
                before = len(seen)
                spec = f"vda,snapshot=external,file={top}"
                started = time.monotonic()
                cut = await asyncio.to_thread(
                    run,
                    *virsh,
                    "snapshot-create-as",
                    name,
                    "--disk-only",
                    "--no-metadata",
                    "--atomic",
                    "--diskspec",
                    spec,
                )
                await asyncio.to_thread(
                    run, "qemu-img", "convert", "-U", "-q", "-O", "qcow2", str(disk), str(copy)
                )
                await asyncio.to_thread(
                    run,
                    *virsh,
                    "blockcommit",
                    name,
                    "vda",
                    "--active",
                    "--shallow",
                    "--pivot",
                    "--wait",
                )
                results["virsh-total"].append(time.monotonic() - started)
                results["virsh-cut"].append(cut)
                paused["virsh"] += pauses(seen[before:], uuid)
                top.unlink()
                copy.unlink()
        finally:
            collector.cancel()
            await hypervisor.destroy(uuid)
            await hypervisor.undefine(uuid)
    print(f"{rounds} rounds, disk: {base_mib} MiB of random data in the base, TCG guest running")
    for key, values in results.items():
        print(f"  {key:12} median {statistics.median(values) * 1000:8.1f} ms")
    print(f"  vCPU pauses (SUSPENDED events): ours {paused['ours']}, virsh {paused['virsh']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base-mib", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubevisor-bench-snap-") as tmp:
        state = Path(tmp) / "hosts"
        [host] = hosts.start_hosts(1, state_dir=state)
        try:
            asyncio.run(bench(host.uri, Path(tmp), rounds=args.rounds, base_mib=args.base_mib))
        finally:
            hosts.stop_hosts(state)


if __name__ == "__main__":
    main()
