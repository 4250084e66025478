"""Image pull bookkeeping (`agent.pulls.ImagePulls`): who waits, what is evicted.

Downloads themselves, their progress and failures in a VM's status are in
test_agent_fakes.py (a real HTTP server); here the cache's files are written directly.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from agent.fakeapi import HOST, FakeApiServer
from kubevisor.agent.pulls import ImagePulls
from kubevisor.agent.settings import Settings
from kubevisor.agent.vmfiles import VmFiles
from kubevisor.agent.vms import BoundVms
from kubevisor.agent.workqueue import WorkQueue

WANTED, UNUSED = "a" * 64, "b" * 64


def sourced(sha256: str) -> dict[str, Any]:
    source = {"url": "http://images/root.raw", "sha256": sha256, "format": "raw"}
    return {"memory": {"size": "96Mi"}, "disks": [{"name": "root", "source": source}]}


def make(tmp_path: Path, **settings: Any) -> tuple[ImagePulls, VmFiles, BoundVms, WorkQueue]:
    config = Settings(
        host=HOST,
        domain_type="qemu",
        state_dir=tmp_path / "state",
        image_dir=tmp_path / "images",
        **settings,
    )
    files = VmFiles(state_dir=config.state_dir, image_dir=config.image_dir)
    vms, queue = BoundVms(), WorkQueue()
    return ImagePulls(settings=config, files=files, vms=vms, queue=queue), files, vms, queue


def cached(files: VmFiles, sha256: str, *, age: float) -> Path:
    path = files.images.path(sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"image")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_a_finished_download_requeues_the_vms_waiting_for_it_and_reports(tmp_path: Path) -> None:
    async def main() -> None:
        pulls, files, vms, queue = make(tmp_path)
        api = FakeApiServer()
        for name, sha in (("waits", WANTED), ("other", UNUSED)):
            key, _ = api.create(name, sourced(sha))
            vms.remember(api.vms[key])
        reported = asyncio.Event()

        async def report() -> None:
            reported.set()

        tending = asyncio.create_task(pulls.tend(report))
        assert files.images.on_done is not None
        files.images.on_done(WANTED)  # what ImageCache calls when a download ends
        assert await queue.get() == "ns/waits"
        queue.done("ns/waits")
        assert len(queue) == 0, "the VM waiting for another image stays put"
        await asyncio.wait_for(reported.wait(), timeout=5)
        tending.cancel()

    asyncio.run(main())


def test_eviction_keeps_the_images_bound_vms_want(tmp_path: Path) -> None:
    pulls, files, vms, _ = make(tmp_path, image_cache_max_unused=60.0)
    api = FakeApiServer()
    key, _ = api.create("waits", sourced(WANTED))
    vms.remember(api.vms[key])
    wanted, unused = cached(files, WANTED, age=3600), cached(files, UNUSED, age=3600)
    evicted = pulls.evict()
    assert [image.sha256 for image in evicted] == [UNUSED]
    assert wanted.exists() and not unused.exists()
