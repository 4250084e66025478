"""The agent's VM loops against fakes: `FakeHypervisor` and an in-memory API server
(`fakeapi.FakeApiServer`).

Only the loops that matter here run (the VM watch, libvirt's events, two workers, the
image cache's keeper); the work queue's time is the `clock` fixture, and `settle` runs
every task until nothing is queued or in flight, so each count below follows from the
sequence of events alone. Images come from a real HTTP server on 127.0.0.1 and download
in a thread, in real time: `poll` waits for what they change, with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from agent.conftest import LOOPBACK, ImageServer
from agent.fakeapi import HOST, FakeApiServer
from harness import until
from kubevisor.agent.agent import Agent, Settings
from kubevisor.agent.workqueue import WorkQueue
from kubevisor.core.destinations import Policy
from kubevisor.core.domain.host import BootFiles
from kubevisor.core.hostpaths import Allowed
from kubevisor.drivers.base import PermanentError, RetryableError
from kubevisor.drivers.fake import FakeHypervisor
from kubevisor.drivers.hostnet.base import HostNetwork
from kubevisor.drivers.libvirt import facts as libvirt_facts
from kubevisor.kube.client import Kube

QEMU_FAILS = RetryableError("starting the domain: QEMU exited during startup", delay=5.0)


@dataclass
class Running:
    agent: Agent
    hv: FakeHypervisor
    api: FakeApiServer
    clock: Any

    def starts(self, uid: str) -> int:
        return self.hv.calls.count(("start", uid))

    def condition(self, key: str, type_: str) -> dict[str, Any]:
        (found,) = [c for c in self.api.vms[key]["status"]["conditions"] if c["type"] == type_]
        return dict(found)

    def status(self, key: str) -> dict[str, Any]:
        return dict(self.api.vms[key]["status"])

    def pulling(self, key: str) -> tuple[str, str, str] | None:
        """The ImagePulling condition's (status, reason, message), if the VM has one yet."""
        found = [
            c
            for c in self.api.vms[key]["status"].get("conditions") or []
            if c["type"] == "ImagePulling"
        ]
        return (found[0]["status"], found[0]["reason"], found[0]["message"]) if found else None

    async def poll(
        self, check: Callable[[], object], *, what: str, tick: float = 0.0, timeout: float = 30
    ) -> None:
        """Run the loop until `check` holds, moving the work queue's clock on by `tick` each
        round, or fail after `timeout` real seconds. Not `settle`: downloads and qemu-img
        run in real time, and a key is in flight while they do."""

        def holds_or_tick() -> bool:
            held = False
            try:
                held = bool(check())
            except KeyError:
                pass  # the VM's status or condition is not there yet
            finally:
                if not held:
                    self.clock.advance(tick)
            return held

        await until(holds_or_tick, timeout=timeout, what=what)

    async def settle(self) -> None:
        """Run every task until the queue stays empty; a retry storm never gets there."""
        quiet = 0
        for _ in range(5000):
            await asyncio.sleep(0)  # one turn of the loop for every ready task
            quiet = quiet + 1 if len(self.agent.queue) == 0 else 0
            if quiet == 50:
                return
        raise AssertionError("the agent kept reconciling: a retry storm")


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    api: FakeApiServer,
    hv: FakeHypervisor,
    clock: Any,
    *,
    host_network: HostNetwork | None = None,
    **settings_: Any,
) -> AsyncIterator[Running]:
    settings = Settings(
        **{
            "host": HOST,
            "domain_type": "qemu",
            "state_dir": tmp_path / "state",
            "image_dir": tmp_path / "images",
            "default_boot": BootFiles(kernel=str(tmp_path / "vmlinuz")),
            "image_sources": LOOPBACK,
            **settings_,
        }
    )
    queue = WorkQueue(call_later=clock.call_later)
    agent = Agent(
        settings=settings,
        kube=cast(Kube, api),
        hypervisor=hv,
        queue=queue,
        host_network=host_network,
    )
    await hv.connect()
    events = hv.events()
    resource_version = await agent._list()
    if host_network is not None:
        await agent.networking.load()
    await agent.registration.register()  # as Agent.run does before the loops start
    tasks = [
        asyncio.create_task(agent._watch(resource_version)),
        asyncio.create_task(agent._hypervisor_events(events)),
        asyncio.create_task(agent._worker()),
        asyncio.create_task(agent._worker()),
        asyncio.create_task(agent._tend_image_cache()),
        *(asyncio.create_task(part) for part in (agent.networking.tasks() if host_network else [])),
    ]
    for key in agent.vms:
        agent.queue.add(key)
    try:
        yield Running(agent=agent, hv=hv, api=api, clock=clock)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


