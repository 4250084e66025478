"""Live migration end to end: MigrationJobs on the real stack (apiserver, controller, two
agents, two libvirtd hosts running QEMU/TCG guests that print a counter twice a second)."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from builders import tiny_vm as vm
from harness import ManagedProcess, eventually
from kubevisor.api import quantity
from kubevisor.core import watchdog
from kubevisor.testbed import guest as guest_image
from kubevisor.testbed.commands import WatchdogOptions
from kubevisor.testbed.tcpproxy import TcpProxy
from stacks import ExtraHost, Stack, host_ready

from .hostloss import (
    DomainCensus,
    all_uris,
    host_spec,
    moved_away,
    running_on,
    said,
    start_on_extra,
    virsh_all,
)

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]

STALL_AFTER = 20
"""The watchdog kills an agent silent this long: after the deadline (16 s), so that the
fence is the watchdog's, as in production (30 s after 60 s)."""
COUNTER = re.compile(rf"^{guest_image.COUNTER_PREFIX}(\d+)", re.MULTILINE)


def job(name: str, vm_name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "MigrationJob",
        "metadata": {"name": name},
        "spec": {"vm": vm_name, **spec},
    }


def job_phase(stack: Stack, namespace: str, name: str) -> str | None:
    obj = stack.get("migrationjob", name, namespace)
    return None if obj is None else (obj.get("status") or {}).get("phase")


def wait_job(stack: Stack, namespace: str, name: str, *phases: str, timeout: float = 120) -> Any:
    return eventually(
        lambda: (
            stack.get("migrationjob", name, namespace)
            if job_phase(stack, namespace, name) in phases
            else None
        ),
        timeout=timeout,
        what=f"job {name} to be {'/'.join(phases)} (is {job_phase(stack, namespace, name)})",
    )


def serial_log(stack: Stack, host: str, uid: str) -> Path:
    return Path(stack.state_dirs[host]) / "vms" / uid / "serial.log"


