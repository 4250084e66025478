"""The controller process on a real kube-apiserver holding objects it cannot understand
(issue 16, point 6): hosts, a VM and a host's status stored before the CRDs' rules
existed. Each gets a condition saying why, and the controller goes on placing: another
VM is placed within 1 s.

The control plane is this module's own: its CRDs are loosened for a moment to store
what the current rules refuse (as objects stored by an older kubevisor are), and the
e2e stack's controller must not see them."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import builders
from builders import hvh
from harness import REPO, ManagedProcess, eventually
from kubevisor.testbed import controlplane
from kubevisor.testbed.controlplane import ControlPlane

from .apiserver import (
    NAMESPACE,
    apply,
    controller_process,
    get,
    heartbeat,
    patch_status,
    ready_host,
)

pytestmark = pytest.mark.apiserver

CRDS = REPO / "deploy" / "crds"
BOUNDS = frozenset(
    {"x-kubernetes-validations", "pattern", "maximum", "minimum", "maxLength", "maxItems"}
)
"""What a schema of before the hardening did not have: loosened, the CRD stores anything
of the right type."""


def loosened(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: loosened(value) for key, value in node.items() if key not in BOUNDS}
    if isinstance(node, list):
        return [loosened(item) for item in node]
    return node


@pytest.fixture
def controller(plane: ControlPlane, tmp_path: Path) -> Iterator[ManagedProcess]:
    with controller_process(plane, tmp_path) as process:
        yield process


def condition(obj: dict[str, Any], type_: str) -> tuple[str, str, str] | None:
    for found in (obj.get("status") or {}).get("conditions") or []:
        if found["type"] == type_:
            return found["status"], found["reason"], found["message"]
    return None


def vm(name: str, size: str) -> dict[str, Any]:
    return builders.vm(name, namespace=NAMESPACE, runStrategy="Always", memory={"size": size})


def store_as_before_the_rules(
    plane: ControlPlane, *manifests: dict[str, Any], statuses: dict[str, dict[str, Any]]
) -> None:
    """Create objects the current CRDs refuse, and give hosts statuses they refuse, under
    loosened CRDs, then restore them."""
    crds = [CRDS / "hypervisorhosts.kubevisor.io.yaml", CRDS / "virtualmachines.kubevisor.io.yaml"]
    for path in crds:
        plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                      input=yaml.safe_dump(loosened(yaml.safe_load(path.read_text()))))  # fmt: skip
    for manifest in manifests:
        # The loosened schema takes effect within a moment of the update.
        eventually(
            lambda m=manifest: (
                plane.kubectl("create", "-f", "-", input=json.dumps(m), check=False).returncode == 0
                or None
            ),
            timeout=30,
            what=f"{manifest['metadata']['name']} stored under the loosened CRD",
        )
    for name, status in statuses.items():
        patch_status(plane, "hvh", name, status=status)
    controlplane.install_crds(plane, crds)
    refused = plane.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(manifests[0]), check=False
    )
    assert refused.returncode != 0, "the CRDs' rules are back"


class Placements:
    """`kubectl get vm --watch`: each VM's host as the watch delivers it."""

    def __init__(self, plane: ControlPlane) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(
            [
                str(plane.kubectl_path), "--kubeconfig", str(plane.kubeconfig),
                "get", "vm", "-n", NAMESPACE, "--watch",
                "-o", 'jsonpath={.metadata.name}={.status.host}{"\\n"}',
            ],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def wait_for(self, wanted: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                if self.lines.get(timeout=left) == wanted:
                    return
            except queue.Empty:
                break
        raise AssertionError(f"the watch never showed {wanted} within {timeout}s")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def test_objects_the_controller_cannot_read_get_conditions_and_placement_goes_on(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    store_as_before_the_rules(
        plane,
        hvh("bad-ratios", allocationRatios={"cpu": 1e308}),
        hvh("bad-sets", cpuSharedSet="7-2", cpuDedicatedSet="0-4294967295"),
        vm("bad-size", "1e999999999.0"),
        hvh("huge"),
        # Refused by today's status schema (at most 8192 CPUs), written by an older agent.
        statuses={"huge": {"capacity": {"cpu": 10**12, "memory": "4Gi"}, "numaCells": []}},
    )
    ready_host(plane, "h1", cpus=4, memory="4Gi")
    for name in ("huge", "bad-ratios", "bad-sets"):
        heartbeat(plane, name)

    controller.start()

    def schedulable(name: str) -> tuple[str, str, str] | None:
        found = condition(get(plane, "hvh", name), "Schedulable")
        return found if found is not None and found[1] == "InvalidSpec" else None

    # Up to a minute for the controller to start and its timers to judge the hosts.
    said = {name: eventually(lambda n=name: schedulable(n), timeout=60, what=f"{name} refused")
            for name in ("bad-ratios", "bad-sets", "huge")}  # fmt: skip
    prefix = "the controller cannot read this host: "
    assert said == {
        "bad-ratios": (
            "False", "InvalidSpec",
            prefix + "spec.allocationRatios.cpu: Input should be less than or equal to 100",
        ),
        "bad-sets": (
            "False", "InvalidSpec",
            prefix + "spec.cpuDedicatedSet: '0-4294967295': must be a list of CPU numbers and "
            "ranges such as 0-3,8,10-11, at most 64 entries; spec.cpuSharedSet: '7-2': range "
            "7-2 runs backwards; each range must run upwards, e.g. 2-7 (not 7-2)",
        ),
        "huge": (
            "False", "InvalidSpec",
            prefix + "status.capacity.cpu: Input should be less than or equal to 8192",
        ),
    }  # fmt: skip

    def refused_vm() -> dict[str, Any] | None:
        found = get(plane, "vm", "bad-size", "-n", NAMESPACE)
        return found if condition(found, "Scheduled") is not None else None

    bad_vm = eventually(refused_vm, timeout=30, what="bad-size refused")
    assert bad_vm["status"]["phase"] == "Failed"
    assert condition(bad_vm, "Scheduled") == (
        "False",
        "InvalidSpec",
        "the controller cannot read this VM: spec.memory.size: '1e999999999.0' must be a "
        "size such as 512Mi or 2Gi: a number with an optional suffix (Ki, Mi, Gi, Ti, Pi, "
        "Ei, k, M, G, T, P, E, or an exponent such as e9)",
    )

    # The bad objects stay; another VM is placed within a second of being stored.
    placements = Placements(plane)
    try:
        placements.wait_for("bad-size=", timeout=30)  # the watch is up
        apply(plane, vm("good", "64Mi"))
        stored = time.monotonic()
        placements.wait_for("good=h1", timeout=10)
        took = time.monotonic() - stored
    finally:
        placements.stop()
    assert took < 1.0, f"placed {took:.2f}s after it was stored"
    assert controller.running