SPEC: dict[str, Any] = {"memory": {"size": "96Mi"}}


def test_a_domain_that_never_starts_is_retried_with_backoff(tmp_path: Path, clock: Any) -> None:
    """Each failed start used to come back at once: libvirt's event of the define and the
    watch's echo of the status it wrote re-queued the key, however long the error said."""

    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        key, uid = api.create("never-starts", SPEC)
        hv.fail_next("start", QEMU_FAILS, times=1000)
        async with running(tmp_path, api, hv, clock) as agent:
            await agent.settle()
            attempts = [0] * agent.starts(uid)
            for second in range(1, 121):
                clock.advance(1.0)
                await agent.settle()
                attempts += [second] * (agent.starts(uid) - len(attempts))
            # 5 s (the error's delay) until 1 s doubling passes it, then up to 60 s.
            assert attempts == [0, 5, 10, 15, 23, 39, 71]
            assert api.status_writes == 1, "the same failure is written once"
            assert api.vms[key]["status"]["phase"] == "Starting"
            assert agent.condition(key, "Reconciling")["status"] == "True"

    asyncio.run(main())


def test_a_domain_libvirt_refuses_to_start_is_retried_with_backoff(
    tmp_path: Path, clock: Any
) -> None:
    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        key, uid = api.create("refused", SPEC)
        refused = PermanentError("starting the domain: cgroup CPU controller is not mounted")
        hv.fail_next("start", refused, times=1000)
        async with running(tmp_path, api, hv, clock) as agent:
            await agent.settle()
            assert agent.starts(uid) == 1
            assert api.vms[key]["status"]["phase"] == "Failed"

    asyncio.run(main())


def test_a_spec_this_host_cannot_express_fails_the_vm_with_the_reason(
    tmp_path: Path, clock: Any
) -> None:
    """A DomainError from rendering is the VM's condition, not a crashed reconcile."""

    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        container = {"rootfs": str(tmp_path / "rootfs")}
        spec = {**SPEC, "container": container, "firmware": {"type": "uefi"}}
        key, _ = api.create("uefi-container", spec)
        allowed = Allowed(rootfs=(str(tmp_path),))
        async with running(
            tmp_path, api, hv, clock, domain_type="lxc", host_paths=allowed
        ) as agent:
            await agent.settle()
            assert [call for call in hv.calls if call[0] == "define"] == []
            assert api.vms[key]["status"]["phase"] == "Failed"
            for type_ in ("Ready", "Stalled"):
                rejected = agent.condition(key, type_)
                assert (rejected["status"], rejected["reason"]) == (
                    "False" if type_ == "Ready" else "True",
                    "DomainRejected",
                )
                assert "firmware: no UEFI" in rejected["message"]

    asyncio.run(main())


