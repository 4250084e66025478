"""Copies of a running domain's disks with a libvirt backup job (push mode).

Why a backup job rather than an external disk-only snapshot and a block commit back: the
job never changes the domain's disk chain. QEMU inserts a copy-before-write filter at the
instant the job starts and copies each disk, with its backing chain folded in, into a new
self-contained qcow2 while the guest runs on; a block the guest overwrites meanwhile is
copied out first. A failed or aborted job leaves the domain exactly as it was (no
temporary overlay to commit, no pivot that can fail), which is what "a failed snapshot
leaves the VM running and no half image" needs.

Guest consistency: `quiesce` freezes the guest's filesystems through qemu-guest-agent
only around the job's start (the instant the copy is cut), and thaws them right after;
without an agent the copy is crash-consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import libvirt

from kubevisor.drivers import base
from kubevisor.drivers.snapshots import CopyOutcome, DiskCopy

T = TypeVar("T")
DomainCall = Callable[[str, str, Callable[[libvirt.virDomain], T]], Awaitable[T]]

POLL = 0.1
"""Seconds between two looks at the job: a small disk's copy ends within a few."""


def backup_xml(domain_xml: str, copies: Sequence[DiskCopy]) -> str:
    """The <domainbackup> push job writing each copy's target from the domain's disk
    whose source file is the copy's source; every other disk is left out.

    Raises PermanentError when a source is no file disk of the domain."""
    wanted = {copy.source: copy.target for copy in copies}
    backup = ET.Element("domainbackup", mode="push")
    disks = ET.SubElement(backup, "disks")
    found: set[str] = set()
    for disk in ET.fromstring(domain_xml).iterfind("./devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        if target is None or target.get("dev") is None:
            continue
        path = source.get("file") if source is not None else None
        if path is not None and path in wanted:
            found.add(path)
            entry = ET.SubElement(disks, "disk", name=str(target.get("dev")), backup="yes")
            entry.set("type", "file")
            ET.SubElement(entry, "driver", type="qcow2")
            ET.SubElement(entry, "target", file=wanted[path])
        else:
            ET.SubElement(disks, "disk", name=str(target.get("dev")), backup="no")
    missing = sorted(set(wanted) - found)
    if missing:
        raise base.PermanentError(f"no disk of the domain uses {', '.join(missing)}")
    return ET.tostring(backup, encoding="unicode")


async def copy_running_disks(
    call: DomainCall[Any],
    uuid: str,
    copies: Sequence[DiskCopy],
    *,
    quiesce: bool,
    timeout: float,
) -> CopyOutcome:
    """Run one push backup of `copies` on the domain and wait for it to end; on any
    failure (or cancellation) abort the job and remove the targets."""
    xml = await call("reading the disks of", uuid, lambda d: d.XMLDesc(0))
    request = backup_xml(xml, copies)
    started = time.monotonic()
    try:
        frozen = await call(
            "starting the disk copy of", uuid, lambda d: _begin(d, request, quiesce)
        )
        cut = time.monotonic() - started
        await _wait(call, uuid, deadline=started + timeout)
    except BaseException:
        with contextlib.suppress(base.HypervisorError):
            await call("aborting the disk copy of", uuid, _abort)
        for copy in copies:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(copy.target)
        raise
    return CopyOutcome(frozen=frozen, cut_seconds=cut)


def _begin(domain: libvirt.virDomain, request: str, quiesce: bool) -> bool:
    """Start the job, inside a filesystem freeze when asked and the guest agent answers;
    whether it was frozen."""
    frozen = False
    if quiesce:
        try:
            frozen = domain.fsFreeze() > 0
        except libvirt.libvirtError:
            frozen = False  # no guest agent: crash-consistent
    try:
        domain.backupBegin(request, None, 0)
    finally:
        if frozen:
            domain.fsThaw()
    return frozen


async def _wait(call: DomainCall[Any], uuid: str, *, deadline: float) -> None:
    while True:
        running = await call("reading the disk copy of", uuid, _job_running)
        if not running:
            break
        if time.monotonic() > deadline:
            raise base.RetryableError("the disk copy did not finish in time; aborted")
        await asyncio.sleep(POLL)
    stats = await call("reading the end of the disk copy of", uuid, _completed)
    if stats.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED:
        why = stats.get("errmsg") or "the backup job failed"
        raise base.RetryableError(f"disk copy failed: {why}")


def _job_running(domain: libvirt.virDomain) -> bool:
    return bool(domain.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE)


def _completed(domain: libvirt.virDomain) -> dict[str, Any]:
    stats: dict[str, Any] = domain.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    return stats


def _abort(domain: libvirt.virDomain) -> None:
    if _job_running(domain):
        domain.abortJob()