def counters(path: Path) -> list[int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return [int(n) for n in COUNTER.findall(text)]


def running_domains(stack: Stack, host: str) -> list[str]:
    return stack.virsh(host, "list", "--uuid").split()


def test_live_migration_moves_a_running_guest(stack: Stack, namespace: str) -> None:
    stack.apply(namespace, vm("mover"))
    running = stack.wait_phase(namespace, "mover", "Running")
    uid = running["metadata"]["uid"]
    source = running["status"]["host"]
    target = next(h.name for h in stack.hosts if h.name != source)
    before = eventually(
        lambda: counters(serial_log(stack, source, uid))[-1:] or None,
        timeout=60,
        what="the guest counting on the source",
    )[0]

    succeeded = 'kubevisor_migrations_total{result="Succeeded"}'
    before_total = stack.scrape("controller").get(succeeded, 0.0)
    before_bytes = stack.scrape(source).get("kubevisor_migration_bytes_total", 0.0)
    stack.apply(namespace, job("move-1", "mover"))
    done = wait_job(stack, namespace, "move-1", "Succeeded", "Failed", "Cancelled")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["source"] == source and done["status"]["target"] == target
    progress = done["status"]["progress"]
    assert progress["dataTotal"] > 0 and progress["dataProcessed"] > 0, progress
    assert stack.scrape("controller")[succeeded] == before_total + 1
    moved_bytes = stack.scrape(source)["kubevisor_migration_bytes_total"] - before_bytes
    assert moved_bytes >= progress["dataProcessed"], (moved_bytes, progress)

    moved = eventually(
        lambda: (
            v
            if (v := stack.get("vm", "mover", namespace))["status"].get("phase") == "Running"
            and v["status"].get("host") == target
            and v["metadata"]["labels"].get("kubevisor.io/host") == target
            else None
        ),
        timeout=60,
        what="the VM Running on the target, status and label",
    )
    assert moved["status"]["lastMigration"]["job"] == "move-1"
    assert moved["status"]["lastMigration"]["source"] == source
    assert uid in running_domains(stack, target)
    assert uid not in stack.domains(source)

    # The same guest kept counting on the target: no reboot (which would start at 1 again).
    after = eventually(
        lambda: seen if (seen := counters(serial_log(stack, target, uid))) else None,
        timeout=60,
        what="the guest counting on the target",
    )
    assert after[0] > before, (before, after[:5])
    assert after == sorted(after), after


def test_explicit_target_that_breaks_anti_affinity_is_refused(stack: Stack, namespace: str) -> None:
    group = {"group": "spread", "policy": "anti-affinity"}
    stack.apply(namespace, vm("aa-0", placement=group), vm("aa-1", placement=group))
    first = stack.wait_phase(namespace, "aa-0", "Running")
    second = stack.wait_phase(namespace, "aa-1", "Running")
    source, other = first["status"]["host"], second["status"]["host"]
    assert source != other

    stack.apply(namespace, job("crowd", "aa-0", targetHost=other))
    failed = wait_job(stack, namespace, "crowd", "Succeeded", "Failed", "Cancelled")
    assert failed["status"]["phase"] == "Failed", failed["status"]
    assert "anti-affinity" in failed["status"]["reason"], failed["status"]["reason"]
    stalled = next(c for c in failed["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    still = stack.get("vm", "aa-0", namespace)
    assert still["status"]["host"] == source and still["status"]["phase"] == "Running"
    assert first["metadata"]["uid"] in running_domains(stack, source)
    assert first["metadata"]["uid"] not in stack.domains(other)


def allocated_memory(stack: Stack, host: str) -> int:
    """Bytes of memory the controller says placement holds on `host`."""
    return quantity.to_bytes(str(stack.get("hvh", host)["status"]["allocated"]["memory"]))


def bound_memory(stack: Stack, host: str) -> int:
    """Bytes of memory of the VMs bound to `host`, from the VMs themselves."""
    out = stack.kubectl("get", "vm", "-A", "-l", f"kubevisor.io/host={host}", "-o", "json")
    return sum(
        quantity.to_bytes(v["spec"]["memory"]["size"]) for v in json.loads(out.stdout)["items"]
    )


def test_cancelled_migration_leaves_the_guest_on_the_source(stack: Stack, namespace: str) -> None:
    # Enough guest memory that 1 MiB/s keeps the transfer going for far longer than the test.
    stack.apply(namespace, vm("slow", memory={"size": "256Mi"}))
    running = stack.wait_phase(namespace, "slow", "Running")
    uid, source = running["metadata"]["uid"], running["status"]["host"]
    target = next(h.name for h in stack.hosts if h.name != source)
    claim = quantity.to_bytes("256Mi")

    stack.apply(namespace, job("slow-move", "slow", options={"bandwidthMiBps": 1}))
    moving = eventually(
        lambda: (
            j
            if (j := stack.get("migrationjob", "slow-move", namespace))
            and (j.get("status") or {}).get("phase") == "Running"
            and ((j["status"].get("progress") or {}).get("dataProcessed") or 0) > 0
            else None
        ),
        timeout=60,
        what="the transfer under way with progress reported",
    )
    assert moving["status"]["target"] == target
    assert stack.phase(namespace, "slow") == "Migrating"
    # The host status follows the controller's 2 s host check: compare with what is bound.
    eventually(
        lambda: allocated_memory(stack, target) == bound_memory(stack, target) + claim,
        timeout=30,
        what="the target's claim in its allocated memory",
    )

    stack.kubectl(
        "patch",
        "migrationjob",
        "slow-move",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"cancel": true}}',
    )
    cancelled = wait_job(stack, namespace, "slow-move", "Succeeded", "Failed", "Cancelled")
    assert cancelled["status"]["phase"] == "Cancelled", cancelled["status"]
    assert cancelled["status"]["transfer"]["state"] == "Cancelled"
    stack.wait_phase(namespace, "slow", "Running")
    assert stack.get("vm", "slow", namespace)["status"]["host"] == source
    assert uid in running_domains(stack, source)
    assert uid not in stack.domains(target)
    eventually(
        lambda: allocated_memory(stack, target) == bound_memory(stack, target),
        timeout=30,
        what="the target's claim released (allocated = what is bound there)",
    )


IN_FLIGHT = ("Preparing", "Running")


def test_concurrency_limits_hold_for_six_migrations_at_once(stack: Stack, namespace: str) -> None:
    names = [f"many-{i}" for i in range(6)]
    stack.apply(namespace, *(vm(name) for name in names))
    for name in names:
        stack.wait_phase(namespace, name, "Running", timeout=120)
    # A few MiB/s: each transfer takes seconds, so the limits are what orders them.
    stack.apply(
        namespace, *(job(f"go-{name}", name, options={"bandwidthMiBps": 4}) for name in names)
    )
    worst = {"cluster": 0, "outbound": 0, "inbound": 0}
    waited: set[str] = set()

    def sample() -> bool:
        jobs = json.loads(
            stack.kubectl("get", "migrationjobs", "-n", namespace, "-o", "json").stdout
        )["items"]
        status = [j.get("status") or {} for j in jobs]
        flying = [s for s in status if s.get("phase") in IN_FLIGHT]
        worst["cluster"] = max(worst["cluster"], len(flying))
        for side, field in (("outbound", "source"), ("inbound", "target")):
            per_host = Counter(s.get(field) for s in flying)
            worst[side] = max([worst[side], *per_host.values()])
        waited.update(
            j["metadata"]["name"]
            for j, s in zip(jobs, status, strict=True)
            if s.get("phase") == "Pending" and "limit" in (s.get("reason") or "")
        )
        phases = Counter(s.get("phase") for s in status)
        assert not phases["Failed"] and not phases["Cancelled"], status
        return len(jobs) == 6 and phases["Succeeded"] == 6

    eventually(sample, timeout=240, what="all six migrations Succeeded")
    assert worst["outbound"] <= 2 and worst["inbound"] <= 2 and worst["cluster"] <= 5, worst
    assert len(waited) >= 2, f"six jobs on two hosts: at least two must wait ({waited})"


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


@pytest.fixture
def restore_hosts(stack: Stack) -> Iterator[None]:
    """Shared hosts a test cordons or drains are schedulable again afterwards."""
    try:
        yield
    finally:
        for host in stack.hosts:
            host_spec(stack, host.name, {"maintenance": False, "unschedulable": False})
            stack.kubectl("label", "hvh", host.name, "e2e-pin-", check=False)


def test_maintenance_moves_live_vms_and_restarts_shutdown_ones_elsewhere(
    stack: Stack, restore_hosts: None, namespace: str
) -> None:
    drained, other = (h.name for h in stack.hosts)
    host_spec(stack, other, {"unschedulable": True})  # so all three start on `drained`
    stack.apply(
        namespace,
        vm("live-0"),
        vm("live-1"),
        vm("cold-0", evictionStrategy="Shutdown"),
    )
    uids = {}
    for name in ("live-0", "live-1", "cold-0"):
        running = stack.wait_phase(namespace, name, "Running")
        assert running["status"]["host"] == drained
        uids[name] = running["metadata"]["uid"]
    host_spec(stack, other, {"unschedulable": False})

    host_spec(stack, drained, {"maintenance": True})
    for name in uids:
        eventually(
            lambda n=name: (
                (v := stack.get("vm", n, namespace))["status"].get("phase") == "Running"
                and v["status"].get("host") == other
            ),
            timeout=180,
            what=f"{name} Running on {other}",
        )
    host = eventually(
        lambda: (
            h
            if ((h := stack.get("hvh", drained))["status"].get("drain") or {}).get("phase")
            == "Drained"
            else None
        ),
        timeout=30,
        what=f"{drained} Drained",
    )
    assert host["status"]["drain"]["remaining"] == 0
    assert condition(host, "Schedulable")["reason"] == "Maintenance"
    assert not set(uids.values()) & set(stack.domains(drained))

    moved = {n: stack.get("vm", n, namespace) for n in uids}
    for name in ("live-0", "live-1"):
        last = moved[name]["status"]["lastMigration"]
        assert last["source"] == drained and "-drain-" in last["job"], last
    # The Shutdown VM was stopped and booted again on the other host: its counter restarted.
    assert "lastMigration" not in moved["cold-0"]["status"]
    cold = eventually(
        lambda: counters(serial_log(stack, other, uids["cold-0"])) or None,
        timeout=60,
        what="the restarted guest counting",
    )
    assert cold[0] == 1, cold[:5]

    host_spec(stack, drained, {"maintenance": False})
    eventually(
        lambda: condition(stack.get("hvh", drained), "Schedulable")["status"] == "True",
        what=f"{drained} schedulable again",
    )
    stack.kubectl("label", "hvh", drained, "e2e-pin=yes")
    stack.apply(namespace, vm("after", placement={"hostSelector": {"e2e-pin": "yes"}}))
    assert stack.wait_phase(namespace, "after", "Running")["status"]["host"] == drained


def test_lost_host_vms_restart_elsewhere_and_it_fences_on_return(
    stack: Stack, extra_host: ExtraHost, restore_hosts: None, namespace: str
) -> None:
    lost = extra_host.name
    uids = start_on_extra(
        stack, extra_host, namespace, vm("survivor"), vm("manual", runStrategy="Manual")
    )
    uris = all_uris(stack, extra_host)

    with DomainCensus(uris) as census:
        extra_host.kill()
        moved = moved_away(
            stack,
            namespace,
            "survivor",
            lost,
            what="the survivor Running on another host after the grace period",
        )
        assert uids["survivor"] in running_on(
            next(h.uri for h in stack.hosts if h.name == moved["status"]["host"])
        )
        # Manual does not restart after a crash, so it waits for its host, honestly Unknown.
        manual = stack.get("vm", "manual", namespace)
        assert manual["status"]["host"] == lost and manual["status"]["phase"] == "Unknown"
        events = said(stack, namespace, "survivor", "Rescheduling")
        assert lost in events and "heartbeat" in events, events

        extra_host.start()  # the host comes back with the survivor's old definition
        eventually(
            lambda: uids["survivor"] not in virsh_all(uris[-1]),
            timeout=60,
            what="the returning host to fence the survivor's stale domain",
        )
        assert stack.get("vm", "manual", namespace)["status"]["host"] == lost
    census.assert_never_twice()


def test_a_hung_agent_is_fenced_by_its_watchdog_and_comes_back_fenced(
    stack: Stack, extra_host: ExtraHost, restore_hosts: None, namespace: str
) -> None:
    """The agent stops (SIGSTOP) while its guest runs: the watchdog destroys the guest at
    the agent's self-fence deadline, the controller starts the VM elsewhere after its grace,
    the watchdog kills the stalled agent, and the agent started again keeps the fence until
    the VM is bound elsewhere: no moment with two copies."""
    assert extra_host.host is not None and extra_host.agent is not None
    lost, agent = extra_host.name, extra_host.agent
    agent_state = extra_host.state / "agent"
    dog = ManagedProcess(
        WatchdogOptions(lost, extra_host.host.uri, agent_state, stall_after=STALL_AFTER).argv(),
        log=extra_host.state / "watchdog.log",
    ).start()
    try:
        uid = start_on_extra(stack, extra_host, namespace, vm("guarded"))["guarded"]
        uris = all_uris(stack, extra_host)
        deadline = stack.agent_options[stack.hosts[0].name].self_fence_after
        assert deadline is not None

        with DomainCensus(uris) as census:
            assert agent.process is not None
            agent.process.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            eventually(
                lambda: uid not in running_on(uris[-1]),
                timeout=deadline + 15,
                what="the watchdog to destroy the hung agent's guest",
            )
            fenced_after = time.monotonic() - stopped
            # At most its deadline after the last renewal, which came before the stop.
            assert fenced_after <= deadline + watchdog.STALE + 2, fenced_after
            moved = moved_away(
                stack,
                namespace,
                "guarded",
                lost,
                what="the VM Running on another host after the grace period",
            )
            eventually(
                lambda: agent.process is not None and agent.process.poll() == -signal.SIGKILL,
                timeout=STALL_AFTER + 15,
                what="the watchdog to kill the stalled agent",
            )
            fence_file = json.loads((agent_state / "fenced.json").read_text())
            assert list(fence_file) == [uid]
            assert fence_file[uid]["reason"] == "FencedByWatchdog"

            agent.start()  # as its supervisor would
            eventually(lambda: host_ready(stack, lost), timeout=60, what=f"{lost} Ready again")
            assert not (agent_state / "fenced.json").exists(), "the fence lifted"
            assert uid not in running_on(uris[-1])
            assert (
                stack.get("vm", "guarded", namespace)["status"]["host"] == moved["status"]["host"]
            )
        census.assert_never_twice()
        events = said(stack, namespace, "guarded", "FencedByWatchdog")
        assert f"fenced by the watchdog on host {lost}" in events, events
        print(f"\nwatchdog fenced the hung agent's guest {fenced_after:.1f}s after SIGSTOP")
    finally:
        dog.stop()
        sys.stderr.write(f"\n--- {lost} watchdog log (tail) ---\n{dog.tail()}")


def proxied(kubeconfig: Path, link: TcpProxy, into: Path) -> Path:
    """A copy of `kubeconfig` whose API server is reached through `link`."""
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://{link.address}"
    path = into / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_host_cut_off_from_the_api_server_fences_itself_and_rejoins_clean(
    stack: Stack,
    tmp_path_factory: pytest.TempPathFactory,
    restore_hosts: None,
    namespace: str,
) -> None:
    """A partition: the link between a host's agent and the API server is cut while its
    guest runs. The agent destroys the guest at its self-fence deadline, the controller
    starts the VM elsewhere after its grace, and when the link comes back the host rejoins
    with nothing stale; a census of every host's libvirtd never sees two copies."""
    api = urlparse(stack.plane.server)
    assert api.hostname is not None and api.port is not None
    root = tmp_path_factory.mktemp("partitioned-host")
    with TcpProxy((api.hostname, api.port)) as link:
        extra = ExtraHost(stack, root, kubeconfig=proxied(stack.plane.kubeconfig, link, root))
        try:
            extra.start()
            cut_off = extra.name
            uid = start_on_extra(stack, extra, namespace, vm("partitioned"))["partitioned"]
            uris = all_uris(stack, extra)
            deadline = stack.agent_options[stack.hosts[0].name].self_fence_after
            assert deadline is not None

            with DomainCensus(uris) as census:
                link.cut()
                cut_at = time.monotonic()
                eventually(
                    lambda: uid not in running_on(uris[-1]),
                    timeout=deadline + 15,
                    what="the cut-off agent to destroy its guest",
                )
                fenced_after = time.monotonic() - cut_at
                assert fenced_after <= deadline + 2, fenced_after
                moved = moved_away(
                    stack,
                    namespace,
                    "partitioned",
                    cut_off,
                    what="the VM Running on another host after the grace period",
                )
                moved_after = time.monotonic() - cut_at
                assert link.refused > 0, "the agent kept trying the API server"

                link.restore()
                eventually(
                    lambda: host_ready(stack, cut_off), timeout=60, what=f"{cut_off} rejoins"
                )
                eventually(
                    lambda: uid not in virsh_all(uris[-1]),
                    timeout=30,
                    what="the rejoined host to remove its stale definition",
                )
                assert not (root / "agent" / "fenced.json").exists(), "the fence lifted"
                assert (
                    stack.get("vm", "partitioned", namespace)["status"]["host"]
                    == (moved["status"]["host"])
                )
            census.assert_never_twice()
            events = said(stack, namespace, "partitioned", "SelfFenced")
            assert f"self-fenced on host {cut_off}" in events, events
            print(
                f"\npartition: guest fenced {fenced_after:.1f}s after the cut (deadline "
                f"{deadline}s), VM running elsewhere {moved_after:.1f}s after it; "
                f"{census.samples} census samples, at most "
                f"{max(census.worst.values(), default=0)} copy of each VM"
            )
        finally:
            extra.remove()


def test_a_vm_with_a_local_disk_migrates_with_its_overlay(
    stack: Stack, tiny_guest: Any, namespace: str
) -> None:
    boot = {
        "kernel": str(tiny_guest.kernel),
        "initrd": str(tiny_guest.initrd),
        "cmdline": tiny_guest.cmdline,
    }
    stack.apply(namespace, vm("disky", boot=boot, disks=[{"name": "data", "size": "64Mi"}]))
    running = stack.wait_phase(namespace, "disky", "Running")
    uid, source = running["metadata"]["uid"], running["status"]["host"]
    target = next(h.name for h in stack.hosts if h.name != source)

    stack.apply(namespace, job("disky-move", "disky"))
    done = wait_job(stack, namespace, "disky-move", "Succeeded", "Failed", "Cancelled")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    stack.wait_phase(namespace, "disky", "Running")
    # The domain on the target uses the overlay its agent created there (storage copied by
    # libvirt's NBD stream); the source's files went with the domain.
    overlay = Path(stack.state_dirs[target]) / "vms" / uid / "disk-data.qcow2"
    assert str(overlay) in stack.virsh(target, "domblklist", uid)
    assert overlay.exists()
    eventually(
        lambda: not (Path(stack.state_dirs[source]) / "vms" / uid).exists(),
        timeout=30,
        what="the source's files of the VM removed",
    )