@pytest.mark.parametrize(
    ("kernel", "boot_dirs", "message"),
    [
        pytest.param(
            "/etc/shadow",
            ("boot",),
            "boot.kernel: /etc/shadow is outside the directories this host allows ({tmp}/boot;",
            id="a-host-file-outside-the-boot-directory",
        ),
        pytest.param(
            "{tmp}/boot/shadow",
            ("boot",),
            "boot.kernel: {tmp}/boot/shadow resolves to /etc/shadow, outside the directories",
            id="a-symlink-in-the-boot-directory-leading-out",
        ),
        pytest.param(
            "{tmp}/boot/vmlinuz",
            (),
            "boot.kernel: {tmp}/boot/vmlinuz refused: this host allows no such paths (its "
            "agent declares no --boot-dir)",
            id="a-host-that-allows-no-boot-files",
        ),
    ],
)
def test_a_kernel_path_outside_the_allowed_directories_fails_the_vm_with_the_reason(
    tmp_path: Path, clock: Any, kernel: str, boot_dirs: tuple[str, ...], message: str
) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "vmlinuz").write_bytes(b"kernel")
    (boot / "shadow").symlink_to("/etc/shadow")

    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        spec = {**SPEC, "boot": {"kernel": kernel.format(tmp=tmp_path)}}
        key, _ = api.create("escapes", spec)
        allowed = Allowed(boot=tuple(str(tmp_path / d) for d in boot_dirs))
        async with running(tmp_path, api, hv, clock, host_paths=allowed) as agent:
            await agent.settle()
            assert [call for call in hv.calls if call[0] == "define"] == []
            assert api.vms[key]["status"]["phase"] == "Failed"
            for type_ in ("Ready", "Stalled"):
                refused = agent.condition(key, type_)
                assert refused["reason"] == "HostPathRefused"
                assert message.format(tmp=tmp_path) in refused["message"]
            assert not any((tmp_path / "state" / "vms").iterdir()), "no file was made for it"

    asyncio.run(main())


def test_a_kernel_in_the_boot_directory_boots_by_its_real_path(tmp_path: Path, clock: Any) -> None:
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "vmlinuz-6.1").write_bytes(b"kernel")
    # The admin's directory is a symlink, and so is the file in it: the domain names neither.
    (tmp_path / "boot").symlink_to("kernels")
    (tmp_path / "kernels" / "vmlinuz").symlink_to("vmlinuz-6.1")

    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        _, uid = api.create("boots", {**SPEC, "boot": {"kernel": f"{tmp_path}/boot/vmlinuz"}})
        allowed = Allowed(boot=(str(tmp_path / "boot"),))
        async with running(tmp_path, api, hv, clock, host_paths=allowed) as agent:
            await agent.settle()
            assert agent.starts(uid) == 1
            kernel = ET.fromstring(hv.domains[uid].xml).findtext("os/kernel")
            assert kernel == str(tmp_path / "kernels" / "vmlinuz-6.1")

    asyncio.run(main())


def test_a_spec_change_or_deletion_is_reconciled_at_once_while_backing_off(
    tmp_path: Path, clock: Any
) -> None:
    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        key, uid = api.create("never-starts", SPEC)
        hv.fail_next("start", QEMU_FAILS, times=1000)
        async with running(tmp_path, api, hv, clock) as agent:
            await agent.settle()
            for _ in range(16):
                clock.advance(1.0)
                await agent.settle()
            assert agent.starts(uid) == 4, "held until t=23 now"
            api.change_spec(key, {"memory": {"size": "128Mi"}})
            await agent.settle()
            assert agent.starts(uid) == 5, "the new spec is tried without waiting"
            clock.advance(5.0)  # and its backoff starts afresh
            await agent.settle()
            assert agent.starts(uid) == 6
            api.delete(key)
            await agent.settle()
            assert uid not in hv.domains, "removed without waiting"
            clock.advance(600.0)
            await agent.settle()
            assert agent.starts(uid) == 6

    asyncio.run(main())


def test_a_start_that_fails_twice_then_succeeds_resets_the_backoff(
    tmp_path: Path, clock: Any
) -> None:
    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        key, uid = api.create("starts-late", SPEC)
        hv.fail_next("start", QEMU_FAILS, times=2)
        async with running(tmp_path, api, hv, clock) as agent:
            await agent.settle()
            clock.advance(5.0)
            await agent.settle()
            clock.advance(5.0)
            await agent.settle()
            assert agent.starts(uid) == 3
            assert api.vms[key]["status"]["phase"] == "Running"
            assert agent.agent.queue.failures(key) == 0
            # A crash is reconciled at once: the key is not held.
            hv.fail_next("start", QEMU_FAILS)
            await hv.destroy(uid)
            await agent.settle()
            assert agent.starts(uid) == 4

    asyncio.run(main())


TUNED = {"memory": {"size": "96Mi"}, "cpu": {"tune": {"shares": 512}}}


