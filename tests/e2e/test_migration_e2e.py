"""Live migration end to end: MigrationJobs on the real stack (apiserver, controller, two
agents, two libvirtd hosts running QEMU/TCG guests that print a counter twice a second)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness import eventually
from kubevisor.testbed import guest as guest_image

COUNTER = re.compile(rf"^{guest_image.COUNTER_PREFIX}(\d+)", re.MULTILINE)


def vm(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"memory": {"size": "128Mi"}, **spec},
    }


def job(name: str, vm_name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "MigrationJob",
        "metadata": {"name": name},
        "spec": {"vm": vm_name, **spec},
    }


def job_phase(stack: Any, namespace: str, name: str) -> str | None:
    obj = stack.get("migrationjob", name, namespace)
    return None if obj is None else (obj.get("status") or {}).get("phase")


def wait_job(stack: Any, namespace: str, name: str, *phases: str, timeout: float = 120) -> Any:
    return eventually(
        lambda: (
            stack.get("migrationjob", name, namespace)
            if job_phase(stack, namespace, name) in phases
            else None
        ),
        timeout=timeout,
        what=f"job {name} to be {'/'.join(phases)} (is {job_phase(stack, namespace, name)})",
    )


def serial_log(stack: Any, host: str, uid: str) -> Path:
    return Path(stack.state_dirs[host]) / "vms" / uid / "serial.log"


def counters(path: Path) -> list[int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return [int(n) for n in COUNTER.findall(text)]


def running_domains(stack: Any, host: str) -> list[str]:
    return stack.virsh(host, "list", "--uuid").split()


def test_live_migration_moves_a_running_guest(stack: Any, namespace: str) -> None:
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

    stack.apply(namespace, job("move-1", "mover"))
    done = wait_job(stack, namespace, "move-1", "Succeeded", "Failed", "Cancelled")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["source"] == source and done["status"]["target"] == target
    progress = done["status"]["progress"]
    assert progress["dataTotal"] > 0 and progress["dataProcessed"] > 0, progress

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
