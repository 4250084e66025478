"""Two peered controller replicas: only the higher priority one places (kopf peering)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import REPO, ManagedProcess, eventually
from kubevisor.testbed.commands import ControllerOptions
from kubevisor.testbed.controlplane import free_ports
from stacks import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]


def sample(url: str, name: str, **labels: str) -> float:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.split("{")[0] == name and all(w in line for w in wanted)
    )


def serving(url: str) -> bool:
    try:
        sample(url, "kubevisor_build_info")
    except OSError:
        return False
    return True


@pytest.fixture
def replicas(stack: Stack, tmp_path: Path) -> Iterator[dict[int, tuple[ManagedProcess, str]]]:
    """The stack's standalone controller swapped for two peered replicas (priority 100, 200)."""
    stack.kubectl("apply", "-f", str(REPO / "deploy/manifests/crds/kopf-peering.yaml"))
    stack.kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev")
    stack.kubectl("apply", "-f", str(REPO / "deploy/manifests/kopf/peering.yaml"))
    stack.controller.stop()
    ports = free_ports(2)
    started: dict[int, tuple[ManagedProcess, str]] = {}
    for priority, port in zip((100, 200), ports, strict=True):
        process = ManagedProcess(
            ControllerOptions(
                stack.plane.kubeconfig,
                standalone=False,
                peering="kubevisor",
                priority=priority,
                metrics_port=port,
            ).argv(),
            log=tmp_path / f"controller-{priority}.log",
        ).start()
        started[priority] = (process, f"http://127.0.0.1:{port}/metrics")
    try:
        yield started
    finally:
        for process, _ in started.values():
            process.stop()
        stack.controller.start()


def paused(log: str) -> bool:
    """Whether a replica's kopf log leaves it paused: never resumed, or paused since."""
    return log.rfind("Resuming operations") <= log.rfind("Pausing operations")


def test_only_the_highest_priority_replica_places(
    stack: Stack, namespace: str, replicas: dict[int, tuple[ManagedProcess, str]]
) -> None:
    low, high = replicas[100][1], replicas[200][1]
    eventually(lambda: serving(high) and serving(low), what="both replicas serving metrics")
    # kopf starts every replica paused; a replica resumes once the peering record shows no
    # live peer of higher priority. Wait until the record lists both replicas and the
    # higher one has resumed; the lower one then stays paused (kopf logs nothing for that).
    eventually(
        lambda: len((stack.get("clusterkopfpeering", "kubevisor") or {}).get("status") or {}) >= 2,
        timeout=60,
        what="both replicas in the peering record",
    )
    eventually(
        lambda: "Resuming operations" in replicas[200][0].tail(100_000),
        timeout=60,
        what="the higher-priority replica to resume",
    )
    # A lower replica that started first saw no peer and resumed; it must have paused since.
    eventually(
        lambda: paused(replicas[100][0].tail(100_000)),
        timeout=60,
        what="the lower-priority replica paused (or never resumed)",
    )
    stack.apply(
        namespace,
        *(
            {
                "apiVersion": "kubevisor.io/v1alpha1",
                "kind": "VirtualMachine",
                "metadata": {"name": f"peer-{i}"},
                "spec": {"memory": {"size": "128Mi"}},
            }
            for i in range(4)
        ),
    )
    eventually(
        lambda: (
            Counter(stack.phase(namespace, f"peer-{i}") for i in range(4)) == Counter(Running=4)
        ),
        timeout=180,
        what="4 Running under peered replicas",
    )
    assert sample(high, "kubevisor_placement_decisions_total", result="placed") >= 4
    assert sample(low, "kubevisor_placement_decisions_total") == 0
    events = stack.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "reason=Scheduled",
        "-o",
        "jsonpath={.items[*].involvedObject.name}",
    )
    assert Counter(events.stdout.split()) == Counter({f"peer-{i}": 1 for i in range(4)})