@pytest.mark.parametrize(
    ("spec", "controllers", "enforced", "reason"),
    [
        pytest.param(TUNED, frozenset(), "False", "NotEnforced", id="no-cgroups"),
        pytest.param(TUNED, frozenset({"cpu"}), "True", "Enforced", id="cpu-controller"),
        pytest.param(TUNED, None, "True", "Enforced", id="controllers-unknown"),
        pytest.param(SPEC, frozenset(), "True", "Enforced", id="nothing-to-enforce"),
    ],
)
def test_limits_the_host_cannot_enforce_show_in_the_vms_status(
    tmp_path: Path,
    clock: Any,
    spec: dict[str, Any],
    controllers: frozenset[str] | None,
    enforced: str,
    reason: str,
) -> None:
    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        key, _ = api.create("tuned", spec)
        async with running(tmp_path, api, hv, clock, cgroup_controllers=controllers) as agent:
            await agent.settle()
            assert api.vms[key]["status"]["phase"] == "Running", "it runs, unlimited"
            limits = agent.condition(key, "LimitsEnforced")
            assert (limits["status"], limits["reason"]) == (enforced, reason)
            assert ("cpu.tune" in limits["message"]) is (enforced == "False")

    asyncio.run(main())


# -- disks from image URLs ------------------------------------------------------------------

MIB = 1 << 20


def sourced(url: str, sha256: str) -> dict[str, Any]:
    return {
        **SPEC,
        "disks": [{"name": "root", "source": {"url": url, "sha256": sha256, "format": "raw"}}],
    }


def cache_files(tmp_path: Path) -> list[str]:
    root = tmp_path / "images" / ".cache"
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_vms_show_their_image_downloading_share_it_and_start_once_it_is_cached(
    tmp_path: Path, clock: Any, image_server: ImageServer
) -> None:
    image = os.urandom(2 * MIB)
    image_server.files["/root.raw"] = image
    gate = image_server.gates["/root.raw"] = threading.Event()
    url = image_server.url("/root.raw")
    half = f"disk root: 1.0 MiB of 2.0 MiB (50%) from {url}"

    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        spec = sourced(url, hashlib.sha256(image).hexdigest())
        (first, uid), (second, _) = api.create("first", spec), api.create("second", spec)
        async with running(tmp_path, api, hv, clock) as agent:
            await agent.poll(
                lambda: all(agent.pulling(k) == ("True", "Pulling", half) for k in (first, second)),
                tick=1.0,
                what="both VMs to show half the image",
            )
            for key in (first, second):
                assert agent.status(key)["phase"] == "Starting"
                assert agent.condition(key, "Ready")["reason"] == "ImagePulling"
                assert agent.status(key)["imagePulls"] == [
                    {
                        "disk": "root",
                        "url": url,
                        "receivedBytes": MIB,
                        "totalBytes": 2 * MIB,
                        "attempts": 1,
                    }
                ]
            assert agent.starts(uid) == 0
            gate.set()
            await agent.poll(
                lambda: all(agent.status(k)["phase"] == "Running" for k in (first, second)),
                what="both VMs to run",
            )
            for key in (first, second):
                assert agent.pulling(key) == ("False", "Pulled", "disk root: image cached")
                assert agent.status(key)["imagePulls"] == []
            (image_status,) = api.host["status"]["images"]  # type: ignore[index]
            assert image_status["sha256"] == hashlib.sha256(image).hexdigest()
            assert image_status["inUse"] == 2

    asyncio.run(main())
    assert image_server.requests == ["/root.raw"]


def test_a_wrong_checksum_fails_the_vm_for_good_until_the_spec_changes(
    tmp_path: Path, clock: Any, image_server: ImageServer
) -> None:
    image = os.urandom(MIB)
    image_server.files["/root.raw"] = image
    url, wrong, right = image_server.url("/root.raw"), "0" * 64, hashlib.sha256(image).hexdigest()

    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        key, uid = api.create("wrong", sourced(url, wrong))
        async with running(tmp_path, api, hv, clock) as agent:
            await agent.poll(lambda: agent.status(key)["phase"] == "Failed", what="Failed")
            message = (
                f"disk root: download of {url}: sha256 mismatch, expected {wrong}, got {right}"
            )
            assert agent.pulling(key) == ("False", "ChecksumMismatch", message)
            assert agent.condition(key, "Stalled")["reason"] == "ChecksumMismatch"
            assert agent.status(key)["imagePulls"] == []
            assert cache_files(tmp_path) == []
            for _ in range(10):
                clock.advance(60.0)
                await agent.settle()
            assert image_server.requests == ["/root.raw"], "no retry of the same spec"
            api.change_spec(key, sourced(url, right))
            await agent.poll(lambda: agent.status(key)["phase"] == "Running", what="Running")
            assert agent.starts(uid) == 1

    asyncio.run(main())
    assert image_server.requests == ["/root.raw", "/root.raw"]


