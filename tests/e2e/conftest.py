"""The whole stack for end-to-end tests: a real control plane, the controller, and one
agent per real libvirtd host (two hosts), each a separate process like in production."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import ManagedProcess, eventually, require
from kubevisor.core import migration
from kubevisor.core.domain.host import Ovmf
from kubevisor.testbed.controlplane import ControlPlane, free_ports
from kubevisor.testbed.guest import Guest
from kubevisor.testbed.hosts import LocalHost
from stacks import ExtraHost, host_ready


@dataclass
class Stack:
    plane: ControlPlane
    hosts: list[LocalHost]
    controller: ManagedProcess
    agents: dict[str, ManagedProcess]
    state_dirs: dict[str, Path]
    metrics_ports: dict[str, int]
    """Prometheus port per process: "controller" and each host name (its agent)."""

    def scrape(self, process: str) -> dict[str, float]:
        """Every sample of a process's /metrics, keyed by `name{labels}` as exposed."""
        url = f"http://127.0.0.1:{self.metrics_ports[process]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                samples[key] = float(value)
        return samples

    def kubectl(self, *args: str, **kwargs: Any) -> Any:
        return self.plane.kubectl(*args, **kwargs)

    def apply(self, namespace: str, *manifests: dict[str, Any]) -> None:
        for manifest in manifests:
            manifest.setdefault("metadata", {})["namespace"] = namespace
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))

    def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        args = ["get", kind, name, "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        done = self.kubectl(*args, check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def vms(self, namespace: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "vm", "-n", namespace, "-o", "json").stdout
        return list(json.loads(out)["items"])

    def phase(self, namespace: str, name: str) -> str | None:
        vm = self.get("vm", name, namespace)
        return None if vm is None else (vm.get("status") or {}).get("phase")

    def wait_phase(self, namespace: str, name: str, phase: str, timeout: float = 90) -> Any:
        return eventually(
            lambda: (
                self.get("vm", name, namespace) if self.phase(namespace, name) == phase else None
            ),
            timeout=timeout,
            what=f"vm {namespace}/{name} to be {phase} (is {self.phase(namespace, name)})",
        )

    def start_migration(self, namespace: str, name: str, vm: str, **spec: Any) -> None:
        """Apply MigrationJob `name` for `vm` (spec fields in camelCase, e.g. targetHost)."""
        job = {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "MigrationJob",
            "metadata": {"name": name},
            "spec": {"vm": vm, **spec},
        }
        self.apply(namespace, job)

    def wait_migration(self, namespace: str, name: str, timeout: float = 120) -> Any:
        """MigrationJob `name` once it has ended (Succeeded, Failed or Cancelled)."""

        def ended() -> Any:
            job = self.get("migrationjob", name, namespace)
            phase = ((job or {}).get("status") or {}).get("phase")
            return job if phase in migration.TERMINAL else None

        return eventually(ended, timeout=timeout, what=f"MigrationJob {name} to end")

    def virsh(self, host: str, *args: str, check: bool = True) -> str:
        import subprocess

        uri = next(h.uri for h in self.hosts if h.name == host)
        done = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True)
        if check and done.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)} on {host}: {done.stderr}")
        return done.stdout.strip()

    def domains(self, host: str) -> list[str]:
        """UUIDs of every domain (running or not) on `host`."""
        return self.virsh(host, "list", "--all", "--uuid").split()


def agent_process(
    plane: ControlPlane, host: LocalHost, guest: Guest, state: Path, metrics_port: int
) -> ManagedProcess:
    return ManagedProcess(
        [
            sys.executable,
            "-m",
            "kubevisor.agent.main",
            "--host",
            host.name,
            "--libvirt-uri",
            host.uri,
            "--kubeconfig",
            str(plane.kubeconfig),
            "--domain-type",
            "qemu",
            "--state-dir",
            str(state),
            "--image-dir",
            str(state / "images"),
            "--guest-kernel",
            str(guest.kernel),
            "--guest-initrd",
            str(guest.initrd),
            "--guest-cmdline",
            guest.cmdline,
            "--shutdown-grace",
            "15",
            "--lease-duration",
            "8",
            "--metrics-port",
            str(metrics_port),
            # The hosts leave migration_host unset: QEMU streams go to 127.0.0.1.
            "--migrate-uri",
            "tcp://127.0.0.1",
            # The testbed's libvirt runs without cgroups (qemu.conf cgroup_controllers = []).
            "--cgroup-controllers",
            "",
            "--qemu-conf",
            str(host.root / "etc" / "qemu.conf"),
            # The tests serve images on 127.0.0.1, which an agent refuses by default.
            "--image-source-allow",
            "127.0.0.0/8",
        ],
        log=state / "agent.log",
    )


@pytest.fixture(scope="session")
def stack(
    control_plane: ControlPlane,
    local_hosts: list[LocalHost],
    tiny_guest: Guest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    control_plane.kubectl("create", "namespace", "kubevisor-system", check=False)
    root = tmp_path_factory.mktemp("stack")
    ports = free_ports(1 + len(local_hosts))
    controller = ManagedProcess(
        [
            sys.executable,
            "-m",
            "kubevisor.handlers.main",
            "--kubeconfig",
            str(control_plane.kubeconfig),
            "--standalone",
            "--metrics-port",
            str(ports[0]),
            # Lost hosts' VMs move after 20 s; long enough that an agent restarted by a test
            # is back first (agents renew an 8 s Lease).
            "--failover-grace",
            "20",
        ],
        log=root / "controller.log",
    ).start()
    agents: dict[str, ManagedProcess] = {}
    states: dict[str, Path] = {}
    metrics = {"controller": ports[0]}
    for host, port in zip(local_hosts, ports[1:], strict=True):
        states[host.name] = root / host.name
        states[host.name].mkdir()
        agents[host.name] = agent_process(control_plane, host, tiny_guest, states[host.name], port)
        agents[host.name].start()
        metrics[host.name] = port
    stack = Stack(control_plane, local_hosts, controller, agents, states, metrics)
    try:
        for host in local_hosts:
            eventually(
                lambda h=host.name: host_ready(stack, h), timeout=60, what=f"host {host.name} Ready"
            )
        yield stack
    finally:
        for process in [controller, *agents.values()]:
            process.stop()
        for name, process in [("controller", controller), *agents.items()]:
            sys.stderr.write(f"\n--- {name} log (tail) ---\n{process.tail()}")


@pytest.fixture
def extra_host(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExtraHost]:
    """A third host, Ready. Ask for it before `namespace`, so the namespace's VMs are
    deleted while its agent still runs."""
    extra = ExtraHost(stack, tmp_path_factory.mktemp("extra-host"))
    try:
        yield extra.start()
    finally:
        extra.remove()


@pytest.fixture
def namespace(stack: Stack, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace per test; its VMs are deleted (and waited for) afterwards."""
    name = "e2e-" + request.node.name.replace("_", "-").lower()[:40].strip("-")
    stack.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        stack.kubectl(
            "delete", "vm", "--all", "-n", name, "--wait=true", "--timeout=120s", check=False
        )
        stack.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def ovmf() -> Ovmf:
    """Debian's OVMF, which a VM with UEFI firmware needs on the QEMU hosts."""
    firmware = Ovmf()
    require(
        Path(firmware.code).is_file() and Path(firmware.vars_template).is_file(),
        what=f"OVMF firmware ({firmware.code}, {firmware.vars_template})",
        how="apt-get install ovmf (or run hack/setup.sh)",
    )
    return firmware