def test_a_failing_server_is_retried_with_backoff_and_the_vm_starts_once_it_answers(
    tmp_path: Path, clock: Any, image_server: ImageServer
) -> None:
    image = os.urandom(MIB)
    image_server.files["/root.raw"] = image
    image_server.errors["/root.raw"] = 503
    url = image_server.url("/root.raw")

    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        key, uid = api.create("retried", sourced(url, hashlib.sha256(image).hexdigest()))
        async with running(tmp_path, api, hv, clock) as agent:
            failed = f"disk root: download of {url}: HTTP 503 Service Unavailable"
            for attempt, delay in [(1, 1), (2, 2), (3, 4), (4, 8)]:
                suffix = f", attempt {attempt}" if attempt > 1 else ""
                expected = ("True", "DownloadFailed", f"{failed}{suffix}; retrying in {delay}s")
                await agent.poll(
                    lambda e=expected: agent.pulling(key) == e, what=f"attempt {attempt}"
                )
                await agent.settle()  # the reconcile that wrote it holds the key back first
                assert agent.status(key)["phase"] == "Starting"
                assert agent.status(key)["imagePulls"][0]["attempts"] == attempt
                assert len(image_server.requests) == attempt
                clock.advance(delay - 0.5)
                await agent.settle()
                assert agent.agent.images.pulling() == set(), "not retried before the delay"
                if attempt == 4:
                    del image_server.errors["/root.raw"]
                clock.advance(0.5)
                await agent.settle()
                assert agent.agent.images.pulling() or len(image_server.requests) > attempt
            await agent.poll(lambda: agent.status(key)["phase"] == "Running", what="Running")
            assert agent.pulling(key) == ("False", "Pulled", "disk root: image cached")
            assert agent.starts(uid) == 1
            assert cache_files(tmp_path) == [hashlib.sha256(image).hexdigest()]

    asyncio.run(main())
    assert len(image_server.requests) == 5


def test_an_image_no_vm_uses_any_more_is_evicted_and_leaves_the_hosts_status(
    tmp_path: Path, clock: Any, image_server: ImageServer
) -> None:
    image = os.urandom(MIB)
    image_server.files["/root.raw"] = image
    digest = hashlib.sha256(image).hexdigest()

    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        key, _ = api.create("short-lived", sourced(image_server.url("/root.raw"), digest))
        async with running(tmp_path, api, hv, clock, image_cache_max_unused=0.0) as agent:
            await agent.poll(lambda: agent.status(key)["phase"] == "Running", what="Running")
            await agent.poll(
                lambda: [i["inUse"] for i in api.host["status"]["images"]] == [1],  # type: ignore[index]
                what="the host to list the image in use",
            )
            assert api.host["status"]["storage"]["imageCache"] == "1Mi"  # type: ignore[index]
            assert cache_files(tmp_path) == [digest], "in use: kept however old"
            api.delete(key)
            await agent.poll(
                lambda: api.host["status"]["images"] == [],  # type: ignore[index]
                what="the host to list no image",
            )
            assert cache_files(tmp_path) == []
            assert api.host["status"]["storage"]["imageCache"] == "0"  # type: ignore[index]

    asyncio.run(main())


def test_a_full_image_cache_is_reported_as_disk_full_and_retried(
    tmp_path: Path, clock: Any, image_server: ImageServer, small_fs: Path
) -> None:
    image = os.urandom(4 * MIB)
    image_server.files["/root.raw"] = image
    url = image_server.url("/root.raw")
    cache = small_fs / "images" / ".cache" / "sha256"

    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        key, uid = api.create("no-room", sourced(url, hashlib.sha256(image).hexdigest()))
        async with running(tmp_path, api, hv, clock, image_dir=small_fs / "images") as agent:
            await agent.poll(
                lambda: (agent.pulling(key) or ("", ""))[1] == "DiskFull", what="DiskFull"
            )
            assert agent.pulling(key) == (
                "True",
                "DiskFull",
                f"disk root: download of {url}: no space left in the image cache {cache} "
                f"(filesystem {small_fs}: 1.0 MiB free of 1.0 MiB); the image needs 4.0 MiB; "
                "retrying in 1s",
            )
            assert agent.status(key)["phase"] == "Starting"
            assert [p for p in small_fs.rglob("*") if p.is_file()] == [], "no partial file"
            await agent.settle()  # the reconcile that wrote it holds the key back first
            clock.advance(1.0)
            await agent.poll(
                lambda: (
                    agent.status(key)["imagePulls"][0]["attempts"] == 2
                    and agent.pulling(key)[1] == "DiskFull"
                ),  # type: ignore[index]
                what="a second attempt to fail the same way",
            )
            assert agent.starts(uid) == 0

    asyncio.run(main())


def test_on_shared_storage_the_image_is_pulled_once_into_the_shared_cache(
    tmp_path: Path, clock: Any, image_server: ImageServer
) -> None:
    image = os.urandom(MIB)
    image_server.files["/root.raw"] = image
    digest = hashlib.sha256(image).hexdigest()
    shared = tmp_path / "shared"

    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        api.host = {
            "metadata": {"name": HOST, "generation": 1},
            "spec": {"sharedStorage": {"name": "nfs", "path": str(shared)}},
        }
        key, _ = api.create("shared", sourced(image_server.url("/root.raw"), digest))
        async with running(tmp_path, api, hv, clock) as agent:
            await agent.agent.registration.register()
            await agent.poll(lambda: agent.status(key)["phase"] == "Running", what="Running")
            assert agent.status(key)["storage"]["location"] == "Shared"

    asyncio.run(main())
    assert (shared / "images" / "sha256" / digest).read_bytes() == image
    assert cache_files(tmp_path) == [], "nothing in the host's own cache"
    assert image_server.requests == ["/root.raw"]


def test_an_image_url_the_host_refuses_fails_the_vm_with_the_reason_and_no_request(
    tmp_path: Path, clock: Any, image_server: ImageServer
) -> None:
    """The production default: a VM's author cannot make the agent fetch from this host."""
    image = os.urandom(MIB)
    image_server.files["/root.raw"] = image
    url = image_server.url("/root.raw")

    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        key, uid = api.create("probe", sourced(url, hashlib.sha256(image).hexdigest()))
        async with running(tmp_path, api, hv, clock, image_sources=Policy()) as agent:
            await agent.poll(lambda: agent.status(key)["phase"] == "Failed", what="Failed")
            message = (
                f"disk root: download of {url} refused: destination 127.0.0.1 is loopback; "
                "an admin may allow it with --image-source-allow"
            )
            assert agent.pulling(key) == ("False", "DestinationRefused", message)
            assert agent.condition(key, "Stalled")["reason"] == "DestinationRefused"
            assert agent.starts(uid) == 0

    asyncio.run(main())
    assert image_server.requests == []


def test_a_downloaded_image_with_a_backing_file_fails_the_vm_as_rejected(
    tmp_path: Path, clock: Any, image_server: ImageServer
) -> None:
    made = tmp_path / "made.qcow2"
    backed = ["-b", "/etc/hostname", "-F", "raw"]
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", *backed, str(made), "1M"], check=True
    )
    image_server.files["/root.qcow2"] = made.read_bytes()
    digest = hashlib.sha256(made.read_bytes()).hexdigest()
    source = {"url": image_server.url("/root.qcow2"), "sha256": digest, "format": "qcow2"}

    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        key, uid = api.create("crafted", {**SPEC, "disks": [{"name": "root", "source": source}]})
        async with running(tmp_path, api, hv, clock) as agent:
            await agent.poll(lambda: agent.status(key)["phase"] == "Failed", what="Failed")
            stalled = agent.condition(key, "Stalled")
            assert (stalled["status"], stalled["reason"]) == ("True", "ImageRejected")
            assert stalled["message"].startswith(
                f"disk root: image {digest} refused: it names a backing file (/etc/hostname)"
            )
            assert [call for call in hv.calls if call[0] == "define"] == []
            assert agent.starts(uid) == 0


def test_a_deleted_host_object_is_registered_again_and_its_vms_run_on(
    tmp_path: Path, clock: Any
) -> None:
    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        key, uid = api.create("survivor", SPEC)
        async with running(tmp_path, api, hv, clock) as agent:
            await agent.settle()
            assert agent.status(key)["phase"] == "Running"
            writes = api.status_writes
            api.delete_host()
            await agent.agent.registration.follow_spec()  # the next heartbeat
            await agent.settle()
            assert api.host is not None and api.host["status"]["capacity"]["cpu"] == 8
            assert agent.starts(uid) == 1 and hv.domains[uid].state.value == "running"
            assert (agent.status(key)["phase"], api.status_writes) == ("Running", writes)

    asyncio.run(main())


def test_the_host_says_why_it_runs_tcg(tmp_path: Path, clock: Any) -> None:
    """main.domain_type's fallback reason reaches status.hypervisor.message."""
    why = "libvirt offers KVM but it is not used: /dev/kvm cannot be opened"

    async def main() -> None:
        api, hv = FakeApiServer(), FakeHypervisor()
        async with running(tmp_path, api, hv, clock, domain_type_message=why) as agent:
            await agent.agent.registration.register()
        assert api.host is not None
        assert api.host["status"]["hypervisor"]["message"] == why

    asyncio.run(main())


# -- the host's security driver ---------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures"


def captured_host(name: str) -> FakeHypervisor:
    """A fake whose host facts are read from a captured `virsh capabilities`."""
    facts = libvirt_facts.host_facts_from(
        (FIXTURES / name).read_text(),
        uri="qemu:///system",
        hostname="captured",
        info=["x86_64", 3924, 2, 2000, 1, 1, 2, 1],
        hypervisor_type="QEMU",
        hypervisor_version=7002000,
        libvirt_version=9000000,
        free_memory={},
        free_pages={},
    )
    return FakeHypervisor(facts=facts)


CONFINED = {**SPEC, "security": {"requireConfinement": True}}


def test_a_vm_requiring_confinement_runs_labelled_for_the_hosts_security_driver(
    tmp_path: Path, clock: Any
) -> None:
    """Issue 15, point 10: the agent never told the renderer the host's security driver,
    so such a VM was refused on exactly the hosts placement sends it to."""

    async def main() -> None:
        api, hv = FakeApiServer(), captured_host("capabilities-apparmor.xml")
        key, uid = api.create("confined", CONFINED)
        async with running(tmp_path, api, hv, clock) as agent:
            await agent.settle()
            assert api.host is not None
            assert api.host["status"]["capabilities"]["securityDriver"] == "apparmor"
            assert agent.status(key)["phase"] == "Running"
            (label,) = ET.fromstring(hv.domains[uid].xml).iter("seclabel")
            assert label.attrib == {"type": "dynamic", "model": "apparmor", "relabel": "yes"}

    asyncio.run(main())


def test_a_vm_requiring_confinement_fails_where_libvirt_confines_nothing(
    tmp_path: Path, clock: Any
) -> None:
    async def main() -> None:
        api, hv = FakeApiServer(), captured_host("capabilities-no-security-driver.xml")
        key, uid = api.create("confined", CONFINED)
        async with running(tmp_path, api, hv, clock) as agent:
            await agent.settle()
            assert api.host is not None
            assert api.host["status"]["capabilities"]["securityDriver"] == "none"
            assert agent.status(key)["phase"] == "Failed"
            stalled = agent.condition(key, "Stalled")
            assert stalled["reason"] == "DomainRejected"
            assert "this host has no libvirt security driver" in stalled["message"]
            assert uid not in hv.domains

    asyncio.run(main())
